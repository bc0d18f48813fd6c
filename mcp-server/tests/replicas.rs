//! Server replicas on one Redis: real `mcp-server` processes sharing a real
//! `redis-server` (started by the test, on loopback), and Redis failing under
//! them.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Client, Process, read_sse, start};
use serde_json::{Value, json};
use session_store::testkit::redis::RedisServer;

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
    assert!(
        took < Duration::from_secs(5),
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
