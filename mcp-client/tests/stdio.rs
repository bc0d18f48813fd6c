//! stdio end to end: this client, and the CLI's `--stdio` mode, against the
//! real `mcp-server` library serving stdio in a child process.
//!
//! The child is this test binary itself, started with `--serve-stdio`:
//! `cargo test -p mcp-client` does not build the server's binary, and only
//! the server's own tests can name it. So this file has its own `main`
//! (`harness = false` in Cargo.toml): libtest would print to stdout, which
//! is the server's channel in the child. Test names given on the command
//! line filter as with libtest (`--exact`, `--skip NAME`, `--list` too).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, ExitCode, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{Client, ClientOptions, Error, ProtocolMode, RequestOptions};
use mcp_server::{McpServer, demo, tool};
use serde_json::{Map, Value, json};
use session_core::wire::{CallToolResult, ErrorObject};
use session_store::MemoryStore;

/// The argument that makes this binary a stdio server.
const SERVE: &str = "--serve-stdio";

/// The CLI under test.
const CLI: &str = env!("CARGO_BIN_EXE_mcp-client");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVE) {
        return serve(args.get(1).map(PathBuf::from));
    }
    run_tests(&args)
}

/// Serves the demo tools and two more over stdio until stdin closes; then
/// writes `marker`, if given, to show the process ended by itself.
fn serve(marker: Option<PathBuf>) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let server = demo::register(McpServer::builder().store(Arc::new(MemoryStore::new())))
        .tool(
            tool(
                "times_out",
                "Fails with -32001, as the TypeScript SDK's RequestTimeout.",
                json!({"type": "object"}),
            ),
            |_ctx, _args| async {
                Err::<CallToolResult, _>(ErrorObject::new(-32001, "Request timed out"))
            },
        )
        .tool(
            tool(
                "exit",
                "Ends the server process at once.",
                json!({"type": "object"}),
            ),
            |_ctx, _args| async { std::process::exit(3) },
        )
        .tool(
            tool("pid", "The server's process id.", json!({"type": "object"})),
            |_ctx, _args| async { Ok(CallToolResult::text(std::process::id().to_string())) },
        )
        .build();
    let served = runtime.block_on(server.serve_stdio());
    if let Some(marker) = marker {
        let _ = std::fs::write(marker, "exited after stdin closed");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The command that starts this binary as a stdio server.
fn server_command(marker: Option<&std::path::Path>) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut words = vec![exe.display().to_string(), SERVE.to_string()];
    words.extend(marker.map(|m| m.display().to_string()));
    shell_words::join(words)
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .protocol(ProtocolMode::Legacy)
        .client_info("stdio-test", "1.0")
        .connect_timeout(Duration::from_secs(10))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stdio_end_to_end() {
    let client = Client::connect_stdio(&server_command(None), options())
        .await
        .unwrap();
    assert_eq!(client.session_id(), None, "stdio has no session ids");
    let details = client.server().unwrap();
    assert_eq!(details.protocol_version, "2025-11-25");
    assert_eq!(details.server_info.name, "mcp-server");
    let tools = client.list_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "counter"), "{tools:?}");

    // The process is one session: its state lasts from call to call.
    for expected in [2, 4] {
        let counted = client.call_tool("counter", json!({"by": 2})).await.unwrap();
        assert_eq!(
            counted.structured_content,
            Some(json!({"counter": expected}))
        );
    }
    let mut patch = Map::new();
    patch.insert("lastTool".into(), json!("counter"));
    client.update_session_state(patch).await.unwrap();
    let state = client.session_state().await.unwrap().state;
    assert_eq!(state["counter"], 4);
    assert_eq!(state["lastTool"], "counter");

    // Progress arrives over stdio too.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client
        .call_tool_with(
            "slow",
            json!({"steps": 3, "delay_ms": 1}),
            RequestOptions::default().on_progress(move |p, _, _| sink.lock().unwrap().push(p)),
        )
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), [1.0, 2.0, 3.0]);

    // A timeout, then the client goes on.
    let outcome = client
        .call_tool_with(
            "slow",
            json!({"steps": 100, "delay_ms": 20}),
            RequestOptions::default().timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    client.ping().await.unwrap();

    // The server's -32001 is its answer.
    let outcome = client.call_tool("times_out", json!({})).await;
    assert!(
        matches!(outcome, Err(Error::Rpc { ref error, .. }) if error.code == -32001),
        "{outcome:?}"
    );

    // Closing stdin is enough: no SIGTERM wait.
    let started = Instant::now();
    client.close().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn a_stdio_server_that_exits_fails_requests_with_a_transport_error() {
    let client = Client::connect_stdio(
        &server_command(None),
        options().request_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let outcome = client.call_tool("exit", json!({})).await;
    assert!(
        matches!(outcome, Err(Error::Transport { ref message, .. }) if message.contains("exited")),
        "{outcome:?}"
    );
    let outcome = client.ping().await;
    assert!(
        matches!(outcome, Err(Error::Transport { .. })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at once, not by the 20 s timeout"
    );
    client.close().await.unwrap();
}

async fn dropping_a_stdio_client_lets_the_server_exit_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("exited");
    let client = Client::connect_stdio(&server_command(Some(&marker)), options())
        .await
        .unwrap();
    client.ping().await.unwrap();
    drop(client);
    // Stdin closed, not SIGKILL: the server finished and left its marker.
    eventually("the server to exit by itself", || marker.exists()).await;
}

/// Runs the CLI off the async runtime's threads.
async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(CLI).args(&args).output().unwrap())
        .await
        .unwrap()
}

async fn the_cli_speaks_stdio() {
    let stdio = |extra: &[&str]| {
        let mut args = vec!["--stdio".to_string(), server_command(None)];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let called = cli(stdio(&["call", "counter", "--args", r#"{"by":2}"#])).await;
    let stderr = String::from_utf8_lossy(&called.stderr);
    assert!(called.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&called.stdout).unwrap();
    assert_eq!(result["structuredContent"]["counter"], 2);
    assert!(
        !stderr.contains("session: "),
        "stdio has no session id: {stderr}"
    );

    let tools = cli(stdio(&["tools"])).await;
    assert!(tools.status.success());
    let tools: Value = serde_json::from_slice(&tools.stdout).unwrap();
    assert!(
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "slow")
    );

    let failed = cli(stdio(&["call", "times_out"])).await;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("Request timed out"), "{stderr}");
}

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|| Box::pin($name()) as Pin<Box<dyn Future<Output = ()>>>) as Test)),*]
    };
}

/// In `auto` over stdio the client lands in 2026-07-28 (the server answers
/// `server/discover`), calls a tool and follows a task, with no session.
async fn auto_lands_in_2026_07_28_over_stdio() {
    let options = ClientOptions::default()
        .client_info("stdio-test", "1.0")
        .connect_timeout(Duration::from_secs(10));
    let client = Client::connect_stdio(&server_command(None), options)
        .await
        .unwrap();
    assert_eq!(client.protocol_version().as_deref(), Some("2026-07-28"));
    assert_eq!(client.session_id(), None);
    let echoed = client
        .call_tool("echo", json!({"text": "x"}))
        .await
        .unwrap();
    assert_eq!(echoed, CallToolResult::text("x"));
    let slow = client
        .call_tool("slow", json!({"steps": 2, "delay_ms": 5}))
        .await
        .unwrap();
    assert_eq!(slow, CallToolResult::text("completed 2 steps"));
    client.close().await.unwrap();
}

/// Runs the tests the arguments select, each on a runtime of its own.
fn run_tests(args: &[String]) -> ExitCode {
    let all = tests![
        stdio_end_to_end,
        a_stdio_server_that_exits_fails_requests_with_a_transport_error,
        dropping_a_stdio_client_lets_the_server_exit_by_itself,
        the_cli_speaks_stdio,
        auto_lands_in_2026_07_28_over_stdio,
    ];
    let (mut filters, mut skips, mut exact, mut list) = (Vec::new(), Vec::new(), false, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--skip" => skips.extend(args.next().cloned()),
            // Options with a value that this runner ignores.
            "--test-threads" | "--logfile" | "--format" | "--color" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let matches = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    let selected: Vec<_> = all
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(test());
        }));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {verdict}");
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    let result = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {result}. {} passed; {} failed",
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
