//! The `mcp-client` binary as a user runs it: a call, then the same session
//! continued from a new process with `--session-id`; clear failures; tool
//! errors; arguments checked before connecting.

mod common;

use std::process::{Command, Output};

use common::{Store, start};
use mcp_server::ServerConfig;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-client");

/// Runs the CLI off the async runtime's threads, in the legacy era unless
/// `args` name a `--protocol` (these tests are about sessions).
async fn cli(mut args: Vec<String>) -> Output {
    if !args.iter().any(|a| a == "--protocol") {
        args.splice(0..0, ["--protocol".to_string(), "legacy".to_string()]);
    }
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn session_of(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("session: "))
        .unwrap_or_else(|| panic!("no session line in {stderr}"))
        .to_string()
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_continued_from_a_new_process_with_session_id() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let url = server.url.clone();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["--url".to_string(), url.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let first = cli(args(&["call", "counter", "--args", r#"{"by":1}"#])).await;
    assert_eq!(json_of(&first)["structuredContent"]["counter"], 1);
    let session = session_of(&first);

    let second = cli(args(&[
        "--session-id",
        &session,
        "call",
        "counter",
        "--args",
        r#"{"by":1}"#,
    ]))
    .await;
    assert_eq!(json_of(&second)["structuredContent"]["counter"], 2);
    assert_eq!(session_of(&second), session, "the same session");

    let set = cli(args(&[
        "--session-id",
        &session,
        "state",
        "set",
        r#"{"lastTool":"list_nodes"}"#,
    ]))
    .await;
    assert_eq!(json_of(&set)["state"]["counter"], 2);
    let state = cli(args(&["--session-id", &session, "state"])).await;
    assert_eq!(json_of(&state)["state"]["lastTool"], "list_nodes");

    let closed = cli(args(&["--session-id", &session, "close"])).await;
    assert!(closed.status.success());
    let after = cli(args(&["--session-id", &session, "ping"])).await;
    assert!(
        after.status.success(),
        "a closed session is replaced by a new one"
    );
    let stderr = String::from_utf8_lossy(&after.stderr);
    assert!(
        stderr.contains("is gone; continuing in new session"),
        "{stderr}"
    );
    assert_ne!(session_of(&after), session);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_non_zero_with_a_clear_message() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let url = server.url.clone();
    let cases = [
        (
            vec!["--url", &url, "call", "counter", "--args", "not json"],
            "--args is not valid JSON",
        ),
        (
            vec!["--url", &url, "call", "counter", "--args", "[1]"],
            "--args must be a JSON object",
        ),
        (
            vec!["--url", &url, "call", "no-such-tool"],
            "Unknown tool: no-such-tool",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/mcp", "ping"],
            "POST to http://127.0.0.1:1/mcp failed",
        ),
    ];
    for (args, expected) in cases {
        let output = cli(args.iter().map(|s| s.to_string()).collect()).await;
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing on stdout on failure");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_refused_before_any_session_is_created() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let url = server.url.clone();
    let cases = [
        vec!["--url", &url, "call", "counter", "--args", "{oops"],
        vec!["--url", &url, "call", "counter", "--args", "[1]"],
        vec!["--url", &url, "state", "set", "not json"],
        vec!["--url", &url, "state", "set", "42"],
    ];
    for args in cases {
        let output = cli(args.iter().map(|s| s.to_string()).collect()).await;
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("session: "), "{args:?}: {stderr}");
    }
    assert_eq!(
        server.server.sessions().count().await.unwrap(),
        0,
        "no session was created and abandoned"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_error_exits_non_zero_and_still_prints_the_result() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    // `echo` without its `text`: the tool answers with isError: true.
    let output = cli(vec![
        "--url".into(),
        server.url.clone(),
        "call".into(),
        "echo".into(),
        "--args".into(),
        "{}".into(),
    ])
    .await;
    assert!(!output.status.success(), "a tool error is a failure");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["isError"], true, "{result}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the tool reported an error"), "{stderr}");
    assert!(!session_of(&output).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_printed_when_a_command_fails_after_connecting() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let url = server.url.clone();
    let failed = cli(vec![
        "--url".into(),
        url.clone(),
        "call".into(),
        "no-such-tool".into(),
    ])
    .await;
    assert!(!failed.status.success());
    assert!(failed.stdout.is_empty());
    let session = session_of(&failed);
    // The session printed is alive and can be continued.
    let again = cli(vec![
        "--url".into(),
        url,
        "--session-id".into(),
        session.clone(),
        "call".into(),
        "counter".into(),
    ])
    .await;
    assert_eq!(json_of(&again)["structuredContent"]["counter"], 1);
    assert_eq!(session_of(&again), session);
    server.stop().await;
}

fn line_of<'a>(stderr: &'a str, prefix: &str) -> Option<&'a str> {
    stderr.lines().find_map(|l| l.strip_prefix(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modern_era_prints_its_protocol_and_tasks_are_taken_up_from_other_processes() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let url = server.url.clone();
    let run = |extra: &[&str]| {
        let mut v = vec![
            "--protocol".to_string(),
            "auto".into(),
            "--url".into(),
            url.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        cli(v)
    };
    let echoed = run(&["call", "echo", "--args", r#"{"text":"hi"}"#]).await;
    let stderr = String::from_utf8_lossy(&echoed.stderr).to_string();
    assert_eq!(json_of(&echoed)["content"][0]["text"], "hi");
    assert_eq!(
        line_of(&stderr, "protocol: "),
        Some("2026-07-28"),
        "{stderr}"
    );
    assert_eq!(line_of(&stderr, "session: "), None, "no session: {stderr}");

    // A call the server makes a task of: its id on stderr, its result on
    // stdout once it ends.
    let slow = run(&["call", "slow", "--args", r#"{"steps":2,"delay_ms":10}"#]).await;
    let stderr = String::from_utf8_lossy(&slow.stderr).to_string();
    assert_eq!(json_of(&slow)["content"][0]["text"], "completed 2 steps");
    let finished = line_of(&stderr, "task: ").expect(&stderr).to_string();
    // Another process reads it.
    let got = run(&["task", "get", &finished]).await;
    assert_eq!(json_of(&got)["status"], "completed");

    // A task left running by a process that timed out is cancelled by it;
    // another one is cancelled from a third process.
    let timed_out = run(&[
        "--timeout",
        "300ms",
        "call",
        "slow",
        "--args",
        r#"{"steps":100,"delay_ms":50}"#,
    ])
    .await;
    assert!(!timed_out.status.success());
    let stderr = String::from_utf8_lossy(&timed_out.stderr).to_string();
    assert!(stderr.contains("timed out"), "{stderr}");
    let abandoned = line_of(&stderr, "task: ").expect(&stderr).to_string();
    let got = run(&["task", "get", &abandoned]).await;
    assert_eq!(json_of(&got)["status"], "cancelled");
    let cancelled = run(&["task", "cancel", &abandoned]).await;
    assert_eq!(json_of(&cancelled)["cancelled"], abandoned.as_str());
    let unknown = run(&["task", "get", "task_00000000000000000000000000000000"]).await;
    assert!(!unknown.status.success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_protocol_is_refused_before_connecting() {
    let output = cli(vec![
        "--protocol".into(),
        "2099-01-01".into(),
        "--url".into(),
        "http://127.0.0.1:1/mcp".into(),
        "ping".into(),
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2099-01-01"), "{stderr}");
}
