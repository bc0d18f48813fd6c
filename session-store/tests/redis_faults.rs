//! `RedisStore` and `RedisEventStore` when Redis misbehaves, and the event
//! store shared between two processes' worth of clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{
    Cas, EventId, EventStore, ExpiryPolicy, NewSession, SessionId, SessionRecord, SessionStore,
    StreamId, Timestamp,
};
use session_store::testkit::redis::RedisServer;
use session_store::{RedisOptions, RedisStore};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    session_store::testkit::block_on(f)
}

fn record() -> SessionRecord {
    // Far in the future: Redis's own TTL must not remove it during the test.
    let now = Timestamp::from_millis(4_000_000_000_000);
    SessionRecord::create(
        SessionId::generate(),
        NewSession::new(),
        now,
        ExpiryPolicy::default(),
    )
}

/// A store with a short reply timeout; call inside the runtime.
fn store(server: &RedisServer) -> RedisStore {
    let options = RedisOptions::default().response_timeout(Duration::from_millis(500));
    RedisStore::connect(&server.url(), options).unwrap()
}

/// Retries `op` until it succeeds, for at most 10 s.
async fn until_ok<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = session_core::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("Redis did not come back: {e}"),
        }
    }
}

#[test]
fn acknowledged_writes_survive_a_redis_restart_and_the_store_reconnects() {
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { store(&server) });
    let written = rt.block_on(async {
        let mut written = Vec::new();
        for _ in 0..20 {
            let r = record();
            store.insert(&r).await.unwrap();
            let next = r.begin_write(r.created_at()).unwrap().finish();
            assert_eq!(
                store.compare_and_swap(&next, 1).await.unwrap(),
                Cas::Swapped
            );
            written.push(next);
        }
        written
    });
    server.kill();
    server.restart();
    rt.block_on(async {
        for r in &written {
            let loaded = until_ok(|| store.load(r.id())).await;
            assert_eq!(loaded.as_ref(), Some(r), "an acknowledged write was lost");
        }
        assert_eq!(store.count().await.unwrap(), 20);
    });
}

#[test]
fn with_redis_gone_calls_fail_fast_and_recover_when_it_returns() {
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { store(&server) });
    let r = record();
    rt.block_on(store.insert(&r)).unwrap();
    server.kill();
    rt.block_on(async {
        let started = Instant::now();
        let failed = store.load(r.id()).await;
        assert!(failed.is_err(), "a load without Redis must fail");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let message = failed.unwrap_err().to_string();
        assert!(message.contains("redis"), "{message}");
    });
    server.restart();
    rt.block_on(async {
        let loaded = until_ok(|| store.load(r.id())).await;
        assert_eq!(loaded, Some(r));
    });
}

#[test]
fn a_frozen_redis_makes_calls_time_out_within_the_bound() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { store(&server) });
    let r = record();
    rt.block_on(store.insert(&r)).unwrap();
    server.freeze();
    rt.block_on(async {
        let started = Instant::now();
        let failed = store.load(r.id()).await;
        let took = started.elapsed();
        assert!(failed.is_err());
        assert!(
            took < Duration::from_secs(3),
            "the timeout must bound the call: {took:?}"
        );
    });
    server.thaw();
    rt.block_on(async {
        assert_eq!(until_ok(|| store.load(r.id())).await, Some(r));
    });
}

#[test]
fn events_appended_by_one_process_replay_and_stream_live_for_another() {
    let server = RedisServer::start();
    let mut options = RedisOptions::default();
    options.events_per_stream = 4;
    let session = SessionId::generate();
    let stream = StreamId::generate();
    block_on(async {
        // Two processes' worth of stores over one Redis.
        let a = RedisStore::connect(&server.url(), options.clone())
            .unwrap()
            .event_store();
        let b = Arc::new(
            RedisStore::connect(&server.url(), options)
                .unwrap()
                .event_store(),
        );
        let first = a.append(&session, &stream, "one".into()).await.unwrap();
        assert_eq!(first.seq, 1);
        a.append(&session, &stream, "two".into()).await.unwrap();
        let replay = b.replay_after(&session, &first).await.unwrap().unwrap();
        assert_eq!(replay.iter().map(|e| &*e.data).collect::<Vec<_>>(), ["two"]);
        let last = replay[0].id.clone();

        // A live event from A reaches B's blocking read.
        let waiter = {
            let (b, session, last) = (b.clone(), session.clone(), last.clone());
            tokio::spawn(async move { b.wait_after(&session, &last, 5_000).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.append(&session, &stream, "three".into()).await.unwrap();
        let live = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(live.iter().map(|e| &*e.data).collect::<Vec<_>>(), ["three"]);

        // Beyond the cap the oldest go, and a resume from before them is
        // refused rather than silently skipping.
        for n in 0..4 {
            a.append(&session, &stream, format!("more {n}").into())
                .await
                .unwrap();
        }
        assert_eq!(b.replay_after(&session, &first).await.unwrap(), None);
        let unknown = EventId {
            stream: StreamId::generate(),
            seq: 1,
        };
        assert_eq!(b.replay_after(&session, &unknown).await.unwrap(), None);

        b.remove_session(&session).await.unwrap();
        assert_eq!(a.replay_after(&session, &last).await.unwrap(), None);
    });
}
