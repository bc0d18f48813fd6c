//! The manager's rules against a minimal in-test store. The full contract runs
//! against the real backends in `session-store`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32};

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::{ManualClock, Timestamp, terminal_error};

#[derive(Debug, Default)]
struct TestStore {
    map: Mutex<BTreeMap<SessionId, SessionRecord>>,
    /// When set, each compare-and-swap first takes a permit from it.
    cas_gate: Option<Arc<tokio::sync::Semaphore>>,
    cas_entered: AtomicU32,
    /// Ids whose stored record "fails its integrity check".
    corrupt: Mutex<BTreeSet<SessionId>>,
    /// When set, every compare-and-swap loses to a rival write made just
    /// before it.
    rival: AtomicBool,
}

#[async_trait]
impl SessionStore for TestStore {
    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let mut map = self.map.lock().unwrap();
        if map.contains_key(record.id()) {
            return Err(Error::AlreadyExists);
        }
        map.insert(record.id().clone(), record.clone());
        Ok(())
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        if self.corrupt.lock().unwrap().contains(id) {
            return Err(Error::Corrupt {
                id: id.clone(),
                detail: "test damage".into(),
            });
        }
        Ok(self.map.lock().unwrap().get(id).cloned())
    }
    async fn compare_and_swap(&self, record: &SessionRecord, expected: u64) -> Result<Cas> {
        self.cas_entered.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.cas_gate {
            gate.acquire().await.unwrap().forget();
        }
        let mut map = self.map.lock().unwrap();
        if self.rival.load(Ordering::SeqCst)
            && let Some(cur) = map.get(record.id()).cloned()
        {
            let rival = cur.begin_write(cur.last_activity()).unwrap().finish();
            map.insert(rival.id().clone(), rival);
        }
        match map.get(record.id()) {
            Some(cur) if cur.stored_status().is_terminal() => {
                Err(terminal_error(cur.stored_status()))
            }
            Some(cur) if cur.version() == expected => {
                assert_eq!(record.version(), expected + 1);
                map.insert(record.id().clone(), record.clone());
                Ok(Cas::Swapped)
            }
            cur => Ok(Cas::Conflict {
                current: cur.cloned(),
            }),
        }
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let corrupt = self.corrupt.lock().unwrap().remove(id);
        Ok(self.map.lock().unwrap().remove(id).is_some() || corrupt)
    }
    async fn count(&self) -> Result<usize> {
        let map = self.map.lock().unwrap();
        Ok(map
            .values()
            .filter(|r| !r.stored_status().is_terminal())
            .count())
    }
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let map = self.map.lock().unwrap();
        let corrupt = self.corrupt.lock().unwrap();
        let records: Vec<_> = map
            .values()
            .filter(|r| r.id().as_str() > cursor.unwrap_or("") && !corrupt.contains(r.id()))
            .take(limit)
            .cloned()
            .collect();
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.id().to_string()))
            .flatten();
        Ok(Page { records, next })
    }
    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        let mut map = self.map.lock().unwrap();
        let due: Vec<SessionId> = map
            .values()
            .filter(|r| r.expires_at() <= now)
            .take(limit)
            .map(|r| r.id().clone())
            .collect();
        Ok(due.iter().filter_map(|id| map.remove(id)).collect())
    }
    async fn list_corrupt(&self, limit: usize) -> Result<Vec<SessionId>> {
        let corrupt = self.corrupt.lock().unwrap();
        Ok(corrupt.iter().take(limit).cloned().collect())
    }
}

#[derive(Debug, Default)]
struct CountingHook {
    closed: AtomicU32,
    expired: AtomicU32,
}

impl SessionHook for CountingHook {
    fn on_closed(&self, _: &SessionRecord) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn on_expired(&self, _: &SessionRecord) {
        self.expired.fetch_add(1, Ordering::SeqCst);
    }
}

struct Fixture {
    manager: SessionManager,
    clock: Arc<ManualClock>,
    hook: Arc<CountingHook>,
}

fn fixture(config: ManagerConfig) -> Fixture {
    fixture_with(Arc::new(TestStore::default()), config)
}

fn fixture_with(store: Arc<TestStore>, config: ManagerConfig) -> Fixture {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let manager = SessionManager::new(store, clock.clone(), config);
    let hook = Arc::new(CountingHook::default());
    manager.add_hook(hook.clone());
    Fixture {
        manager,
        clock,
        hook,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn state(value: serde_json::Value) -> SessionState {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn get_touches_only_after_the_touch_interval() {
    let f = fixture(ManagerConfig::default().touch_interval(secs(1)));
    let created = f.manager.create(NewSession::new()).await.unwrap();
    f.clock.advance(Duration::from_millis(500));
    let read = f.manager.get(created.id()).await.unwrap();
    assert_eq!(
        read.version(),
        1,
        "a read within the interval writes nothing"
    );
    f.clock.advance(Duration::from_millis(500));
    let read = f.manager.get(created.id()).await.unwrap();
    assert_eq!(read.version(), 2);
    assert_eq!(read.last_activity(), f.clock.now());
}

#[tokio::test]
async fn a_session_past_its_deadline_reads_expired_at_once_and_hooks_run_once() {
    let f = fixture(ManagerConfig::default().idle_timeout(secs(10)));
    let s = f.manager.create(NewSession::new()).await.unwrap();
    f.clock.advance(secs(10));
    assert!(matches!(f.manager.get(s.id()).await, Err(Error::Expired)));
    assert!(matches!(f.manager.get(s.id()).await, Err(Error::Expired)));
    assert!(matches!(
        f.manager.update_state(s.id(), state(json!({"a": 1}))).await,
        Err(Error::Expired)
    ));
    assert_eq!(f.hook.expired.load(Ordering::SeqCst), 1);
    assert_eq!(f.manager.count().await.unwrap(), 0);
}

#[tokio::test]
async fn per_session_idle_timeout_overrides_the_default() {
    let f = fixture(ManagerConfig::default().idle_timeout(secs(100)));
    let short = f
        .manager
        .create(NewSession::new().idle_timeout(secs(1)))
        .await
        .unwrap();
    let long = f.manager.create(NewSession::new()).await.unwrap();
    f.clock.advance(secs(2));
    assert!(matches!(
        f.manager.get(short.id()).await,
        Err(Error::Expired)
    ));
    assert!(f.manager.get(long.id()).await.is_ok());
}

#[tokio::test]
async fn absolute_lifetime_ends_even_a_busy_session() {
    let f = fixture(
        ManagerConfig::default()
            .idle_timeout(secs(10))
            .max_lifetime(Some(secs(25))),
    );
    let s = f.manager.create(NewSession::new()).await.unwrap();
    for _ in 0..4 {
        f.clock.advance(secs(6));
        f.manager.touch(s.id()).await.unwrap();
    }
    f.clock.advance(secs(1));
    assert!(matches!(f.manager.get(s.id()).await, Err(Error::Expired)));
}

#[tokio::test]
async fn cap_refuses_creation_until_expired_sessions_are_swept() {
    let f = fixture(
        ManagerConfig::default()
            .max_sessions(Some(2))
            .idle_timeout(secs(5)),
    );
    f.manager.create(NewSession::new()).await.unwrap();
    f.manager.create(NewSession::new()).await.unwrap();
    assert!(matches!(
        f.manager.create(NewSession::new()).await,
        Err(Error::LimitReached { limit: 2 })
    ));
    f.clock.advance(secs(5));
    f.manager.create(NewSession::new()).await.unwrap();
    assert_eq!(f.hook.expired.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn resume_by_another_principal_reads_as_not_found() {
    let f = fixture(ManagerConfig::default());
    let s = f
        .manager
        .create(NewSession::new().owner("alice"))
        .await
        .unwrap();
    assert!(f.manager.resume(s.id(), Some("alice")).await.is_ok());
    assert!(matches!(
        f.manager.resume(s.id(), Some("mallory")).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        f.manager.resume(s.id(), None).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn oversized_state_is_refused_and_nothing_is_written() {
    let f = fixture(ManagerConfig::default().max_state_bytes(32));
    let s = f.manager.create(NewSession::new()).await.unwrap();
    let big = state(json!({"blob": "x".repeat(64)}));
    assert!(matches!(
        f.manager.update_state(s.id(), big.clone()).await,
        Err(Error::StateTooLarge { limit: 32, .. })
    ));
    assert_eq!(f.manager.get(s.id()).await.unwrap().version(), 1);
    assert!(matches!(
        f.manager.create(NewSession::new().state(big)).await,
        Err(Error::StateTooLarge { .. })
    ));
}

#[tokio::test]
async fn handshake_must_complete_in_time() {
    let f = fixture(ManagerConfig::default());
    let slow = f
        .manager
        .create(NewSession::new().initializing(secs(2)))
        .await
        .unwrap();
    let quick = f
        .manager
        .create(NewSession::new().initializing(secs(2)))
        .await
        .unwrap();
    assert_eq!(slow.stored_status(), SessionStatus::Initializing);
    f.clock.advance(secs(1));
    let active = f.manager.activate(quick.id()).await.unwrap();
    assert_eq!(active.stored_status(), SessionStatus::Active);
    assert_eq!(
        f.manager
            .activate(quick.id())
            .await
            .unwrap()
            .stored_status(),
        SessionStatus::Active
    );
    f.clock.advance(secs(1));
    assert!(matches!(
        f.manager.activate(slow.id()).await,
        Err(Error::Expired)
    ));
    assert!(f.manager.get(quick.id()).await.is_ok());
}

#[tokio::test]
async fn with_zero_retention_closing_and_expiring_delete_the_record() {
    let f = fixture(
        ManagerConfig::default()
            .retention(Duration::ZERO)
            .idle_timeout(secs(10)),
    );
    let closed = f.manager.create(NewSession::new()).await.unwrap();
    let expired = f.manager.create(NewSession::new()).await.unwrap();
    assert_eq!(
        f.manager.close(closed.id()).await.unwrap().stored_status(),
        SessionStatus::Closed
    );
    assert!(matches!(
        f.manager.get(closed.id()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        f.manager.close(closed.id()).await,
        Err(Error::NotFound)
    ));
    f.clock.advance(secs(10));
    assert!(matches!(
        f.manager.get(expired.id()).await,
        Err(Error::Expired)
    ));
    assert!(matches!(
        f.manager.get(expired.id()).await,
        Err(Error::NotFound)
    ));
    assert!(
        f.manager
            .store()
            .load(expired.id())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.hook.closed.load(Ordering::SeqCst), 1);
    assert_eq!(f.hook.expired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_runs_hooks_and_later_calls_report_closed() {
    let f = fixture(ManagerConfig::default().retention(secs(60)));
    let s = f.manager.create(NewSession::new()).await.unwrap();
    f.manager.close(s.id()).await.unwrap();
    assert!(matches!(f.manager.close(s.id()).await, Err(Error::Closed)));
    assert!(matches!(f.manager.get(s.id()).await, Err(Error::Closed)));
    assert!(matches!(f.manager.expire(s.id()).await, Err(Error::Closed)));
    assert_eq!(f.hook.closed.load(Ordering::SeqCst), 1);
    assert_eq!(f.hook.expired.load(Ordering::SeqCst), 0);
    f.clock.advance(secs(60));
    assert_eq!(
        f.manager.sweep().await.unwrap(),
        0,
        "a tombstone is not an expiry"
    );
    assert!(matches!(f.manager.get(s.id()).await, Err(Error::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_two_managers_lose_nothing() {
    let store = Arc::new(TestStore::default());
    let a = Arc::new(fixture_with(store.clone(), ManagerConfig::default()));
    let b = Arc::new(fixture_with(store, ManagerConfig::default()));
    let s = a.manager.create(NewSession::new()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let f = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = s.id().clone();
        tasks.push(tokio::spawn(async move {
            f.manager
                .update(&id, |st| {
                    let n = st.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
                    st.insert("n".into(), json!(n + i));
                })
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = a.manager.get(s.id()).await.unwrap();
    assert_eq!(last.state()["n"], json!((0..200u64).sum::<u64>()));
    assert_eq!(last.version(), 201);
}

#[tokio::test]
async fn clear_all_waits_for_writes_in_flight() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let store = Arc::new(TestStore {
        cas_gate: Some(gate.clone()),
        ..TestStore::default()
    });
    let f = Arc::new(fixture_with(store.clone(), ManagerConfig::default()));
    let s = f.manager.create(NewSession::new()).await.unwrap();
    let id = s.id().clone();
    let writer = {
        let f = f.clone();
        tokio::spawn(async move { f.manager.update_state(&id, state(json!({"k": 1}))).await })
    };
    // Let the write reach the store and block there.
    while store.cas_entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let clearer = {
        let f = f.clone();
        tokio::spawn(async move { f.manager.clear_all().await })
    };
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!clearer.is_finished(), "clear_all must wait for the write");
    gate.add_permits(1);
    let written = writer.await.unwrap().unwrap();
    assert_eq!(written.state()["k"], 1);
    assert_eq!(clearer.await.unwrap().unwrap(), 1);
    assert!(store.map.lock().unwrap().is_empty());
    assert_eq!(f.hook.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn clear_all_with_a_zero_batch_still_removes_everything() {
    let f = fixture(ManagerConfig::default().sweep_batch(0));
    for _ in 0..3 {
        f.manager.create(NewSession::new()).await.unwrap();
    }
    assert_eq!(f.manager.clear_all().await.unwrap(), 3);
    assert_eq!(f.manager.count().await.unwrap(), 0);
    assert_eq!(f.hook.closed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn clear_all_removes_corrupt_records_too_without_hooks() {
    let store = Arc::new(TestStore::default());
    let f = fixture_with(store.clone(), ManagerConfig::default().sweep_batch(2));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            f.manager
                .create(NewSession::new())
                .await
                .unwrap()
                .id()
                .clone(),
        );
    }
    store
        .corrupt
        .lock()
        .unwrap()
        .extend(ids[..3].iter().cloned());
    assert!(matches!(
        f.manager.get(&ids[0]).await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(f.manager.clear_all().await.unwrap(), 5);
    assert!(store.corrupt.lock().unwrap().is_empty());
    assert!(store.map.lock().unwrap().is_empty());
    assert_eq!(
        f.hook.closed.load(Ordering::SeqCst),
        2,
        "hooks run for the readable records only"
    );
}

#[tokio::test]
async fn oversized_client_metadata_is_refused_and_nothing_is_stored() {
    let f = fixture(ManagerConfig::default().max_meta_bytes(64));
    let big = json!({"name": "x".repeat(100)});
    assert!(matches!(
        f.manager.create(NewSession::new().client_info(big.clone())).await,
        Err(Error::MetaTooLarge { limit: 64, size }) if size > 64
    ));
    assert!(matches!(
        f.manager.create(NewSession::new().capabilities(big)).await,
        Err(Error::MetaTooLarge { .. })
    ));
    assert_eq!(f.manager.count().await.unwrap(), 0);
    let small = json!({"name": "c", "version": "1"});
    f.manager
        .create(NewSession::new().client_info(small))
        .await
        .expect("metadata within the limit is accepted");
}

#[tokio::test]
async fn the_configured_handshake_timeout_bounds_every_handshake() {
    let f = fixture(ManagerConfig::default().handshake_timeout(secs(2)));
    let created = f.clock.now();
    let slow = f
        .manager
        .create(NewSession::new().initializing(secs(60)))
        .await
        .unwrap();
    let plain = f.manager.create(NewSession::new()).await.unwrap();
    assert_eq!(slow.expires_at(), created.saturating_add(secs(2)));
    f.clock.advance(Duration::from_millis(1_999));
    f.manager.touch(slow.id()).await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    assert!(matches!(
        f.manager.activate(slow.id()).await,
        Err(Error::Expired)
    ));
    assert_eq!(f.hook.expired.load(Ordering::SeqCst), 1);
    assert!(
        f.manager.get(plain.id()).await.is_ok(),
        "a session created active has no handshake deadline"
    );
    let quick = f
        .manager
        .create(NewSession::new().initializing(secs(1)))
        .await
        .unwrap();
    assert_eq!(
        quick.expires_at(),
        f.clock.now().saturating_add(secs(1)),
        "a shorter per-session timeout is kept"
    );
}

#[tokio::test]
async fn an_unfinished_handshake_is_swept_at_the_configured_timeout() {
    let f = fixture(ManagerConfig::default().handshake_timeout(secs(2)));
    f.manager
        .create(NewSession::new().initializing(secs(600)))
        .await
        .unwrap();
    f.clock.advance(secs(2));
    assert_eq!(f.manager.sweep().await.unwrap(), 1);
    assert_eq!(f.manager.count().await.unwrap(), 0);
}

/// Two managers over one store, each with its own clock (two processes).
fn two_processes(config: ManagerConfig) -> (Arc<TestStore>, Fixture, Fixture) {
    let store = Arc::new(TestStore::default());
    let a = fixture_with(store.clone(), config.clone());
    let b = fixture_with(store.clone(), config);
    (store, a, b)
}

#[tokio::test]
async fn a_stale_overdue_version_does_not_expire_a_session_touched_in_time() {
    let (store, a, b) = two_processes(ManagerConfig::default().idle_timeout(secs(10)));
    let stale = a.manager.create(NewSession::new()).await.unwrap();
    // The other process touches the session just before its deadline...
    b.clock.advance(Duration::from_millis(9_900));
    let touched = b.manager.touch(stale.id()).await.unwrap();
    // ...and this one writes on the version it read before, now overdue.
    a.clock.advance(secs(10));
    let written = a.manager.activate_from(stale.clone()).await.unwrap();
    assert_eq!(written.version(), touched.version() + 1);
    assert_eq!(written.stored_status(), SessionStatus::Active);
    assert_eq!(a.hook.expired.load(Ordering::SeqCst), 0);
    let stored = store.map.lock().unwrap().get(stale.id()).cloned().unwrap();
    assert_eq!(stored, written);
}

#[tokio::test]
async fn closing_a_stale_overdue_version_closes_the_live_session_instead_of_expiring_it() {
    let config = ManagerConfig::default()
        .idle_timeout(secs(10))
        .retention(Duration::ZERO);
    let (store, a, b) = two_processes(config);
    let stale = a.manager.create(NewSession::new()).await.unwrap();
    b.clock.advance(Duration::from_millis(9_900));
    b.manager.touch(stale.id()).await.unwrap();
    a.clock.advance(secs(10));
    let closed = a.manager.close_from(stale.clone()).await.unwrap();
    assert_eq!(closed.stored_status(), SessionStatus::Closed);
    assert_eq!(a.hook.closed.load(Ordering::SeqCst), 1);
    assert_eq!(a.hook.expired.load(Ordering::SeqCst), 0);
    assert!(store.map.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_overdue_session_is_still_expired_when_the_newer_version_is_overdue_too() {
    let (store, a, b) = two_processes(ManagerConfig::default().idle_timeout(secs(10)));
    let stale = a.manager.create(NewSession::new()).await.unwrap();
    b.clock.advance(secs(5));
    b.manager.touch(stale.id()).await.unwrap();
    a.clock.advance(secs(15));
    assert!(matches!(
        a.manager.activate_from(stale.clone()).await,
        Err(Error::Expired)
    ));
    assert_eq!(a.hook.expired.load(Ordering::SeqCst), 1);
    let stored = store.map.lock().unwrap().get(stale.id()).cloned().unwrap();
    assert_eq!(stored.stored_status(), SessionStatus::Expired);
}

#[tokio::test]
async fn a_write_that_keeps_losing_reports_the_version_the_store_holds() {
    let store = Arc::new(TestStore::default());
    let f = fixture_with(
        store.clone(),
        ManagerConfig::default().max_write_attempts(3),
    );
    let s = f.manager.create(NewSession::new()).await.unwrap();
    store.rival.store(true, Ordering::SeqCst);
    let lost = f.manager.update_state(s.id(), state(json!({"a": 1}))).await;
    let stored = store.map.lock().unwrap().get(s.id()).cloned().unwrap();
    match lost {
        Err(Error::Conflict { expected, found }) => {
            assert_eq!(found, Some(stored.version()), "the record exists");
            assert_eq!(expected, stored.version() - 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.cas_entered.load(Ordering::SeqCst), 3);
    assert!(
        stored.state().get("a").is_none(),
        "the lost write is not stored"
    );
}

/// One operation of the model test.
#[derive(Debug, Clone, Copy)]
enum Op {
    Advance(u64),
    Get,
    Update(i64),
    Activate,
    Close,
    Expire,
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..4_000).prop_map(Op::Advance),
        Just(Op::Get),
        any::<i64>().prop_map(Op::Update),
        Just(Op::Activate),
        Just(Op::Close),
        Just(Op::Expire),
        Just(Op::Sweep),
    ]
}

/// What the model believes about the one session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Initializing { deadline: u64 },
    Active { deadline: u64 },
    Gone(SessionStatus),
    Removed,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random operation sequences on one session agree with a tiny model of the
    /// lifecycle: status, deadline, and what each call returns.
    #[test]
    fn lifecycle_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            const IDLE: u64 = 3_000;
            const HANDSHAKE: u64 = 2_000;
            // Retention is long so a terminal session stays observable.
            let f = fixture(
                ManagerConfig::default()
                    .idle_timeout(Duration::from_millis(IDLE))
                    .touch_interval(Duration::ZERO)
                    .retention(secs(3_600)),
            );
            let s = f.manager
                .create(NewSession::new().initializing(Duration::from_millis(HANDSHAKE)))
                .await
                .unwrap();
            let id = s.id().clone();
            let mut model = Model::Initializing { deadline: f.clock.now().as_millis() + HANDSHAKE };
            let mut value = None;
            for op in ops {
                let now = f.clock.now().as_millis();
                // A live session past its deadline is, to every caller, expired.
                let live = match model {
                    Model::Initializing { deadline } | Model::Active { deadline } => now < deadline,
                    _ => false,
                };
                let gone_error = |m: Model| match m {
                    Model::Gone(SessionStatus::Closed) => "closed",
                    Model::Removed => "not found",
                    _ => "expired",
                };
                let describe = |r: &Result<SessionRecord>| match r {
                    Ok(_) => "ok",
                    Err(Error::Closed) => "closed",
                    Err(Error::Expired) => "expired",
                    Err(Error::NotFound) => "not found",
                    Err(_) => "other",
                };
                match op {
                    Op::Advance(ms) => f.clock.advance(Duration::from_millis(ms)),
                    Op::Sweep => {
                        f.manager.sweep().await.unwrap();
                        if !live && model != Model::Removed && !matches!(model, Model::Gone(_)) {
                            model = Model::Removed;
                        }
                    }
                    Op::Get | Op::Update(_) | Op::Activate | Op::Close | Op::Expire => {
                        let result = match op {
                            Op::Get => f.manager.get(&id).await,
                            Op::Update(v) => f.manager.update_state(&id, state(json!({"v": v}))).await,
                            Op::Activate => f.manager.activate(&id).await,
                            Op::Close => f.manager.close(&id).await,
                            _ => f.manager.expire(&id).await,
                        };
                        if !live {
                            // Expired by time: the first call records it.
                            if matches!(model, Model::Initializing { .. } | Model::Active { .. }) {
                                model = Model::Gone(SessionStatus::Expired);
                            }
                            prop_assert_eq!(describe(&result), gone_error(model), "{:?}", op);
                            continue;
                        }
                        let record = result.unwrap();
                        match (op, model) {
                            (Op::Close, _) => model = Model::Gone(SessionStatus::Closed),
                            (Op::Expire, _) => model = Model::Gone(SessionStatus::Expired),
                            (Op::Activate, Model::Initializing { .. }) => {
                                model = Model::Active { deadline: now + IDLE };
                            }
                            (_, Model::Active { .. }) => model = Model::Active { deadline: now + IDLE },
                            _ => {}
                        }
                        if let Op::Update(v) = op {
                            value = Some(v);
                        }
                        prop_assert_eq!(record.state().get("v").and_then(|v| v.as_i64()), value);
                        let expected_status = match model {
                            Model::Initializing { .. } => SessionStatus::Initializing,
                            Model::Active { .. } => SessionStatus::Active,
                            Model::Gone(status) => status,
                            Model::Removed => unreachable!(),
                        };
                        prop_assert_eq!(record.stored_status(), expected_status);
                        if let Model::Initializing { deadline } | Model::Active { deadline } = model {
                            prop_assert_eq!(record.expires_at().as_millis(), deadline);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn handles_are_bound_to_their_principal_and_expire_when_idle() {
    use crate::Handles;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let handles = Handles::new(
        Arc::new(TestStore::default()),
        clock.clone(),
        ManagerConfig::default().idle_timeout(secs(60)),
    );
    let minted = handles
        .mint("ctr", Some("alice"), state(json!({"count": 1})))
        .await
        .unwrap();
    let id = minted.id().as_str().to_string();
    assert!(Handles::parse(&id).is_some());
    // Another principal, or none, cannot read, write or end it.
    for other in [Some("bob"), None] {
        assert!(matches!(
            handles.get(&id, other).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            handles.update(&id, other, |_| ()).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            handles.delete(&id, other).await,
            Err(Error::NotFound)
        ));
    }
    let (record, count) = handles
        .update(&id, Some("alice"), |s| {
            let next = s["count"].as_i64().unwrap() + 1;
            s.insert("count".into(), json!(next));
            next
        })
        .await
        .unwrap();
    assert_eq!((count, record.version()), (2, 2));
    // A malformed id is unknown, whatever is stored under it.
    assert!(matches!(
        handles.get("not-a-handle", Some("alice")).await,
        Err(Error::NotFound)
    ));
    // Unused past its idle timeout, it is expired at once.
    clock.advance(secs(61));
    assert!(matches!(
        handles.get(&id, Some("alice")).await,
        Err(Error::Expired)
    ));
    assert!(
        handles
            .mint("Bad", None, SessionState::new())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn concurrent_handle_updates_lose_nothing() {
    use crate::Handles;
    let handles = Arc::new(Handles::new(
        Arc::new(TestStore::default()),
        Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000))),
        ManagerConfig::default().max_write_attempts(1_000),
    ));
    let id = handles
        .mint("ctr", None, SessionState::new())
        .await
        .unwrap()
        .id()
        .to_string();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (handles, id) = (handles.clone(), id.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    handles
                        .update(&id, None, |s| {
                            let n = s.get("n").and_then(|v| v.as_i64()).unwrap_or(0);
                            s.insert("n".into(), json!(n + 1));
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
    let record = handles.get(&id, None).await.unwrap();
    assert_eq!(record.state()["n"], 400);
}
