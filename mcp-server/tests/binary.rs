//! The `mcp-server` binary as a user runs it: a session survives `kill -9`
//! and a restart on the file store; the stdio transport; bad options.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Client, start};
use serde_json::{Value, json};

#[tokio::test]
async fn a_session_survives_kill_9_and_restart_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().display());
    let (session, url) = {
        let server = start(&["--store", &store]);
        let mut client = Client::new(&server.url);
        client.connect().await;
        client.tool("counter", json!({"by": 3})).await;
        let r = client
            .call(
                "session/update",
                json!({"state": {"lastTool": "list_nodes"}}),
            )
            .await;
        assert_eq!(r["result"]["state"]["counter"], 3);
        (client.session.clone().unwrap(), server.url.clone())
        // dropped here: SIGKILL, no chance to flush anything
    };
    let _ = url;
    let server = start(&["--store", &store]);
    let mut client = Client::new(&server.url);
    client.session = Some(session.clone());
    let r = client.tool("counter", json!({})).await;
    assert_eq!(
        r["structuredContent"]["counter"], 4,
        "the counter continued"
    );
    let state = client.call("session/get", json!({})).await;
    assert_eq!(state["result"]["sessionId"], session);
    assert_eq!(state["result"]["state"]["lastTool"], "list_nodes");
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish_then_exits_cleanly() {
    let mut server = start(&["--store", "memory"]);
    let mut client = Client::new(&server.url);
    client.connect().await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call(
                    "tools/call",
                    json!({"name": "slow", "arguments": {"steps": 4, "delay_ms": 100},
                        "_meta": {"progressToken": "t"}}),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Shutting down: a new client is turned away (the listener is closed,
    // or a request that slipped in gets 503) while the slow call finishes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = Client::new(&server.url);
    let refused = match late
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "late", "version": "1"}}}))
        .send()
        .await
    {
        Err(e) => e.is_connect() || e.is_request(),
        Ok(response) => response.status() == 503,
    };
    assert!(refused, "a new session was accepted during shutdown");
    let answer = slow.await.unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], "completed 4 steps",
        "{answer}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn stdio_serves_newline_delimited_json_rpc_until_stdin_closes() {
    let mut child = Command::new(BIN)
        .args(["--stdio", "--store", "memory"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut exchange = |message: Value| -> Option<Value> {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        message.get("id")?;
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        Some(serde_json::from_str(&line).unwrap())
    };
    let early = exchange(json!({"jsonrpc": "2.0", "id": 0, "method": "tools/list"})).unwrap();
    assert_eq!(
        early["error"]["code"], -32600,
        "requests before initialize are refused"
    );
    let init = exchange(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
    .unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    exchange(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let echo = exchange(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "over stdio"}}}))
    .unwrap();
    assert_eq!(echo["result"]["content"][0]["text"], "over stdio");
    let count = exchange(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"by": 2}}}))
    .unwrap();
    assert_eq!(count["result"]["structuredContent"]["counter"], 2);
    let bad = {
        writeln!(stdin, "{{not json").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    assert_eq!(bad["error"]["code"], -32700);
    drop(stdin);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "exits cleanly on stdin EOF");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.is_empty(), "nothing but messages on stdout: {rest:?}");
}

#[test]
fn an_unknown_store_is_refused_with_a_clear_message() {
    let output = Command::new(BIN)
        .args(["--store", "ftp://nowhere", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected `memory`, `file:DIR`"), "{stderr}");
}

#[tokio::test]
async fn a_stream_resumes_with_last_event_id_after_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().display());
    let (session, first, before) = {
        let server = start(&["--store", &store]);
        let mut client = Client::new(&server.url);
        client.connect().await;
        let response = client
            .post(
                &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
                "name": "slow", "arguments": {"steps": 3, "delay_ms": 1},
                "_meta": {"progressToken": "p"}}}),
            )
            .send()
            .await
            .unwrap();
        let events = common::read_sse(response, usize::MAX).await;
        // The priming event, three progress notifications, the response.
        assert_eq!(events.len(), 5, "{events:?}");
        let first = events[1].id.clone().unwrap();
        (client.session.clone().unwrap(), first, events)
        // dropped here: SIGKILL
    };
    let server = start(&["--store", &store]);
    let mut client = Client::new(&server.url);
    client.session = Some(session.clone());
    let resumed = client
        .http
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let replayed = tokio::time::timeout(
        Duration::from_secs(10),
        common::read_sse(resumed, usize::MAX),
    )
    .await
    .expect("the replayed stream ends with its response");
    let ids: Vec<_> = replayed.iter().map(|e| e.id.clone().unwrap()).collect();
    let expected: Vec<_> = before[2..].iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, expected, "the events after {first}, as first sent");
    let last: Value = serde_json::from_str(&replayed.last().unwrap().data).unwrap();
    assert_eq!(last["id"], 5);
    assert_eq!(last["result"]["content"][0]["text"], "completed 3 steps");
}

#[tokio::test]
async fn a_counter_handle_survives_kill_9_and_restart_on_the_file_store() {
    // No demo tool asks for input, so the request-state key (which lives in
    // the same handle store) cannot be exercised through the binary.
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().display());
    let (id, other) = {
        let server = start(&["--store", &store]);
        let client = common::Modern::new(&server.url);
        let first = client.tool("counter", json!({"by": 3})).await;
        let id = first["structuredContent"]["counter_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a modern call mints a handle: {first}"))
            .to_string();
        assert!(id.starts_with("ctr_") && id.len() == 36, "{id}");
        let next = client
            .tool("counter", json!({"by": 4, "counter_id": id}))
            .await;
        assert_eq!(next["structuredContent"]["counter"], 7);
        let other =
            client.tool("counter", json!({"by": 100})).await["structuredContent"]["counter_id"]
                .as_str()
                .unwrap()
                .to_string();
        (id, other)
        // dropped here: SIGKILL, right after the last acknowledged write
    };
    assert!(
        dir.path().join("handles").is_dir(),
        "handles live in <dir>/handles"
    );
    let server = start(&["--store", &store]);
    let client = common::Modern::new(&server.url);
    let continued = client.tool("counter", json!({"counter_id": id})).await;
    assert_eq!(
        continued["structuredContent"],
        json!({"counter": 8, "counter_id": id}),
        "the counter continued after the restart"
    );
    let untouched = client
        .tool("counter", json!({"by": 0, "counter_id": other}))
        .await;
    assert_eq!(untouched["structuredContent"]["counter"], 100);
    // A legacy session of the restarted process counts in it too.
    let mut legacy = Client::new(&server.url);
    legacy.connect().await;
    let in_session = legacy
        .tool("counter", json!({"by": 2, "counter_id": id}))
        .await;
    assert_eq!(in_session["structuredContent"]["counter"], 10);
    // A fresh counter is a new handle.
    let fresh = client.tool("counter", json!({})).await;
    assert_eq!(fresh["structuredContent"]["counter"], 1);
    assert_ne!(fresh["structuredContent"]["counter_id"], json!(id));
    assert_ne!(fresh["structuredContent"]["counter_id"], json!(other));
}

#[test]
fn a_non_loopback_address_is_refused_without_authentication_unless_allowed() {
    let refused = Command::new(BIN)
        .args(["--listen", "0.0.0.0:0", "--store", "memory"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
    // Allowed (here through the environment), the server goes on to bind:
    // an address of no interface here (TEST-NET-1) shows it got past the
    // check without opening a port anyone could reach.
    let allowed = Command::new(BIN)
        .args(["--listen", "192.0.2.1:0", "--store", "memory"])
        .env("MCP_SERVER_ALLOW_UNAUTHENTICATED", "true")
        .output()
        .unwrap();
    assert!(!allowed.status.success());
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(stderr.contains("cannot listen on 192.0.2.1:0"), "{stderr}");
}

#[tokio::test]
async fn every_option_can_come_from_the_environment() {
    let mut command = Command::new(BIN);
    command
        .env("MCP_SERVER_LISTEN", "127.0.0.1:0")
        .env("MCP_SERVER_STORE", "memory")
        .env("MCP_SERVER_HEALTH_PATH", "/alive");
    let server = common::start_command(command);
    let alive = reqwest::get(server.url.replace("/mcp", "/alive"))
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    // The command line wins over the environment.
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "MCP_SERVER_LISTEN",
        "MCP_SERVER_STORE",
        "MCP_SERVER_TASK_LEASE",
    ] {
        assert!(help.contains(variable), "--help names {variable}");
    }
    let both = Command::new(BIN)
        .args(["--store", "nonsense"])
        .env("MCP_SERVER_STORE", "memory")
        .output()
        .unwrap();
    assert!(!both.status.success(), "the command line's bad store wins");
}

#[tokio::test]
async fn json_logs_carry_each_requests_era_method_session_and_trace_id() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let kept = all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            let parsed: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            let _ = tx.send(parsed);
        }
    });
    let next = |what: &str, check: &dyn Fn(&Value) -> bool| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no log line {what}"));
        if check(&line) {
            return line;
        }
    };
    let listening = next("listening", &|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on "))
    });
    let url = listening["fields"]["message"].as_str().unwrap()["listening on ".len()..].to_string();

    // A modern call with trace context in `_meta`, and a secret argument.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "secret-argument"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "traceparent": format!("00-{trace}-00f067aa0ba902b7-01")}}});
    let answered = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("authorization", "Bearer secret-token")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let line = next("of the modern call", &|l| {
        l["span"]["method"] == "tools/call"
    });
    assert_eq!(line["span"]["era"], "modern");
    assert_eq!(line["span"]["trace_id"], trace);
    assert_eq!(line["span"]["parent_span_id"], "00f067aa0ba902b7");
    // The trace context may come from the HTTP header instead.
    let mut legacy = common::Client::new(&url);
    legacy.connect().await;
    let session = legacy.session.clone().unwrap();
    let header_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    legacy
        .post(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "counter", "arguments": {"by": 7}}}))
        .header(
            "traceparent",
            format!("00-{header_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .unwrap();
    let line = next("of the legacy call", &|l| {
        l["span"]["method"] == "tools/call" && l["span"]["era"] == "legacy"
    });
    assert_eq!(line["span"]["session"], session.as_str());
    assert_eq!(line["span"]["trace_id"], header_trace);
    let _ = child.kill();
    let _ = child.wait();
    // Nothing the client sent as a secret was written.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        let text = line.to_string();
        assert!(
            !text.contains("secret-token") && !text.contains("secret-argument"),
            "{text}"
        );
    }
}

#[test]
fn authorization_options_without_their_mode_are_refused() {
    for args in [
        vec!["--issuer", "https://login.example.com"],
        vec!["--scope", "mcp:tools"],
        vec!["--client-id", "mcp-server"],
        vec![
            "--auth",
            "jwt",
            "--client-id",
            "mcp-server",
            "--issuer",
            "https://login.example.com",
            "--audience",
            "https://mcp.example.com/mcp",
        ],
    ] {
        let output = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--store", "memory"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("take effect only with"),
            "{args:?}: {stderr}"
        );
    }
}
