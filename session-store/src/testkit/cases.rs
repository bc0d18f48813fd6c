//! One function per clause of the [`SessionStore`] contract. Each panics with
//! a message naming the broken clause.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use session_core::{
    Cas, Error, ExpiryPolicy, ManagerConfig, ManualClock, NewSession, SessionHook, SessionId,
    SessionManager, SessionRecord, SessionStatus, SessionStore, Timestamp,
};

/// The instant the kit's clocks start at.
pub const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + offset_ms)
}

/// A fresh active record created at `now` with a 60 s idle timeout.
pub fn record(now: Timestamp) -> SessionRecord {
    SessionRecord::create(
        SessionId::generate(),
        NewSession::new(),
        now,
        ExpiryPolicy::idle(Duration::from_secs(60)),
    )
}

/// The next version of `current`, written at `now` with `change` applied.
pub fn next(
    current: &SessionRecord,
    now: Timestamp,
    change: impl FnOnce(&mut session_core::RecordWrite),
) -> SessionRecord {
    let mut write = current.begin_write(now).expect("record is writable");
    change(&mut write);
    write.finish()
}

/// A manager over `store` on a manual clock starting at [`T0`].
pub fn manager(
    store: Arc<dyn SessionStore>,
    config: ManagerConfig,
) -> (SessionManager, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    (SessionManager::new(store, clock.clone(), config), clock)
}

/// A record loads back exactly as inserted, metadata and state included.
pub async fn insert_then_load_round_trips(store: Arc<dyn SessionStore>) {
    let state = serde_json::from_value(json!({
        "counter": 5,
        "lastTool": "list_nodes",
        "nested": {"list": [1, 2.5, null, true], "text": "héllo ✓ \"quoted\"\n"},
    }))
    .unwrap();
    let new = NewSession::new()
        .owner("alice@example")
        .protocol_version("2025-11-25")
        .client_info(json!({"name": "kit", "version": "1.0"}))
        .capabilities(json!({"roots": {"listChanged": true}}))
        .state(state)
        .idle_timeout(Duration::from_secs(5))
        .max_lifetime(Duration::from_secs(50));
    let original = SessionRecord::create(SessionId::generate(), new, T0, ExpiryPolicy::default());
    store.insert(&original).await.unwrap();
    let loaded = store.load(original.id()).await.unwrap();
    assert_eq!(
        loaded.as_ref(),
        Some(&original),
        "load must return what insert stored"
    );
}

/// A store that works reports itself ready
/// ([`readiness`](SessionStore::readiness) is `Ok`), before and after it
/// has taken writes.
pub async fn a_healthy_store_is_ready(store: Arc<dyn SessionStore>) {
    if let Err(e) = store.readiness().await {
        panic!("a fresh, working store must report readiness Ok: {e}");
    }
    store.insert(&record(T0)).await.unwrap();
    if let Err(e) = store.readiness().await {
        panic!("a working store must report readiness Ok after a write: {e}");
    }
}

/// An id never inserted loads as `None`.
pub async fn missing_id_loads_as_none(store: Arc<dyn SessionStore>) {
    assert!(store.load(&SessionId::generate()).await.unwrap().is_none());
    let odd = SessionId::parse("!odd~id:with/punctuation").unwrap();
    assert!(store.load(&odd).await.unwrap().is_none());
}

/// Inserting an id that exists fails with `AlreadyExists`, also once the
/// record has been updated or closed, and leaves the record untouched.
pub async fn insert_refuses_an_existing_id(store: Arc<dyn SessionStore>) {
    let first = record(T0);
    store.insert(&first).await.unwrap();
    assert!(matches!(
        store.insert(&first).await,
        Err(Error::AlreadyExists)
    ));
    let closed = next(&first, at(1), |w| {
        w.set_status(SessionStatus::Closed).unwrap()
    });
    assert_eq!(
        store.compare_and_swap(&closed, 1).await.unwrap(),
        Cas::Swapped
    );
    assert!(matches!(
        store.insert(&first).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(store.load(first.id()).await.unwrap(), Some(closed));
}

/// Of many concurrent inserts of one id, exactly one succeeds.
pub async fn concurrent_inserts_of_one_id_admit_exactly_one(store: Arc<dyn SessionStore>) {
    let template = record(T0);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let r = template.clone();
            tokio::spawn(async move { store.insert(&r).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::AlreadyExists) => {}
            Err(e) => panic!("unexpected error from a racing insert: {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one racing insert of an id may succeed");
}

/// Sessions created concurrently get distinct ids, all stored.
pub async fn ids_are_unique_under_concurrency(store: Arc<dyn SessionStore>) {
    let (manager, _clock) = manager(store.clone(), ManagerConfig::default());
    let manager = Arc::new(manager);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..50 {
                    ids.push(
                        manager
                            .create(NewSession::new())
                            .await
                            .unwrap()
                            .id()
                            .clone(),
                    );
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(all.insert(id), "an id was issued twice");
        }
    }
    assert_eq!(all.len(), 800);
    assert_eq!(store.count().await.unwrap(), 800);
    for id in &all {
        assert!(
            store.load(id).await.unwrap().is_some(),
            "created session {id} is missing"
        );
    }
}

/// A compare-and-swap on a stale version writes nothing and returns the
/// current record.
pub async fn stale_version_gets_conflict_with_the_current_record(store: Arc<dyn SessionStore>) {
    let v1 = record(T0);
    store.insert(&v1).await.unwrap();
    let v2 = next(&v1, at(1), |w| {
        w.merge_state(serde_json::from_value(json!({"a": 1})).unwrap())
    });
    assert_eq!(store.compare_and_swap(&v2, 1).await.unwrap(), Cas::Swapped);
    let stale = next(&v1, at(2), |w| {
        w.merge_state(serde_json::from_value(json!({"a": 2})).unwrap())
    });
    assert_eq!(
        store.compare_and_swap(&stale, 1).await.unwrap(),
        Cas::Conflict {
            current: Some(v2.clone())
        },
        "a stale version must conflict and report the current record"
    );
    assert_eq!(store.load(v1.id()).await.unwrap(), Some(v2));
}

/// A compare-and-swap on a record that is gone conflicts with `None`.
pub async fn compare_and_swap_on_a_missing_record_conflicts_with_none(
    store: Arc<dyn SessionStore>,
) {
    let never = record(T0);
    let v2 = next(&never, at(1), |_| {});
    assert_eq!(
        store.compare_and_swap(&v2, 1).await.unwrap(),
        Cas::Conflict { current: None }
    );
    store.insert(&never).await.unwrap();
    assert!(store.delete(never.id()).await.unwrap());
    assert_eq!(
        store.compare_and_swap(&v2, 1).await.unwrap(),
        Cas::Conflict { current: None }
    );
    assert!(
        store.load(never.id()).await.unwrap().is_none(),
        "a conflicting write must not create"
    );
}

/// A terminal record refuses every write, even one with the right version.
pub async fn terminal_session_refuses_writes(store: Arc<dyn SessionStore>) {
    for (terminal, expected) in [
        (SessionStatus::Closed, "closed"),
        (SessionStatus::Expired, "expired"),
    ] {
        let v1 = record(T0);
        store.insert(&v1).await.unwrap();
        let ended = next(&v1, at(1), |w| w.set_status(terminal).unwrap());
        assert_eq!(
            store.compare_and_swap(&ended, 1).await.unwrap(),
            Cas::Swapped
        );
        // Forge a live next version, as a buggy or malicious writer might.
        let forged = next(&v1, at(2), |_| {});
        let forged = serde_json::from_value::<SessionRecord>({
            let mut v = serde_json::to_value(&forged).unwrap();
            v["version"] = json!(3);
            v
        })
        .unwrap();
        let refused = store.compare_and_swap(&forged, 2).await;
        let got = match &refused {
            Err(Error::Closed) => "closed",
            Err(Error::Expired) => "expired",
            _ => "something else",
        };
        assert_eq!(
            got, expected,
            "a {terminal} record must refuse writes, got {refused:?}"
        );
        assert_eq!(store.load(v1.id()).await.unwrap(), Some(ended));
    }
}

/// Deleting returns whether a record was there; deleting again is not an error.
pub async fn delete_is_idempotent(store: Arc<dyn SessionStore>) {
    let r = record(T0);
    store.insert(&r).await.unwrap();
    assert!(store.delete(r.id()).await.unwrap());
    assert!(!store.delete(r.id()).await.unwrap());
    assert!(store.load(r.id()).await.unwrap().is_none());
    assert!(!store.delete(&SessionId::generate()).await.unwrap());
    store
        .insert(&r)
        .await
        .expect("a deleted id may be inserted again");
}

/// Concurrent read-modify-write updates of one session lose none.
pub async fn concurrent_updates_lose_none(store: Arc<dyn SessionStore>) {
    let (manager, _clock) = manager(store, ManagerConfig::default());
    let manager = Arc::new(manager);
    let id = manager
        .create(NewSession::new())
        .await
        .unwrap()
        .id()
        .clone();
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let manager = manager.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for i in 0..20u64 {
                    manager
                        .update(&id, |state| {
                            let n = state.get("sum").and_then(|v| v.as_u64()).unwrap_or(0);
                            state.insert("sum".into(), json!(n + task * 20 + i + 1));
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let last = manager.get(&id).await.unwrap();
    assert_eq!(
        last.state()["sum"],
        json!((1..=1280u64).sum::<u64>()),
        "an update was lost"
    );
    assert_eq!(last.version(), 1281);
}

/// Two managers over one store (as two processes would be) lose no update.
pub async fn two_managers_sharing_the_store_lose_no_update(store: Arc<dyn SessionStore>) {
    let (a, _) = manager(store.clone(), ManagerConfig::default());
    let (b, _) = manager(store, ManagerConfig::default());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let id = a.create(NewSession::new()).await.unwrap().id().clone();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move {
                m.update(&id, |s| {
                    let n = s.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
                    s.insert("n".into(), json!(n + 1));
                })
                .await
                .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(b.get(&id).await.unwrap().state()["n"], json!(200));
}

/// `count` counts records whose status is not terminal.
pub async fn count_tracks_live_records(store: Arc<dyn SessionStore>) {
    let records: Vec<_> = (0..3).map(|_| record(T0)).collect();
    for r in &records {
        store.insert(r).await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 3);
    let closed = next(&records[0], at(1), |w| {
        w.set_status(SessionStatus::Closed).unwrap()
    });
    store.compare_and_swap(&closed, 1).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        2,
        "a closed record is not live"
    );
    store.delete(records[1].id()).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    let touched = next(&records[2], at(2), |_| {});
    store.compare_and_swap(&touched, 1).await.unwrap();
    assert_eq!(
        store.count().await.unwrap(),
        1,
        "an update does not change the count"
    );
    let removed = store.remove_expired(at(3_600_000), 10).await.unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// Paging visits every record stored throughout, even while others are
/// deleted, and terminates.
pub async fn list_pages_through_every_stored_record(store: Arc<dyn SessionStore>) {
    let mut kept = HashSet::new();
    let mut doomed = Vec::new();
    for i in 0..250 {
        let r = record(T0);
        store.insert(&r).await.unwrap();
        if i % 5 == 0 {
            doomed.push(r.id().clone());
        } else {
            kept.insert(r.id().clone());
        }
    }
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list(cursor.as_deref(), 7).await.unwrap();
        assert!(page.records.len() <= 7, "a page must respect the limit");
        for r in &page.records {
            seen.insert(r.id().clone());
        }
        if pages == 3 {
            for id in doomed.drain(..) {
                store.delete(&id).await.unwrap();
            }
        }
        pages += 1;
        assert!(pages < 1000, "listing does not terminate");
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(
        kept.is_subset(&seen),
        "a record stored throughout was not listed"
    );
}

/// A listing runs to its end while other tasks delete records: a page that
/// loses a record to a delete after the store chose it (so it comes back
/// shorter than the limit) still names the next page. Every record stored
/// throughout is listed by every full pass made meanwhile.
pub async fn list_completes_while_records_are_deleted_concurrently(store: Arc<dyn SessionStore>) {
    const RECORDS: usize = 400;
    const LIMIT: usize = 32;
    const DELETERS: usize = 4;
    let mut kept = HashSet::new();
    let mut doomed: Vec<Vec<SessionId>> = vec![Vec::new(); DELETERS];
    for i in 0..RECORDS {
        let r = record(T0);
        store.insert(&r).await.unwrap();
        if i % 2 == 0 {
            doomed[(i / 2) % DELETERS].push(r.id().clone());
        } else {
            kept.insert(r.id().clone());
        }
    }
    let remaining = Arc::new(AtomicUsize::new(DELETERS));
    let deleters: Vec<_> = doomed
        .into_iter()
        .map(|ids| {
            let store = store.clone();
            let remaining = remaining.clone();
            tokio::spawn(async move {
                for id in ids {
                    assert!(store.delete(&id).await.unwrap(), "a doomed record vanished");
                    tokio::task::yield_now().await;
                }
                remaining.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    // Full listings while the deletes run, and one after they are done.
    let mut passes = 0;
    loop {
        let deleting = remaining.load(Ordering::SeqCst) > 0;
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store.list(cursor.as_deref(), LIMIT).await.unwrap();
            assert!(page.records.len() <= LIMIT, "a page must respect the limit");
            seen.extend(page.records.iter().map(|r| r.id().clone()));
            pages += 1;
            assert!(pages < 10 * RECORDS, "listing does not terminate");
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        let missing = kept.difference(&seen).count();
        assert_eq!(
            missing, 0,
            "pass {passes}: {missing} records stored throughout were not listed \
             (did a page shortened by a concurrent delete end the listing?)"
        );
        passes += 1;
        if !deleting {
            break;
        }
    }
    for deleter in deleters {
        deleter.await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), kept.len());
}

/// `remove_expired` takes exactly the records due, oldest first, up to the
/// limit, and returns them.
pub async fn remove_expired_takes_only_due_records(store: Arc<dyn SessionStore>) {
    // Deadlines at 60 s + i s, for i in 0..10.
    let mut records = Vec::new();
    for i in 0..10u64 {
        let r = record(at(i * 1000));
        store.insert(&r).await.unwrap();
        records.push(r);
    }
    let now = at(60_000 + 4_000); // the first five are due
    assert!(
        store
            .remove_expired(at(59_999), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let first = store.remove_expired(now, 3).await.unwrap();
    assert_eq!(first.len(), 3, "the limit must be respected");
    let rest = store.remove_expired(now, 100).await.unwrap();
    let mut removed: Vec<_> = first.iter().chain(&rest).map(|r| r.id().clone()).collect();
    removed.sort();
    let mut due: Vec<_> = records[..5].iter().map(|r| r.id().clone()).collect();
    due.sort();
    assert_eq!(removed, due, "exactly the due records are removed");
    for r in &records[..5] {
        assert!(store.load(r.id()).await.unwrap().is_none());
    }
    for r in &records[5..] {
        assert!(
            store.load(r.id()).await.unwrap().is_some(),
            "a record not due was removed"
        );
    }
    assert!(store.remove_expired(now, 100).await.unwrap().is_empty());
}

/// A session past its deadline reads as expired at once, with no sweep.
pub async fn expired_record_reads_expired_before_any_sweep(store: Arc<dyn SessionStore>) {
    let config = ManagerConfig::default().idle_timeout(Duration::from_secs(10));
    let (manager, clock) = manager(store.clone(), config);
    let s = manager.create(NewSession::new()).await.unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert!(manager.get(s.id()).await.is_ok());
    clock.advance(Duration::from_secs(10));
    assert!(matches!(manager.get(s.id()).await, Err(Error::Expired)));
    assert_eq!(
        store.load(s.id()).await.unwrap().map(|r| r.stored_status()),
        Some(SessionStatus::Expired),
        "the expiry is recorded in the store"
    );
}

#[derive(Debug, Default)]
struct Expiries(AtomicUsize);

impl SessionHook for Expiries {
    fn on_expired(&self, _: &SessionRecord) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A sweep removes what expired and runs the expiry hook once per session.
pub async fn sweep_runs_expiry_hooks_once_per_session(store: Arc<dyn SessionStore>) {
    let mut config = ManagerConfig::default().idle_timeout(Duration::from_secs(10));
    config.sweep_batch = 7;
    let (manager, clock) = manager(store.clone(), config);
    let hook = Arc::new(Expiries::default());
    manager.add_hook(hook.clone());
    for _ in 0..20 {
        manager.create(NewSession::new()).await.unwrap();
    }
    clock.advance(Duration::from_secs(5));
    let fresh = manager.create(NewSession::new()).await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(manager.sweep().await.unwrap(), 20);
    assert_eq!(manager.sweep().await.unwrap(), 0);
    assert_eq!(hook.0.load(Ordering::SeqCst), 20);
    assert_eq!(store.count().await.unwrap(), 1);
    assert!(manager.get(fresh.id()).await.is_ok());
}
