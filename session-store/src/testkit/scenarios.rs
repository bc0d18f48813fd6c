//! The seed brief's five session-management scenarios, at the manager level,
//! for any store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_core::{Error, ManagerConfig, NewSession, SessionStatus, SessionStore};

use super::cases::manager;

/// 1. A session is created with client information and capabilities, and is
///    active at once.
pub async fn create_session(store: Arc<dyn SessionStore>) {
    let (manager, _) = manager(store, ManagerConfig::default());
    let created = manager
        .create(
            NewSession::new()
                .client_info(json!({"name": "test-client"}))
                .capabilities(json!({"tools": {}, "resources": {}})),
        )
        .await
        .unwrap();
    assert!(!created.id().as_str().is_empty());
    let read = manager.get(created.id()).await.unwrap();
    assert_eq!(read.status_at(manager.clock().now()), SessionStatus::Active);
    assert_eq!(read.meta().client_info_value()["name"], "test-client");
    assert_eq!(
        read.meta().capabilities_value(),
        json!({"tools": {}, "resources": {}})
    );
}

/// 2. State written by one request is visible to the next.
pub async fn persist_state_between_requests(store: Arc<dyn SessionStore>) {
    let (manager, _) = manager(store, ManagerConfig::default());
    let id = manager
        .create(NewSession::new())
        .await
        .unwrap()
        .id()
        .clone();
    let patch = serde_json::from_value(json!({"counter": 5, "lastTool": "list_nodes"})).unwrap();
    manager.update_state(&id, patch).await.unwrap();
    let read = manager.get(&id).await.unwrap();
    assert_eq!(read.state()["counter"], 5);
    assert_eq!(read.state()["lastTool"], "list_nodes");
    let patch = serde_json::from_value(json!({"counter": 6})).unwrap();
    manager.update_state(&id, patch).await.unwrap();
    let read = manager.get(&id).await.unwrap();
    assert_eq!(read.state()["counter"], 6, "a later write replaces the key");
    assert_eq!(
        read.state()["lastTool"],
        "list_nodes",
        "a partial update merges"
    );
}

/// 3. Sessions created concurrently (5, then 100) have unique ids and state
///    that does not leak between them.
pub async fn concurrent_sessions_are_unique_and_isolated(store: Arc<dyn SessionStore>) {
    let (manager, _) = manager(store, ManagerConfig::default());
    let manager = Arc::new(manager);
    for n in [5usize, 100] {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let manager = manager.clone();
                tokio::spawn(async move {
                    let s = manager
                        .create(
                            NewSession::new().client_info(json!({"name": format!("client-{i}")})),
                        )
                        .await
                        .unwrap();
                    let patch = serde_json::from_value(json!({"owner": i})).unwrap();
                    manager.update_state(s.id(), patch).await.unwrap();
                    (i, s.id().clone())
                })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut created = Vec::new();
        for task in tasks {
            let (i, id) = task.await.unwrap();
            assert!(ids.insert(id.clone()), "duplicate session id");
            created.push((i, id));
        }
        assert_eq!(ids.len(), n);
        for (i, id) in created {
            let s = manager.get(&id).await.unwrap();
            assert_eq!(
                s.state()["owner"],
                json!(i),
                "state leaked between sessions"
            );
            assert_eq!(s.meta().client_info_value()["name"], format!("client-{i}"));
            assert_eq!(s.status_at(manager.clock().now()), SessionStatus::Active);
        }
    }
}

/// 4. A client that goes away and comes back (a new manager, as from a new
///    process) resumes its session by id, with its state.
pub async fn recover_after_the_client_is_dropped(store: Arc<dyn SessionStore>) {
    let id = {
        let (first, _) = manager(store.clone(), ManagerConfig::default());
        let s = first
            .create(NewSession::new().owner("alice"))
            .await
            .unwrap();
        let patch =
            serde_json::from_value(json!({"counter": 5, "lastTool": "list_nodes"})).unwrap();
        first.update_state(s.id(), patch).await.unwrap();
        s.id().clone()
    };
    let (second, _) = manager(store, ManagerConfig::default());
    let resumed = second.resume(&id, Some("alice")).await.unwrap();
    assert_eq!(resumed.state()["counter"], 5);
    assert_eq!(resumed.state()["lastTool"], "list_nodes");
    assert!(matches!(
        second.resume(&id, Some("bob")).await,
        Err(Error::NotFound)
    ));
}

/// 5. A session with a short timeout expires; its id is then refused, and a
///    new session gets a new id.
pub async fn timeout_expires_the_session(store: Arc<dyn SessionStore>) {
    let (manager, clock) = manager(store, ManagerConfig::default());
    let short = manager
        .create(NewSession::new().idle_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1_500));
    assert!(matches!(manager.get(short.id()).await, Err(Error::Expired)));
    assert!(matches!(
        manager.update_state(short.id(), Default::default()).await,
        Err(Error::Expired)
    ));
    let replacement = manager.create(NewSession::new()).await.unwrap();
    assert_ne!(replacement.id(), short.id());
    assert!(manager.get(replacement.id()).await.is_ok());
}
