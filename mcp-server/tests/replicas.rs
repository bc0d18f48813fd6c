//! Server replicas on one Redis: real `mcp-server` processes sharing a real
//! `redis-server` (started by the test, on loopback), and Redis failing under
//! them.

mod common;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Modern, Process, TestServer, eventually, read_sse, start};
use futures_util::{Stream, StreamExt};
use mcp_server::{HttpConfig, McpServer, demo};
use serde_json::{Value, json};
use session_core::EventStore;
use session_core::wire::{Content, GetPromptResult, Prompt, PromptMessage};
use session_store::testkit::redis::RedisServer;
use session_store::{RedisOptions, RedisStore};

fn replicas(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Process> {
    let url = redis.url();
    let mut args = vec!["--store", url.as_str()];
    args.extend_from_slice(extra);
    (0..n).map(|_| start(&args)).collect()
}

/// A client of `replica` continuing `session`.
fn on(replica: &Process, session: &Client) -> Client {
    let mut client = Client::new(&replica.url);
    client.session = session.session.clone();
    client.version = session.version.clone();
    client
}

async fn ping_status(client: &Client) -> u16 {
    client
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_created_on_one_replica_is_served_by_the_others_with_its_state() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 3, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    a.tool("counter", json!({"by": 3})).await;
    let b = on(&nodes[1], &a);
    let counted = b.tool("counter", json!({})).await;
    assert_eq!(
        counted["structuredContent"]["counter"], 4,
        "B continued A's state"
    );
    let c = on(&nodes[2], &a);
    let state = c.call("session/get", json!({})).await;
    assert_eq!(state["result"]["state"]["counter"], 4);
    assert_eq!(state["result"]["sessionId"], a.session.clone().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_spread_over_replicas_lose_nothing() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 3, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    let clients: Vec<Client> = nodes.iter().map(|n| on(n, &a)).collect();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let client = clients[i % 3].clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    client.tool("counter", json!({})).await;
                } else {
                    let r = client
                        .call("session/update", json!({"state": {format!("k{i}"): i}}))
                        .await;
                    assert!(r.get("result").is_some(), "{r}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let state = clients[1].call("session/get", json!({})).await["result"]["state"].clone();
    assert_eq!(state["counter"], 150, "a counter increment was lost");
    for i in (1..300).step_by(2) {
        assert_eq!(state[format!("k{i}")], json!(i), "an update was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_one_replica_is_404_on_the_others_at_once() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    let b = on(&nodes[1], &a);
    assert_eq!(ping_status(&b).await, 200);
    let deleted = a
        .http
        .delete(&a.url)
        .header("mcp-session-id", a.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(ping_status(&b).await, 404, "B must know at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_one_replica_is_seen_by_all() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &["--idle-timeout", "300ms"]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    let b = on(&nodes[1], &a);
    assert_eq!(ping_status(&b).await, 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(ping_status(&b).await, 404);
    assert_eq!(ping_status(&a).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_on_one_replica_resumes_on_another_with_later_live_events() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 8, "delay_ms": 100},
        "_meta": {"progressToken": "p"}}});
    let response = a.post(&body).send().await.unwrap();
    // The priming event and the first progress event, then the connection
    // to A breaks while A goes on working.
    let first = read_sse(response, 2).await;
    let last = first.last().unwrap().id.clone().unwrap();
    let b = on(&nodes[1], &a);
    let resumed = b
        .http
        .get(&b.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", b.session.clone().unwrap())
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = tokio::time::timeout(Duration::from_secs(10), read_sse(resumed, usize::MAX))
        .await
        .expect("the resumed stream ends with the response");
    let messages: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let steps: Vec<f64> = messages
        .iter()
        .filter_map(|m| m["params"]["progress"].as_f64())
        .collect();
    assert_eq!(
        steps,
        [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "no gap, no duplicate"
    );
    assert_eq!(
        messages.last().unwrap()["id"],
        42,
        "A's response reached B's connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_stream_loses_no_acknowledged_state_and_its_stream_resumes_elsewhere()
{
    let redis = RedisServer::start();
    let mut nodes = replicas(&redis, 2, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    a.tool("counter", json!({"by": 10})).await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 50, "delay_ms": 50},
        "_meta": {"progressToken": "p"}}});
    let response = a.post(&body).send().await.unwrap();
    let seen = read_sse(response, 4).await; // priming + 3 progress events
    let resume_from = seen[1].id.clone().unwrap(); // after the first progress event
    let victim = nodes.remove(0);
    drop(victim); // SIGKILL
    let b = on(&nodes[0], &a);
    assert_eq!(
        b.tool("counter", json!({})).await["structuredContent"]["counter"],
        11,
        "the acknowledged counter survived the killed replica"
    );
    let resumed = b
        .http
        .get(&b.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", b.session.clone().unwrap())
        .header("last-event-id", &resume_from)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let replayed = read_sse(resumed, 2).await;
    let progress: Vec<f64> = replayed
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["params"]["progress"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        progress,
        [2.0, 3.0],
        "events the dead replica stored replay on another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_requests_fail_fast_with_503_and_recover_when_it_returns() {
    let mut redis = RedisServer::start();
    let nodes = replicas(&redis, 1, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    a.tool("counter", json!({"by": 5})).await;
    redis.kill();
    let started = Instant::now();
    let refused = a
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session store"),
        "{body}"
    );
    let mut fresh = Client::new(&nodes[0].url);
    let init = fresh
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        init.status(),
        503,
        "no session can be created without Redis"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ping_status(&a).await != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = a.tool("counter", json!({})).await;
    assert_eq!(
        counted["structuredContent"]["counter"], 6,
        "state survived the Redis restart"
    );
    fresh.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_answered_with_503_within_the_timeout() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 1, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    redis.freeze();
    let started = Instant::now();
    let status = ping_status(&a).await;
    let took = started.elapsed();
    redis.thaw();
    assert_eq!(status, 503);
    // The 2 s reply timeout, and at most a short read after it (100 ms).
    assert!(
        took < Duration::from_millis(2_500),
        "bounded by the Redis reply timeout: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while ping_status(&a).await != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_increments_survive_a_redis_restart_during_traffic() {
    let mut redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &[]);
    let mut a = Client::new(&nodes[0].url);
    a.connect().await;
    let clients = [on(&nodes[0], &a), on(&nodes[1], &a)];
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = clients[w % 2].clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "counter", "arguments": {}}});
                    let Ok(response) = client.post(&body).send().await else {
                        continue;
                    };
                    if response.status() != 200 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let value: Value = response.json().await.unwrap();
                    if let Some(n) = value["result"]["structuredContent"]["counter"].as_i64() {
                        acknowledged.lock().unwrap().push(n);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    for writer in writers {
        writer.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while ping_status(&clients[0]).await != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let distinct: HashSet<i64> = acknowledged.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "two acknowledged increments saw the same value: an update was lost"
    );
    let highest = *acknowledged
        .iter()
        .max()
        .expect("some increments were acknowledged");
    let state = clients[1].call("session/get", json!({})).await["result"]["state"].clone();
    let stored = state["counter"].as_i64().unwrap();
    assert!(
        stored >= highest,
        "an acknowledged increment was lost: stored {stored}, acknowledged up to {highest}"
    );
    // Increments that failed (Redis went away before answering) may or may
    // not have been applied; acknowledged ones must all be there.
}

/// The `counter_id` a modern `counter` call returned.
fn counter_id(result: &Value) -> String {
    result["structuredContent"]["counter_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a modern call mints a handle: {result}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_handle_minted_on_one_replica_counts_on_the_other_and_back() {
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &[]);
    let a = Modern::new(&nodes[0].url);
    let b = Modern::new(&nodes[1].url);
    let first = a.tool("counter", json!({"by": 2})).await;
    let id = counter_id(&first);
    assert_eq!(first["structuredContent"]["counter"], 2);
    let on_b = b.tool("counter", json!({"by": 3, "counter_id": id})).await;
    assert_eq!(
        on_b["structuredContent"],
        json!({"counter": 5, "counter_id": id}),
        "B continued the handle A minted"
    );
    let back_on_a = a.tool("counter", json!({"by": 4, "counter_id": id})).await;
    assert_eq!(back_on_a["structuredContent"]["counter"], 9);
    let read_on_b = b.tool("counter", json!({"by": 0, "counter_id": id})).await;
    assert_eq!(read_on_b["structuredContent"]["counter"], 9);
    // A counter minted on B is another handle, also seen by A.
    let other = counter_id(&b.tool("counter", json!({"by": 50})).await);
    assert_ne!(other, id);
    let seen = a
        .tool("counter", json!({"by": 0, "counter_id": other}))
        .await;
    assert_eq!(seen["structuredContent"]["counter"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_modern_counter_calls_on_one_handle_over_both_replicas_lose_nothing() {
    const CALLERS_PER_REPLICA: usize = 8;
    const CALLS: usize = 25;
    let redis = RedisServer::start();
    let nodes = replicas(&redis, 2, &[]);
    let clients = [Modern::new(&nodes[0].url), Modern::new(&nodes[1].url)];
    let id = counter_id(&clients[0].tool("counter", json!({"by": 0})).await);
    let callers: Vec<_> = (0..2 * CALLERS_PER_REPLICA)
        .map(|caller| {
            let client = clients[caller % 2].clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let result = client.tool("counter", json!({"counter_id": id})).await;
                    assert_ne!(result["isError"], true, "{result}");
                    seen.push(result["structuredContent"]["counter"].as_i64().unwrap());
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for caller in callers {
        seen.extend(caller.await.unwrap());
    }
    let total = i64::try_from(2 * CALLERS_PER_REPLICA * CALLS).unwrap();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every increment saw its own value: none was lost or applied twice"
    );
    for client in &clients {
        let last = client
            .tool("counter", json!({"by": 0, "counter_id": id}))
            .await;
        assert_eq!(last["structuredContent"]["counter"], total);
    }
}

/// A server sharing `redis` with the other replicas the way the binary
/// does (sessions, events, handles under `<prefix>:h`), with the demo
/// tools, a `confirm` tool that asks for input, and a prompt (so prompt
/// list changes are honoured).
fn replica_on(redis: &RedisServer) -> McpServer {
    let store = RedisStore::connect(&redis.url(), RedisOptions::default()).unwrap();
    let events: Arc<dyn EventStore> = Arc::new(store.event_store());
    let handles = store.with_prefix(&format!("{}:h", store.prefix())).unwrap();
    extras(demo::register(McpServer::builder()))
        .store(Arc::new(store))
        .handle_store(Arc::new(handles))
        .event_store(events)
        .build()
}

fn extras(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    common::with_confirm(builder).prompt(
        Prompt {
            name: "greet".into(),
            title: None,
            description: None,
            arguments: Vec::new(),
        },
        |_ctx, _args| async move {
            Ok(GetPromptResult {
                description: None,
                messages: vec![PromptMessage {
                    role: "user".into(),
                    content: Content::text("Hello"),
                }],
            })
        },
    )
}

/// Two in-process replicas on `redis`, each served by `serve_http` (which
/// starts the sweeper and the follower of the other replicas' changes).
async fn in_process_replicas(redis: &RedisServer) -> [TestServer; 2] {
    [
        TestServer::serve(replica_on(redis), HttpConfig::default()).await,
        TestServer::serve(replica_on(redis), HttpConfig::default()).await,
    ]
}

/// An SSE response read one message at a time.
struct Events {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        assert!(
            common::content_type(&response).starts_with("text/event-stream"),
            "{response:?}"
        );
        Events {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buffer: String::new(),
        }
    }

    /// The next message with data (waits at most 10 s).
    async fn next(&mut self) -> Value {
        let read = async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|line| line.strip_prefix("data: "))
                        .collect();
                    if !data.is_empty() {
                        return serde_json::from_str(&data).unwrap();
                    }
                }
                let chunk = self.body.next().await.expect("the stream is open").unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a message arrives in time")
    }
}

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Checks that `message` is the change `method`, tagged with `subscription`.
fn assert_change(message: &Value, method: &str, subscription: &Value, on: &str) {
    assert_eq!(message["method"], method, "on {on}: {message}");
    assert_eq!(
        &message["params"]["_meta"][SUBSCRIPTION_ID], subscription,
        "on {on}: tagged with its own subscription: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_announced_on_one_replica_reaches_listeners_on_every_replica_once() {
    let redis = RedisServer::start();
    let [a, b] = in_process_replicas(&redis).await;
    // One client for both, so the two listen requests have distinct ids.
    let on_a = Modern::new(&a.url);
    let mut on_b = on_a.clone();
    on_b.url = b.url.clone();
    let filter = json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true}});
    let listen = async |client: &Modern| {
        let response = client
            .request("subscriptions/listen", filter.clone())
            .send()
            .await
            .unwrap();
        let mut events = Events::new(response);
        let ack = events.next().await;
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true, "promptsListChanged": true})
        );
        let id = ack["params"]["_meta"][SUBSCRIPTION_ID].clone();
        assert!(!id.is_null(), "{ack}");
        (events, id)
    };
    let (mut events_a, id_a) = listen(&on_a).await;
    let (mut events_b, id_b) = listen(&on_b).await;
    assert_ne!(id_a, id_b);
    for server in [a.server.clone(), b.server.clone()] {
        eventually("each replica's listener to register", || {
            let server = server.clone();
            async move { server.listen_streams() == 1 }
        })
        .await;
    }

    // Announced on B: B's listener at once, A's through the store.
    assert_eq!(
        b.server.notify_tools_list_changed().await,
        1,
        "B told its own listener"
    );
    assert_change(
        &events_a.next().await,
        "notifications/tools/list_changed",
        &id_a,
        "A",
    );
    assert_change(
        &events_b.next().await,
        "notifications/tools/list_changed",
        &id_b,
        "B",
    );

    // Announced on A. Changes travel in order, so B's next message being
    // A's change shows that B did not hear its own change again.
    assert_eq!(a.server.notify_prompts_list_changed().await, 1);
    assert_change(
        &events_b.next().await,
        "notifications/prompts/list_changed",
        &id_b,
        "B",
    );
    assert_change(
        &events_a.next().await,
        "notifications/prompts/list_changed",
        &id_a,
        "A",
    );
    // And once more from B: A's next message is this one, not an echo of
    // A's own change.
    assert_eq!(b.server.notify_tools_list_changed().await, 1);
    assert_change(
        &events_a.next().await,
        "notifications/tools/list_changed",
        &id_a,
        "A",
    );
    assert_change(
        &events_b.next().await,
        "notifications/tools/list_changed",
        &id_b,
        "B",
    );
    drop((events_a, events_b));
    for server in [a.server.clone(), b.server.clone()] {
        eventually("the listeners to go with their streams", || {
            let server = server.clone();
            async move { server.listen_streams() == 0 }
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

/// The `requestState` of an `input_required` answer to `confirm`.
async fn ask(client: &Modern) -> String {
    let answer = client
        .call("tools/call", json!({"name": "confirm", "arguments": {}}))
        .await;
    let result = answer.result();
    assert_eq!(result["resultType"], "input_required", "{answer:?}");
    result["requestState"].as_str().unwrap().to_string()
}

/// The retry of `confirm` with the answer and `state`.
async fn retry(client: &Modern, state: &str) -> common::Answer {
    client
        .call(
            "tools/call",
            json!({"name": "confirm", "arguments": {},
                   "inputResponses": {"ok": {"action": "accept", "content": {"ok": true}}},
                   "requestState": state}),
        )
        .await
}

fn assert_refused(answer: &common::Answer, what: &str) {
    assert_eq!(answer.code(), -32602, "{what}: {answer:?}");
    assert_eq!(
        answer.response()["error"]["data"]["reason"],
        "invalid_request_state",
        "{what}"
    );
}

/// `state` with the character at `at` changed.
fn altered(state: &str, at: usize) -> String {
    let mut bytes = state.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_state_sealed_on_one_replica_opens_on_the_other_and_tampering_is_refused() {
    let redis = RedisServer::start();
    let [a, b] = in_process_replicas(&redis).await;
    let mut on_a = Modern::new(&a.url);
    on_a.capabilities = json!({"elicitation": {}});
    let mut on_b = on_a.clone();
    on_b.url = b.url.clone();
    // Both replicas need the key for the first time at once: they must
    // settle on one.
    let (state_a, state_b) = tokio::join!(ask(&on_a), ask(&on_b));
    let done = retry(&on_b, &state_a).await;
    assert_eq!(
        done.result()["content"][0]["text"],
        "answered accept",
        "B opened A's state: {done:?}"
    );
    let done = retry(&on_a, &state_b).await;
    assert_eq!(done.result()["content"][0]["text"], "answered accept");

    let (body, tag) = state_a.rsplit_once('.').unwrap();
    assert_refused(
        &retry(&on_b, &altered(&state_a, body.len() / 2)).await,
        "body altered",
    );
    assert_refused(
        &retry(&on_b, &altered(&state_a, body.len() + 1 + tag.len() / 2)).await,
        "seal altered",
    );
    assert_refused(&retry(&on_b, &format!("{body}.")).await, "seal removed");
    assert_refused(&retry(&on_b, &format!("{state_a}x")).await, "seal extended");
    // A server with a store of its own has another key.
    let alone = TestServer::serve(
        extras(demo::register(McpServer::builder())).build(),
        HttpConfig::default(),
    )
    .await;
    let mut on_alone = on_a.clone();
    on_alone.url = alone.url.clone();
    assert_refused(&retry(&on_alone, &state_a).await, "another deployment");
    // The untampered state still opens on both.
    for client in [&on_a, &on_b] {
        let again = retry(client, &state_a).await;
        assert_eq!(again.result()["content"][0]["text"], "answered accept");
    }
    alone.stop().await;
    a.stop().await;
    b.stop().await;
}
