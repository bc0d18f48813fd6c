//! The 2026-07-28 era over HTTP, beside legacy sessions on the same
//! endpoint: the envelope and header rules with their errors, results,
//! logs and progress on the request's own stream, handles, multi
//! round-trip input with sealed state, and `subscriptions/listen`.

mod common;

use std::time::Duration;

use axum::middleware;
use common::{Client, Modern, eventually, read_sse};
use mcp_server::{HttpConfig, McpServer, RequestContext, ServerConfig, demo, tool};
use serde_json::{Map, Value, json};
use session_core::wire::{CallToolResult, LoggingLevel};

/// The demo tools and a few that exercise the era's rules.
fn builder() -> mcp_server::McpServerBuilder {
    common::with_confirm(demo::register(McpServer::builder()))
        .tool(
            tool(
                "region",
                "Echoes a region mirrored into a header",
                json!({"type": "object", "properties": {
                    "region": {"type": "string", "x-mcp-header": "Region"},
                    "limits": {"type": "object", "properties": {
                        "max": {"type": "integer", "x-mcp-header": "Max"}
                    }}
                }}),
            ),
            |_, args: Map<String, Value>| async move {
                Ok(CallToolResult::text(format!(
                    "region={}",
                    args.get("region").and_then(Value::as_str).unwrap_or("-")
                )))
            },
        )
        .tool(
            tool(
                "chatty",
                "Logs at info and error",
                json!({"type": "object"}),
            ),
            |ctx: RequestContext, _| async move {
                ctx.log(LoggingLevel::Info, None, json!("an info line"))
                    .await;
                ctx.log(LoggingLevel::Error, None, json!("an error line"))
                    .await;
                Ok(CallToolResult::text("done"))
            },
        )
}

struct Served {
    url: String,
    server: McpServer,
}

async fn serve(config: ServerConfig) -> Served {
    serve_with(config, HttpConfig::default()).await
}

async fn serve_with(config: ServerConfig, http: HttpConfig) -> Served {
    let server = builder().config(config).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server
        .router(http, addr)
        .layer(middleware::from_fn(common::authenticate));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Served {
        url: format!("http://{addr}/mcp"),
        server,
    }
}

async fn start() -> Served {
    serve(ServerConfig::default()).await
}

#[tokio::test]
async fn discover_lists_every_revision_and_identifies_the_server() {
    let served = start().await;
    let answer = Modern::new(&served.url)
        .call("server/discover", json!({}))
        .await;
    assert_eq!(answer.status, 200);
    let result = answer.result();
    assert_eq!(
        result["supportedVersions"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"])
    );
    assert_eq!(result["resultType"], "complete");
    assert!(result["capabilities"]["tools"].is_object());
    assert!(result["capabilities"]["extensions"].is_object());
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-server"
    );
    assert_eq!(result["ttlMs"], 3_600_000);
    assert_eq!(result["cacheScope"], "public");
}

#[tokio::test]
async fn every_result_says_what_it_is_and_lists_carry_caching_hints() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let echo = client.tool("echo", json!({"text": "hi"})).await;
    assert_eq!(echo["resultType"], "complete");
    assert_eq!(echo["content"][0]["text"], "hi");
    assert_eq!(
        echo["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-server"
    );
    assert!(echo.get("ttlMs").is_none(), "a tool result is not cached");
    let mut orders = Vec::new();
    for _ in 0..3 {
        let list = client.call("tools/list", json!({})).await;
        let result = list.result();
        assert_eq!(
            (result["ttlMs"].as_u64(), result["cacheScope"].as_str()),
            (Some(300_000), Some("public"))
        );
        let names: Vec<String> = result["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        orders.push(names);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "{orders:?}");
    assert_eq!(orders[0][..3], ["echo", "counter", "slow"]);
}

#[tokio::test]
async fn a_request_without_its_envelope_is_refused_with_400_and_nothing_runs() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let call = |meta: Value| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "counter", "arguments": {}, "_meta": meta}})
    };
    let cases = [
        (
            "no params",
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call"}),
        ),
        (
            "no _meta",
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "counter"}}),
        ),
        (
            "no version",
            call(json!({"io.modelcontextprotocol/clientCapabilities": {}})),
        ),
        (
            "no capabilities",
            call(json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"})),
        ),
        (
            "version of the wrong type",
            call(json!({"io.modelcontextprotocol/protocolVersion": 20260728,
            "io.modelcontextprotocol/clientCapabilities": {}})),
        ),
        (
            "capabilities of the wrong type",
            call(
                json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": "all"}),
            ),
        ),
        (
            "a log level that is not one",
            call(
                json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/logLevel": "loud"}),
            ),
        ),
        ("_meta of the wrong type", call(json!("2026-07-28"))),
    ];
    for (what, body) in cases {
        let answer = Modern::send(client.raw("tools/call", Some("counter"), &body)).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert_eq!(answer.code(), -32602, "{what}");
        assert_eq!(answer.response()["id"], 7, "{what}: the id is echoed");
    }
    assert_eq!(
        served.server.handles().manager().count().await.unwrap(),
        0,
        "no counter was minted"
    );
}

#[tokio::test]
async fn headers_must_match_the_body() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let body = |name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": name, "arguments": args, "_meta": client.envelope()}})
    };
    let echo = body("echo", json!({"text": "x"}));
    let mismatch = |request: reqwest::RequestBuilder, what: &'static str| async move {
        let answer = Modern::send(request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, -32020),
            "{what}: {answer:?}"
        );
    };
    let no_version = client
        .http
        .post(&served.url)
        .header("accept", common::ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(echo.to_string());
    mismatch(no_version, "no MCP-Protocol-Version").await;
    mismatch(
        client.raw("tools/list", Some("echo"), &echo),
        "Mcp-Method differs",
    )
    .await;
    mismatch(
        client.raw("TOOLS/CALL", Some("echo"), &echo),
        "Mcp-Method differs in case",
    )
    .await;
    mismatch(client.raw("tools/call", None, &echo), "no Mcp-Name").await;
    mismatch(
        client.raw("tools/call", Some("counter"), &echo),
        "Mcp-Name differs",
    )
    .await;
    // The version in the header and the body must agree before the
    // version itself is judged.
    let mut future = echo.clone();
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    mismatch(
        client.raw("tools/call", Some("echo"), &future),
        "body version differs",
    )
    .await;
    let answer = Modern::send(
        client
            .raw("tools/call", Some("echo"), &future)
            .header("mcp-protocol-version", "2099-01-01"),
    )
    .await;
    // reqwest sends both version headers; the first one counts.
    assert_eq!(answer.code(), -32020);
    let only_future = client
        .http
        .post(&served.url)
        .header("accept", common::ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(future.to_string());
    let answer = Modern::send(only_future).await;
    assert_eq!((answer.status, answer.code()), (400, -32022));
    assert_eq!(
        answer.response()["error"]["data"]["requested"],
        "2099-01-01"
    );
    assert!(answer.response()["error"]["data"]["supported"].is_array());

    // Mirrored tool arguments.
    let region = body(
        "region",
        json!({"region": "eu-west", "limits": {"max": 42}}),
    );
    let ok = Modern::send(
        client
            .raw("tools/call", Some("region"), &region)
            .header("mcp-param-region", "eu-west")
            .header("Mcp-Param-Max", "42.0"),
    )
    .await;
    assert_eq!(ok.result()["content"][0]["text"], "region=eu-west");
    let encoded = Modern::send(
        client
            .raw("tools/call", Some("region"), &region)
            .header("mcp-param-region", "=?base64?ZXUtd2VzdA==?=")
            .header("mcp-param-max", "42"),
    )
    .await;
    assert_eq!(encoded.status, 200, "{encoded:?}");
    mismatch(
        client
            .raw("tools/call", Some("region"), &region)
            .header("mcp-param-max", "42"),
        "a mirrored argument without its header",
    )
    .await;
    mismatch(
        client
            .raw("tools/call", Some("region"), &region)
            .header("mcp-param-region", "us-east")
            .header("mcp-param-max", "42"),
        "a mirrored argument with another value",
    )
    .await;
    mismatch(
        client
            .raw("tools/call", Some("region"), &region)
            .header("mcp-param-region", "=?base64?ZXUtd2VzdA?=")
            .header("mcp-param-max", "42"),
        "Base64 without its padding",
    )
    .await;
    // Absent arguments need no header.
    let bare = body("region", json!({}));
    let answer = Modern::send(client.raw("tools/call", Some("region"), &bare)).await;
    assert_eq!(answer.result()["content"][0]["text"], "region=-");
    // A name outside the header-safe set travels in the Base64 form.
    let answer = Modern::send(client.raw("tools/call", Some("=?base64?ZWNobw==?="), &echo)).await;
    assert_eq!(answer.result()["content"][0]["text"], "x");
}

#[tokio::test]
async fn what_the_era_removed_is_not_found_and_old_transport_parts_are_refused() {
    let served = start().await;
    let client = Modern::new(&served.url);
    for method in [
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "initialize",
        "session/get",
        "no/such/method",
    ] {
        let answer = client
            .call(method, json!({"level": "info", "uri": "x"}))
            .await;
        assert_eq!((answer.status, answer.code()), (404, -32601), "{method}");
    }
    // The GET stream belongs to legacy sessions.
    let get = client
        .http
        .get(&served.url)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    // A session id or Last-Event-ID on a modern request is ignored.
    let answer = Modern::send(
        client
            .request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "still"}}),
            )
            .header("mcp-session-id", "no-such-session")
            .header("last-event-id", "s-1"),
    )
    .await;
    assert_eq!(answer.result()["content"][0]["text"], "still");
}

#[tokio::test]
async fn logs_flow_only_at_the_requested_level_on_the_request_stream() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let quiet = client
        .call("tools/call", json!({"name": "chatty", "arguments": {}}))
        .await;
    assert!(
        quiet.notifications().is_empty(),
        "no logLevel, no logs: {quiet:?}"
    );
    assert!(quiet.content_type.starts_with("application/json"));
    let errors_only = client
        .call(
            "tools/call",
            json!({"name": "chatty", "arguments": {},
                   "_meta": {"io.modelcontextprotocol/logLevel": "error"}}),
        )
        .await;
    let levels: Vec<&str> = errors_only
        .notifications()
        .iter()
        .map(|n| n["params"]["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["error"]);
    assert!(errors_only.content_type.starts_with("text/event-stream"));
    assert_eq!(errors_only.result()["content"][0]["text"], "done");
    // The response is the stream's last message.
    assert!(errors_only.messages.last().unwrap().get("result").is_some());
}

#[tokio::test]
async fn progress_comes_on_the_request_stream_before_the_result() {
    let served = start().await;
    let answer = Modern::new(&served.url)
        .call(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 3, "delay_ms": 1},
                   "_meta": {"progressToken": "p1"}}),
        )
        .await;
    let progress: Vec<f64> = answer
        .notifications()
        .iter()
        .map(|n| {
            assert_eq!(n["params"]["progressToken"], "p1");
            n["params"]["progress"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0]);
    assert_eq!(answer.result()["content"][0]["text"], "completed 3 steps");
}

#[tokio::test]
async fn closing_a_modern_stream_cancels_its_request() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let response = client
        .request(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 1000, "delay_ms": 20},
                   "_meta": {"progressToken": 1}}),
        )
        .send()
        .await
        .unwrap();
    let first = read_sse(response, 1).await; // consumed, then dropped
    assert_eq!(first.len(), 1);
    let server = served.server.clone();
    eventually("the request to stop", || {
        let server = server.clone();
        async move { server.requests_in_flight() == 0 }
    })
    .await;
}

#[tokio::test]
async fn a_counter_handle_lives_across_requests_eras_and_is_bound_to_its_principal() {
    let served = start().await;
    let mut alice = Modern::new(&served.url);
    alice.headers.push(("x-user", "alice".into()));
    let first = alice.tool("counter", json!({"by": 2})).await;
    let id = first["structuredContent"]["counter_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("ctr_") && id.len() == 36, "{id}");
    assert_eq!(first["structuredContent"]["counter"], 2);
    let next = alice
        .tool("counter", json!({"by": 3, "counter_id": id}))
        .await;
    assert_eq!(
        next["structuredContent"],
        json!({"counter": 5, "counter_id": id})
    );

    // Alice's legacy session goes on with the same counter.
    let mut legacy = Client::new(&served.url);
    legacy.http = reqwest::Client::builder()
        .default_headers(
            [("x-user".parse().unwrap(), "alice".parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap();
    legacy.connect().await;
    let in_session = legacy.tool("counter", json!({"counter_id": id})).await;
    assert_eq!(in_session["structuredContent"]["counter"], 6);
    let own = legacy.tool("counter", json!({})).await;
    assert_eq!(
        own["structuredContent"],
        json!({"counter": 1}),
        "without counter_id a session counts in its own state"
    );

    // Another principal, or none, cannot use it, and learns nothing.
    let mut bob = Modern::new(&served.url);
    bob.headers.push(("x-user", "bob".into()));
    let nobody = Modern::new(&served.url);
    for (who, client) in [("bob", &bob), ("nobody", &nobody)] {
        let refused = client.tool("counter", json!({"counter_id": id})).await;
        assert_eq!(refused["isError"], true, "{who}");
        assert!(
            refused["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("without counter_id"),
            "{who}: {refused}"
        );
    }
    let bogus = alice
        .tool("counter", json!({"counter_id": "ctr_not-a-handle"}))
        .await;
    assert_eq!(bogus["isError"], true);
    let after = alice.tool("counter", json!({"counter_id": id})).await;
    assert_eq!(
        after["structuredContent"]["counter"], 7,
        "nothing else counted"
    );
}

#[tokio::test]
async fn an_idle_handle_expires_and_its_id_then_says_so() {
    let served =
        serve(ServerConfig::default().handle_idle_timeout(Duration::from_millis(50))).await;
    let client = Modern::new(&served.url);
    let first = client.tool("counter", json!({})).await;
    let id = first["structuredContent"]["counter_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let gone = client.tool("counter", json!({"counter_id": id})).await;
    assert_eq!(gone["isError"], true);
    assert!(
        gone["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{gone}"
    );
}

/// The `requestState` of an `input_required` answer to `confirm`.
async fn ask(client: &Modern) -> String {
    let answer = client
        .call("tools/call", json!({"name": "confirm", "arguments": {}}))
        .await;
    let result = answer.result();
    assert_eq!(result["resultType"], "input_required");
    assert_eq!(
        result["inputRequests"]["ok"]["method"],
        "elicitation/create"
    );
    result["requestState"].as_str().unwrap().to_string()
}

fn retry(state: &str) -> Value {
    json!({"name": "confirm", "arguments": {},
           "inputResponses": {"ok": {"action": "accept", "content": {"ok": true}}},
           "requestState": state})
}

#[tokio::test]
async fn input_goes_round_trip_and_a_forged_or_foreign_state_is_refused() {
    let served = start().await;
    let mut client = Modern::new(&served.url);
    client.capabilities = json!({"elicitation": {}});
    client.headers.push(("x-user", "alice".into()));
    let state = ask(&client).await;
    let done = client.call("tools/call", retry(&state)).await;
    assert_eq!(done.result()["content"][0]["text"], "answered accept");

    let refused = |answer: common::Answer, what: &str| {
        assert_eq!(answer.code(), -32602, "{what}: {answer:?}");
        assert_eq!(
            answer.response()["error"]["data"]["reason"],
            "invalid_request_state",
            "{what}"
        );
    };
    refused(
        client
            .call("tools/call", retry(&format!("{state}-TAMPERED")))
            .await,
        "tampered",
    );
    refused(client.call("tools/call", retry("made.up")).await, "forged");
    let mut bob = client.clone();
    bob.headers = vec![("x-user", "bob".into())];
    refused(
        bob.call("tools/call", retry(&state)).await,
        "another principal",
    );
    let mut other_tool = retry(&state);
    other_tool["name"] = json!("echo");
    other_tool["arguments"] = json!({"text": "x"});
    refused(client.call("tools/call", other_tool).await, "another tool");
    // A state of the wrong type, or answers that are not an object.
    let mut wrong = retry(&state);
    wrong["requestState"] = json!(5);
    assert_eq!(client.call("tools/call", wrong).await.code(), -32602);
    let mut wrong = retry(&state);
    wrong["inputResponses"] = json!([1]);
    assert_eq!(client.call("tools/call", wrong).await.code(), -32602);
    // An answer of the wrong shape is an error, not a result.
    let mut wrong = retry(&state);
    wrong["inputResponses"]["ok"] = json!(12345);
    assert_eq!(client.call("tools/call", wrong).await.code(), -32602);
    // Without the capability, the client cannot be asked.
    let mut incapable = client.clone();
    incapable.capabilities = json!({});
    let answer = incapable
        .call("tools/call", json!({"name": "confirm", "arguments": {}}))
        .await;
    assert_eq!((answer.status, answer.code()), (400, -32021));
    assert_eq!(
        answer.response()["error"]["data"]["requiredCapabilities"],
        json!({"elicitation": {}})
    );
}

#[tokio::test]
async fn an_expired_request_state_is_refused() {
    let served = serve(ServerConfig::default().request_state_ttl(Duration::ZERO)).await;
    let mut client = Modern::new(&served.url);
    client.capabilities = json!({"elicitation": {}});
    let state = ask(&client).await;
    let answer = client.call("tools/call", retry(&state)).await;
    assert_eq!(answer.code(), -32602);
    assert!(
        answer.response()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn listen_acknowledges_what_it_honours_and_tags_every_change() {
    let served = start().await;
    let client = Modern::new(&served.url);
    let response = client
        .request(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true,
                                     "resourcesListChanged": true, "somethingNew": true}}),
        )
        .send()
        .await
        .unwrap();
    assert!(common::content_type(&response).starts_with("text/event-stream"));
    let server = served.server.clone();
    let reader = tokio::spawn(read_sse(response, 2));
    eventually("the listener to register", || {
        let server = server.clone();
        async move { server.listen_streams() == 1 }
    })
    .await;
    assert_eq!(
        served.server.notify_prompts_list_changed().await,
        0,
        "not honoured: no prompts"
    );
    assert_eq!(served.server.notify_tools_list_changed().await, 1);
    let events = reader.await.unwrap();
    let ack: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "the demo has no prompts or resources, and nobody knows somethingNew"
    );
    let id = ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"].clone();
    assert!(id.is_number(), "{ack}");
    let change: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(change["method"], "notifications/tools/list_changed");
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        id
    );
    // The stream is gone with its reader: so is the listener.
    eventually("the listener to go", || {
        let server = server.clone();
        async move { server.listen_streams() == 0 }
    })
    .await;

    for bad in [
        json!({}),
        json!({"notifications": {"toolsListChanged": "yes"}}),
    ] {
        let answer = client.call("subscriptions/listen", bad.clone()).await;
        assert_eq!(answer.code(), -32602, "{bad}");
    }
}

#[tokio::test]
async fn legacy_sessions_are_served_as_before_beside_the_modern_era() {
    let served = start().await;
    let mut legacy = Client::new(&served.url);
    let init = legacy.connect().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let one = legacy.tool("counter", json!({})).await;
    let modern = Modern::new(&served.url).tool("counter", json!({})).await;
    let two = legacy.tool("counter", json!({})).await;
    assert_eq!(one["structuredContent"], json!({"counter": 1}));
    assert_eq!(two["structuredContent"], json!({"counter": 2}));
    assert!(
        one.get("resultType").is_none(),
        "legacy results stay as they were"
    );
    assert_eq!(modern["structuredContent"]["counter"], 1);
    let ping = legacy.call("ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
}

#[tokio::test]
async fn a_json_only_server_drops_what_cannot_be_carried_and_still_streams_listen() {
    let mut http = HttpConfig::default();
    http.response_mode = mcp_server::ResponseMode::Json;
    let served = serve_with(ServerConfig::default(), http).await;
    let client = Modern::new(&served.url);
    // Far more progress than a request's channel holds: the handler must
    // not wait for a reader that never comes.
    let answer = client
        .call(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 200, "delay_ms": 0},
                   "_meta": {"progressToken": "p"}}),
        )
        .await;
    assert!(
        answer.content_type.starts_with("application/json"),
        "{answer:?}"
    );
    assert_eq!(answer.result()["content"][0]["text"], "completed 200 steps");
    let response = client
        .request(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        )
        .send()
        .await
        .unwrap();
    assert!(common::content_type(&response).starts_with("text/event-stream"));
    let ack = read_sse(response, 1).await;
    assert!(
        ack[0]
            .data
            .contains("notifications/subscriptions/acknowledged")
    );
    // A listen stream needs a client that takes streams.
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen", "params": {
        "notifications": {}, "_meta": client.envelope()}});
    let json_only = client
        .http
        .post(&served.url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_only.status(), 406);
}
