//! The Streamable HTTP transport against a real server on a loopback port:
//! lifecycle, headers, errors, sessions and streams.

mod common;

use std::time::Duration;

use common::{ACCEPT_BOTH, TestServer, content_type, eventually, read_sse};
use mcp_server::ServerConfig;
use serde_json::{Value, json};

fn raw(server: &TestServer) -> reqwest::Client {
    server.client().http
}

async fn send_to(http: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    http.post(url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn initialize_issues_a_visible_ascii_session_id_and_negotiates_the_version() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.version = "2025-06-18".into();
    let init = client.connect().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-server");
    assert_eq!(
        init["result"]["capabilities"]["experimental"]["sessionState"],
        json!({})
    );
    let id = client.session.clone().unwrap();
    assert!(id.len() >= 32 && id.bytes().all(|b| (0x21..=0x7E).contains(&b)));

    let mut old = server.client();
    old.version = "2024-11-05".into();
    let init = old.connect().await;
    assert_eq!(
        init["result"]["protocolVersion"], "2025-11-25",
        "unsupported → latest"
    );
    server.stop().await;
}

#[tokio::test]
async fn initialize_with_a_client_chosen_session_id_gets_a_fresh_one() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.session = Some("attacker-chosen-id".into());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let response = client.post(&body).send().await.unwrap();
    let issued = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(issued, "attacker-chosen-id");
    server.stop().await;
}

#[tokio::test]
async fn requests_without_a_known_session_are_refused_with_400_or_404() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let response = client.post(&ping).send().await.unwrap();
    assert_eq!(response.status(), 400, "missing session id");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MCP-Session-Id")
    );

    client.session = Some("0123456789abcdef0123456789abcdef".into());
    let response = client.post(&ping).send().await.unwrap();
    assert_eq!(response.status(), 404, "unknown session id");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);

    client.session = Some("bad id with spaces".into());
    let response = client.post(&ping).send().await;
    // reqwest refuses to send an invalid header value only for control
    // characters; spaces go out and the server must reject them.
    assert_eq!(response.unwrap().status(), 400, "malformed session id");
    server.stop().await;
}

#[tokio::test]
async fn bad_headers_and_bodies_get_specific_statuses() {
    let server = TestServer::start(ServerConfig::default()).await;
    let http = raw(&server);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let send = |accept: &'static str, content_type: &'static str, body: String| {
        http.post(&server.url)
            .header("accept", accept)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        send("application/json", "application/json", ping.clone())
            .await
            .unwrap()
            .status(),
        406
    );
    assert_eq!(
        send(ACCEPT_BOTH, "text/plain", ping.clone())
            .await
            .unwrap()
            .status(),
        415
    );
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(5 << 20));
    assert_eq!(
        send(ACCEPT_BOTH, "application/json", huge)
            .await
            .unwrap()
            .status(),
        413
    );
    let response = send(ACCEPT_BOTH, "application/json", "{not json".into())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        -32700
    );
    let response = send(ACCEPT_BOTH, "application/json", "{\"id\":1}".into())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        -32600
    );
    let response = http.put(&server.url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    let elsewhere = server.url.replace("/mcp", "/other");
    let response = send_to(&http, &elsewhere, ping.clone()).await;
    assert_eq!(response.status(), 404, "only the MCP endpoint is served");
    server.stop().await;
}

/// A body sent in pieces (chunked, no Content-Length), as `pieces`.
fn chunked(pieces: Vec<String>) -> reqwest::Body {
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn a_body_in_many_pieces_is_read_whole_and_one_over_the_limit_gets_413() {
    let server = TestServer::start(ServerConfig::default()).await;
    let http = raw(&server);
    let post = |body: reqwest::Body| {
        http.post(&server.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // A message cut in three, so the server joins the pieces.
    let pieces = [
        r#"{"jsonrpc":"2.0","#,
        r#""id":7,"method":"#,
        r#""initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pieces","version":"1"}}}"#,
    ];
    let response = post(chunked(pieces.map(String::from).to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("mcp-session-id"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["protocolVersion"], "2025-11-25");
    // No declared length: the limit (4 MiB) is found while reading.
    let piece = "a".repeat(1 << 20);
    let mut pieces = vec!["{\"x\":\"".to_string()];
    pieces.extend(std::iter::repeat_n(piece, 5));
    pieces.push("\"}".into());
    let response = post(chunked(pieces)).await.unwrap();
    assert_eq!(response.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn foreign_origins_and_hosts_are_forbidden_loopback_ones_allowed() {
    let server = TestServer::start(ServerConfig::default()).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = raw(&server)
            .post(&server.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(init.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let evil = post(vec![("origin", "http://evil.example.com".into())])
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let evil = post(vec![("host", "evil.example.com".into())])
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let local = post(vec![(
        "origin",
        format!("http://localhost:{}", server.addr.port()),
    )])
    .await
    .unwrap();
    assert_eq!(local.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn versions_this_server_does_not_speak_are_refused_with_the_supported_list() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    let supported = json!(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]);
    // A modern request for a revision nobody speaks learns what is spoken.
    let modern = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2099-01-01",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let response = client
        .post(&modern)
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["supported"], supported);
    assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
    assert_eq!(body["id"], 2);

    client.connect().await;
    client.version = "2099-01-01".into();
    let response = client
        .post(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "unsupported MCP-Protocol-Version header"
    );
    server.stop().await;
}

#[tokio::test]
async fn json_rpc_errors_use_the_right_codes() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let r = client.call("no/such/method", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    let r = client.call("tools/call", json!({"name": "nope"})).await;
    assert_eq!(r["error"]["code"], -32602);
    let r = client.call("tools/call", json!({"arguments": {}})).await;
    assert_eq!(r["error"]["code"], -32602, "missing tool name");
    let r = client.tool("echo", json!({"wrong": 1})).await;
    assert_eq!(
        r["isError"], true,
        "bad arguments are a tool error the model can see"
    );
    let r = client.call("initialize", json!({})).await;
    assert_eq!(
        r["error"]["code"], -32602,
        "initialize without its parameters"
    );
    let r = client.call("ping", json!({})).await;
    assert_eq!(r["result"], json!({}));
    server.stop().await;
}

#[tokio::test]
async fn tools_and_session_state_persist_across_requests() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let tools = client.call("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "counter", "slow"]);
    assert_eq!(
        client.tool("echo", json!({"text": "hi"})).await["content"][0]["text"],
        "hi"
    );
    client.tool("counter", json!({})).await;
    let r = client.tool("counter", json!({"by": 4})).await;
    assert_eq!(r["structuredContent"], json!({"counter": 5}));
    assert_eq!(r["content"][0]["text"], "5");

    let r = client
        .call(
            "session/update",
            json!({"state": {"lastTool": "list_nodes"}}),
        )
        .await;
    assert_eq!(
        r["result"]["state"],
        json!({"counter": 5, "lastTool": "list_nodes"})
    );
    let r = client.call("session/get", json!({})).await["result"].clone();
    assert_eq!(r["sessionId"], client.session.clone().unwrap());
    assert_eq!(r["status"], "active");
    for key in ["createdAt", "lastActivity", "expiresAt"] {
        let text = r[key].as_str().unwrap();
        assert!(text.ends_with('Z') && text.len() == 24, "{key} = {text}");
    }
    let other = {
        let mut c = server.client();
        c.connect().await;
        c
    };
    assert_eq!(
        other.call("session/get", json!({})).await["result"]["state"],
        json!({})
    );
    server.stop().await;
}

#[tokio::test]
async fn delete_ends_the_session_and_everything_after_gets_404() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let session = client.session.clone().unwrap();
    let stream = raw(&server)
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let delete = || {
        raw(&server)
            .delete(&server.url)
            .header("mcp-session-id", &session)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 200);
    // The open GET stream ends with the session.
    let events = tokio::time::timeout(Duration::from_secs(5), read_sse(stream, 10)).await;
    assert!(
        events.is_ok(),
        "the GET stream must end when the session is deleted"
    );
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    assert_eq!(client.post(&ping).send().await.unwrap().status(), 404);
    let get = raw(&server)
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(delete().await.unwrap().status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn one_get_stream_per_session_and_it_needs_event_stream_accept() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let session = client.session.clone().unwrap();
    let get = |accept: &'static str| {
        raw(&server)
            .get(&server.url)
            .header("accept", accept)
            .header("mcp-session-id", &session)
            .send()
    };
    assert_eq!(get("application/json").await.unwrap().status(), 406);
    let first = get("text/event-stream").await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(content_type(&first).starts_with("text/event-stream"));
    assert_eq!(get("text/event-stream").await.unwrap().status(), 409);
    drop(first);
    eventually("the first stream to be released", || async {
        get("text/event-stream").await.unwrap().status() == 200
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn progress_streams_over_sse_with_a_priming_event_and_increasing_values() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 3, "delay_ms": 5},
        "_meta": {"progressToken": "tok-1"}}});
    let response = client.post(&body).send().await.unwrap();
    assert!(content_type(&response).starts_with("text/event-stream"));
    let events = read_sse(response, usize::MAX).await;
    assert_eq!(events[0].data, "", "priming event has empty data");
    assert!(events[0].id.is_some() && events[0].retry.is_some());
    let messages: Vec<Value> = events[1..]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let progress: Vec<f64> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            assert_eq!(m["params"]["progressToken"], "tok-1");
            m["params"]["progress"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0]);
    assert_eq!(messages.last().unwrap()["id"], 7);
    // Event ids are unique and name the stream.
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids.len(), events.len());
    server.stop().await;
}

#[tokio::test]
async fn a_cancelled_request_stops_and_sends_no_response() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let body = json!({"jsonrpc": "2.0", "id": "long", "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 1000, "delay_ms": 10},
        "_meta": {"progressToken": 1}}});
    let response = client.post(&body).send().await.unwrap();
    let events = tokio::spawn(read_sse(response, usize::MAX));
    eventually("the request to be in flight", || async {
        server.server.requests_in_flight() == 1
    })
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "long", "reason": "test"}});
    assert_eq!(client.post(&cancel).send().await.unwrap().status(), 202);
    let events = tokio::time::timeout(Duration::from_secs(5), events)
        .await
        .expect("the stream ends after cancellation")
        .unwrap();
    assert!(
        events.iter().all(|e| !e.data.contains("\"result\"")),
        "no response after cancellation"
    );
    assert_eq!(server.server.requests_in_flight(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_broken_stream_resumes_with_last_event_id_and_gets_later_live_events() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let body = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 6, "delay_ms": 60},
        "_meta": {"progressToken": "p"}}});
    let response = client.post(&body).send().await.unwrap();
    // Priming event and the first progress event, then the client drops.
    let first = read_sse(response, 2).await;
    let last = first.last().unwrap().id.clone().unwrap();
    let resumed = raw(&server)
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = read_sse(resumed, usize::MAX).await;
    let messages: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let steps: Vec<f64> = messages
        .iter()
        .filter_map(|m| m["params"]["progress"].as_f64())
        .collect();
    assert_eq!(steps, [2.0, 3.0, 4.0, 5.0, 6.0], "no gap, no duplicate");
    assert_eq!(
        messages.last().unwrap()["id"],
        11,
        "the response reaches the resumed stream"
    );

    // Resuming the finished stream again replays what followed and ends.
    let again = raw(&server)
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap();
    let replay = tokio::time::timeout(Duration::from_secs(5), read_sse(again, usize::MAX))
        .await
        .expect("a finished stream's replay ends");
    assert_eq!(replay.len(), rest.len());
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_last_event_id_is_refused_clearly() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    for bad in ["nonsense", "rdeadbeef_5"] {
        let response = raw(&server)
            .get(&server.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", client.session.clone().unwrap())
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Last-Event-ID")
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn idle_sessions_expire_and_their_id_gets_404() {
    let config = ServerConfig::default()
        .idle_timeout(Duration::from_millis(300))
        .sweep_interval(Duration::from_millis(20));
    let server = TestServer::start(config).await;
    let mut client = server.client();
    client.connect().await;
    client.tool("counter", json!({})).await;
    // Longer than the idle timeout: the session is expired at once, whether
    // or not the sweeper has run.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(client.post(&ping).send().await.unwrap().status(), 404);
    eventually("the sweeper to remove it", || async {
        server.server.sessions().count().await.unwrap() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_session_stuck_in_the_handshake_is_dropped() {
    let config = ServerConfig::default()
        .handshake_timeout(Duration::from_millis(200))
        .sweep_interval(Duration::from_millis(20));
    let server = TestServer::start(config).await;
    let client = server.client();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let response = client.post(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.server.sessions().count().await.unwrap(), 1);
    eventually("the unfinished handshake to be swept", || async {
        server.server.sessions().count().await.unwrap() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn beyond_the_session_cap_initialize_gets_503() {
    let server = TestServer::start(ServerConfig::default().max_sessions(Some(2))).await;
    server.client().connect().await;
    server.client().connect().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let response = server.client().post(&body).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 2 sessions")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_batch_is_answered_in_revision_2025_03_26_only() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.version = "2025-03-26".into();
    client.connect().await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "b"}}}
    ]);
    let response = client.post(&batch).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answers: Vec<Value> = response.json().await.unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[1]["result"]["content"][0]["text"], "b");

    let mut newer = server.client();
    newer.connect().await;
    let response = newer.post(&batch).send().await.unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}
