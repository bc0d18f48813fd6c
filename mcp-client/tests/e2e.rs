//! The seed brief's five session scenarios, end to end: this client over real
//! HTTP against `mcp-server`, once with the memory store and once with the
//! file store. Plus: 1,000 concurrent `session/update` calls lose nothing.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Store, start};
use mcp_client::{Client, ClientEvent, ClientOptions, Error, ProtocolMode, ReinitPolicy};
use mcp_server::ServerConfig;
use serde_json::{Map, Value, json};

fn options() -> ClientOptions {
    ClientOptions::default()
        .protocol(ProtocolMode::Legacy)
        .client_info("test-client", "1.0")
        .connect_timeout(Duration::from_secs(5))
}

fn patch(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

/// 1. The handshake completes within its timeout and the session is active.
async fn create_session(store: Store) {
    let server = start(&store, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, options()).await.unwrap();
    let id = client.session_id().expect("the server issues a session id");
    let details = client.server().unwrap();
    assert_eq!(details.protocol_version, "2025-11-25");
    let state = client.session_state().await.unwrap();
    assert_eq!(state.session_id, id);
    assert_eq!(state.status, "active");
    client.close().await.unwrap();
    server.stop().await;
}

/// 2. State written by one request is read back by the next.
async fn persist_state(store: Store) {
    let server = start(&store, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, options()).await.unwrap();
    client
        .update_session_state(patch(json!({"counter": 5, "lastTool": "list_nodes"})))
        .await
        .unwrap();
    let state = client.session_state().await.unwrap().state;
    assert_eq!(state["counter"], 5);
    assert_eq!(state["lastTool"], "list_nodes");
    let counted = client.call_tool("counter", json!({"by": 2})).await.unwrap();
    assert_eq!(counted.structured_content, Some(json!({"counter": 7})));
    client.close().await.unwrap();
    server.stop().await;
}

/// 3. 5 and then 100 concurrent sessions get unique ids and isolated state.
async fn concurrent_sessions(store: Store) {
    let server = start(&store, ServerConfig::default()).await;
    for n in [5usize, 100] {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let url = server.url.clone();
                tokio::spawn(async move {
                    let client = Client::connect_http(&url, options().listen(false))
                        .await
                        .unwrap();
                    client
                        .update_session_state(patch(json!({"mine": i})))
                        .await
                        .unwrap();
                    client.call_tool("counter", json!({"by": i})).await.unwrap();
                    let state = client.session_state().await.unwrap();
                    client.close().await.unwrap();
                    (i, state)
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for task in tasks {
            let (i, state) = task.await.unwrap();
            assert!(
                ids.insert(state.session_id.clone()),
                "a session id was issued twice"
            );
            assert_eq!(
                state.state["mine"],
                json!(i),
                "state leaked between sessions"
            );
            assert_eq!(state.state["counter"], json!(i));
        }
        assert_eq!(ids.len(), n);
    }
    server.stop().await;
}

/// 4. A client that goes away is continued by a new client with its state;
///    on the file store, also after the server restarts.
async fn resume_after_disconnect(store: Store) {
    let server = start(&store, ServerConfig::default()).await;
    let first = Client::connect_http(&server.url, options()).await.unwrap();
    first
        .update_session_state(patch(json!({"counter": 5, "lastTool": "list_nodes"})))
        .await
        .unwrap();
    let id = first.session_id().unwrap();
    first.disconnect().await;

    let second = Client::resume_http(&server.url, &id, options())
        .await
        .unwrap();
    let state = second.session_state().await.unwrap();
    assert_eq!(state.session_id, id, "the same session, not a new one");
    assert_eq!(state.state["lastTool"], "list_nodes");
    second.disconnect().await;

    if let Store::File(_) = store {
        server.stop().await;
        let server = start(&store, ServerConfig::default()).await;
        let third = Client::resume_http(&server.url, &id, options().reinit(ReinitPolicy::Surface))
            .await
            .unwrap();
        let counted = third.call_tool("counter", json!({"by": 1})).await.unwrap();
        assert_eq!(
            counted.structured_content,
            Some(json!({"counter": 6})),
            "state survived the restart"
        );
        assert_eq!(third.session_id().unwrap(), id);
        third.close().await.unwrap();
        server.stop().await;
    } else {
        server.stop().await;
    }
}

/// 5. A session with a short timeout expires: its old id gets 404, and the
///    client's next call transparently runs in a new session whose id is
///    reported.
async fn timeout_expires_session(store: Store) {
    let config = ServerConfig::default()
        .idle_timeout(Duration::from_millis(300))
        .sweep_interval(Duration::from_millis(50));
    let server = start(&store, config).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let client = Client::connect_http(
        &server.url,
        options().on_event(move |e| seen.lock().unwrap().push(e.clone())),
    )
    .await
    .unwrap();
    let old = client.session_id().unwrap();
    client.call_tool("counter", json!({"by": 5})).await.unwrap();
    // Longer than the idle timeout.
    tokio::time::sleep(Duration::from_millis(450)).await;

    let strict = Client::resume_http(&server.url, &old, options().reinit(ReinitPolicy::Surface))
        .await
        .unwrap();
    let refused = strict.ping().await;
    assert!(
        matches!(refused, Err(Error::SessionNotFound { ref session }) if *session == old),
        "{refused:?}"
    );
    strict.disconnect().await;

    let counted = client.call_tool("counter", json!({"by": 1})).await.unwrap();
    assert_eq!(
        counted.structured_content,
        Some(json!({"counter": 1})),
        "a fresh session"
    );
    let new = client.session_id().unwrap();
    assert_ne!(new, old);
    let replaced = events.lock().unwrap().iter().any(|e| {
        matches!(e, ClientEvent::SessionReplaced { old: Some(o), new: Some(n) } if *o == old && *n == new)
    });
    assert!(replaced, "the new session id is reported");
    client.close().await.unwrap();
    server.stop().await;
}

/// 1,000 concurrent `session/update` calls on one session: none is lost.
async fn concurrent_updates_lose_nothing(store: Store) {
    let server = start(&store, ServerConfig::default()).await;
    // A thousand calls at once open about as many connections; on a loaded
    // machine some SYNs are retransmitted (after 1 s, then 3 s), so the
    // connect bound is generous here: what is checked is that no update is
    // lost.
    let client = Client::connect_http(
        &server.url,
        options()
            .listen(false)
            .connect_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .update_session_state(patch(json!({ format!("k{i}"): i })))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let state = client.session_state().await.unwrap().state;
    assert_eq!(state.len(), 1000, "every update is in the state");
    for i in 0..1000 {
        assert_eq!(state[&format!("k{i}")], json!(i));
    }
    client.close().await.unwrap();
    server.stop().await;
}

macro_rules! both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Store::Memory).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$scenario(super::Store::File(dir.path().to_path_buf())).await;
                }
            )*
        }
    };
}

both_stores!(
    create_session,
    persist_state,
    concurrent_sessions,
    resume_after_disconnect,
    timeout_expires_session,
    concurrent_updates_lose_nothing,
);
