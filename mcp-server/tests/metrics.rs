//! `GET /metrics` on a real server over HTTP: what the Prometheus text says
//! after real requests in both eras, on file stores in a real directory;
//! the cap, expiry and DELETE counted; unknown methods kept out of the
//! labels; metrics off; the binary's `--metrics-listen`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Modern, TestServer};
use mcp_server::{HttpConfig, McpServer, ServerConfig, demo};
use serde_json::json;
use session_core::SessionStore;
use session_store::{FileEventStore, FileStore};

/// The metrics text of `server`, checking the answer's type.
async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        common::content_type(&response).starts_with("application/openmetrics-text"),
        "{}",
        common::content_type(&response)
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "a whole exposition");
    text
}

/// The value of the sample `name{labels}` (labels as written, in order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sessions_tasks_stores_and_connections_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = |sub: &str| -> Arc<dyn SessionStore> {
        Arc::new(FileStore::open(dir.path().join(sub)).unwrap())
    };
    let events = Arc::new(FileEventStore::open(dir.path().join("events"), 64, 16).unwrap());
    let builder = demo::register(McpServer::builder())
        .store(file("sessions"))
        .handle_store(file("handles"))
        .task_store(file("tasks"))
        .event_store(events);
    let server =
        TestServer::start_with(builder, ServerConfig::default(), HttpConfig::default()).await;

    // Legacy: a session, a call, its end.
    let mut legacy = Client::new(&server.url);
    legacy.connect().await;
    legacy.tool("counter", json!({"by": 2})).await;
    let session = legacy.session.clone().unwrap();
    let deleted = reqwest::Client::new()
        .delete(&server.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    // Modern: a call, a task to its end, a method nobody knows.
    let mut modern = Modern::new(&server.url);
    modern.capabilities = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    modern.tool("echo", json!({"text": "hi"})).await;
    let created = modern
        .call(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 1, "delay_ms": 1}}),
        )
        .await;
    let task = created.result()["taskId"].as_str().unwrap().to_string();
    common::eventually("the task ends", || {
        let modern = modern.clone();
        let task = task.clone();
        async move {
            let got = modern.call("tasks/get", json!({"taskId": task})).await;
            got.result()["status"] == "completed"
        }
    })
    .await;
    modern.call("no/such-method", json!({})).await;

    let text = scrape(&server).await;
    let at =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        at(r#"mcp_requests_total{era="legacy",method="initialize",status="200"}"#),
        1.0
    );
    assert_eq!(
        at(r#"mcp_requests_total{era="legacy",method="tools/call",status="200"}"#),
        1.0
    );
    assert_eq!(
        at(r#"mcp_requests_total{era="legacy",method="DELETE",status="200"}"#),
        1.0
    );
    assert_eq!(
        at(r#"mcp_requests_total{era="modern",method="tools/call",status="200"}"#),
        2.0
    );
    assert!(at(r#"mcp_requests_total{era="modern",method="tasks/get",status="200"}"#) >= 1.0);
    // An unknown method is `other`: a client cannot grow the label set.
    assert!(at(r#"mcp_requests_total{era="modern",method="other",status="404"}"#) >= 1.0);
    assert!(!text.contains("no/such-method"));
    assert_eq!(
        at(r#"mcp_request_duration_seconds_count{era="modern",method="tools/call"}"#),
        2.0
    );
    assert_eq!(at(r#"mcp_sessions_total{kind="created"}"#), 1.0);
    assert_eq!(at(r#"mcp_sessions_total{kind="closed"}"#), 1.0);
    assert_eq!(
        at(r#"mcp_task_status_changes_total{status="working"}"#),
        1.0
    );
    assert_eq!(
        at(r#"mcp_task_status_changes_total{status="completed"}"#),
        1.0
    );
    assert!(
        at(
            r#"mcp_store_operation_duration_seconds_count{store="sessions",backend="file",operation="insert"}"#
        ) >= 1.0
    );
    assert!(
        at(
            r#"mcp_store_operation_duration_seconds_count{store="events",backend="file",operation="append"}"#
        ) >= 1.0
    );
    assert_eq!(at(r#"mcp_live{kind="sessions"}"#), 0.0, "the session ended");
    assert!(at("mcp_open_connections") >= 1.0, "this scrape's own");
    assert_eq!(at("mcp_sse_streams"), 0.0);
    // The file stores' group commit: every batch synced.
    let batches = at(r#"mcp_file_store_commit_batch_size_count{store="sessions"}"#);
    assert!(batches >= 2.0, "{batches}");
    assert_eq!(
        at(r#"mcp_file_store_fsync_duration_seconds_count{store="sessions"}"#),
        batches
    );
    assert_eq!(
        at(r#"mcp_file_store_commit_batch_size_bucket{le="+Inf",store="sessions"}"#),
        batches
    );
    assert!(at(r#"mcp_file_store_fsync_duration_seconds_sum{store="tasks"}"#) > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refused_at_the_cap_and_expired_are_counted() {
    let config = ServerConfig::default()
        .max_sessions(Some(1))
        .idle_timeout(Duration::from_millis(200))
        .sweep_interval(Duration::from_millis(20));
    let server = TestServer::start(config).await;
    let mut first = Client::new(&server.url);
    first.connect().await;
    let mut second = Client::new(&server.url);
    let refused = second
        .post(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    second.session = None;
    common::eventually("the idle session is swept", || {
        let server = &server;
        async move {
            let text = scrape(server).await;
            sample(&text, r#"mcp_sessions_total{kind="expired"}"#) == Some(1.0)
        }
    })
    .await;
    let text = scrape(&server).await;
    assert_eq!(
        sample(&text, r#"mcp_sessions_total{kind="rejected"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"mcp_requests_total{era="legacy",method="initialize",status="503"}"#
        ),
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_off_nothing_is_served() {
    let mut config = ServerConfig::default();
    config.metrics = false;
    let server = TestServer::start(config).await;
    let response = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(server.server.metrics_text().await, None);
    server.stop().await;
}

#[tokio::test]
async fn the_binary_serves_metrics_on_a_port_of_their_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let server = common::start(&[
        "--store",
        "memory",
        "--metrics-path",
        "none",
        "--metrics-listen",
        &metrics,
    ]);
    let main = server.url.replace("/mcp", "/metrics");
    assert_eq!(reqwest::get(&main).await.unwrap().status(), 404);
    let mut client = Client::new(&server.url);
    client.connect().await;
    let text = common_text(&format!("http://{metrics}/metrics")).await;
    assert_eq!(
        sample(
            &text,
            r#"mcp_requests_total{era="legacy",method="initialize",status="200"}"#
        ),
        Some(1.0)
    );
    let other = reqwest::get(format!("http://{metrics}/mcp")).await.unwrap();
    assert_eq!(other.status(), 404);
}

async fn common_text(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}
