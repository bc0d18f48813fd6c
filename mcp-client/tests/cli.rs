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
