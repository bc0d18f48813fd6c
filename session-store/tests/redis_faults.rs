//! `RedisStore` and `RedisEventStore` when Redis misbehaves, and the event
//! store shared between two processes' worth of clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_core::{
    Cas, EventId, EventStore, ExpiryPolicy, NewSession, SessionId, SessionRecord, SessionStore,
    StreamId, Timestamp, WriteOutcome,
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

/// What one writer had acknowledged when it stopped.
struct Ledger {
    /// Each session it created, as last acknowledged (or read back after a
    /// write of unknown outcome), and the state keys of its acknowledged
    /// writes.
    sessions: Vec<(SessionRecord, Vec<String>)>,
    /// Sessions that disappeared or went back to an older version.
    lost: Vec<String>,
}

/// Creates sessions and writes them until told to stop, through a Redis
/// that goes away and comes back: every outcome is either acknowledged
/// (recorded) or unknown (then read back from the store before going on).
/// Stops only right after an acknowledged write, so what it last knows of
/// each session is exactly what the store must hold.
async fn writer(store: Arc<RedisStore>, acked: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger {
        sessions: Vec::new(),
        lost: Vec::new(),
    };
    let mut op = 0usize;
    let mut last_acked = false;
    loop {
        if stop.load(Ordering::Relaxed) && last_acked {
            return ledger;
        }
        op += 1;
        last_acked = false;
        if ledger.sessions.len() < 3 || op.is_multiple_of(8) {
            let r = record();
            match store.insert(&r).await {
                Ok(()) => {
                    ledger.sessions.push((r, Vec::new()));
                    acked.fetch_add(1, Ordering::Relaxed);
                    last_acked = true;
                }
                // It may or may not exist: not tracked.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            continue;
        }
        let at = op % ledger.sessions.len();
        let (current, keys) = &mut ledger.sessions[at];
        let key = format!("w{op}");
        let mut write = current
            .begin_write(
                current
                    .last_activity()
                    .saturating_add(Duration::from_millis(1)),
            )
            .unwrap();
        write.state_mut().insert(key.clone(), op.into());
        let next = write.finish();
        match store.compare_and_swap(&next, current.version()).await {
            Ok(Cas::Swapped) => {
                *current = next;
                keys.push(key);
                acked.fetch_add(1, Ordering::Relaxed);
                last_acked = true;
            }
            Ok(Cas::Conflict { current: Some(c) }) => {
                // Only this writer writes it: the store went back.
                ledger.lost.push(format!(
                    "{} is at version {} after {} was acknowledged",
                    c.id(),
                    c.version(),
                    current.version()
                ));
                *current = c;
            }
            Ok(Cas::Conflict { current: None }) => {
                ledger.lost.push(format!("{} disappeared", current.id()));
                ledger.sessions.swap_remove(at);
            }
            Err(_) => {
                // Unknown outcome: read back what the store holds.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let id = current.id().clone();
                match until_ok(|| store.load(&id)).await {
                    Some(c) if c.version() >= current.version() => *current = c,
                    Some(c) => {
                        ledger
                            .lost
                            .push(format!("{id} went back to version {}", c.version()));
                        *current = c;
                    }
                    None => {
                        ledger.lost.push(format!("{id} disappeared"));
                        ledger.sessions.swap_remove(at);
                    }
                }
            }
        }
    }
}

/// Polls `done` every 10 ms for at most `within`.
fn wait_for(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn under_traffic_a_redis_restart_loses_no_acknowledged_write_and_writes_resume() {
    const WRITERS: usize = 4;
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(rt.block_on(async { store(&server) }));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<Arc<AtomicUsize>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let writers: Vec<_> = acked
        .iter()
        .map(|acked| rt.spawn(writer(store.clone(), acked.clone(), stop.clone())))
        .collect();
    let total = || {
        acked
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    assert!(
        wait_for(Duration::from_secs(10), || total() >= 20 * WRITERS),
        "writes before the restart were not acknowledged"
    );

    // Redis dies under traffic and comes back from its append-only file.
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let at_restart: Vec<usize> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let resumed = wait_for(Duration::from_secs(15), || {
        acked
            .iter()
            .zip(&at_restart)
            .all(|(a, before)| a.load(Ordering::Relaxed) >= before + 10)
    });
    stop.store(true, Ordering::Relaxed);
    let ledgers: Vec<Ledger> = rt.block_on(async {
        let mut ledgers = Vec::new();
        for writer in writers {
            ledgers.push(writer.await.unwrap());
        }
        ledgers
    });
    assert!(
        resumed,
        "every writer must have writes acknowledged after the restart: {:?} then {:?}",
        at_restart,
        acked
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );

    let lost: Vec<&String> = ledgers.iter().flat_map(|l| &l.lost).collect();
    assert!(lost.is_empty(), "acknowledged writes were lost: {lost:?}");
    rt.block_on(async {
        let mut sessions = 0;
        for (expected, keys) in ledgers.iter().flat_map(|l| &l.sessions) {
            sessions += 1;
            let loaded = store.load(expected.id()).await.unwrap();
            let Some(loaded) = loaded else {
                panic!("{} was acknowledged and is gone", expected.id());
            };
            for key in keys {
                assert!(
                    loaded.state().contains_key(key),
                    "the acknowledged write {key} of {} is lost",
                    expected.id()
                );
            }
            assert_eq!(&loaded, expected, "not the last acknowledged version");
        }
        assert!(sessions >= 3 * WRITERS);
        assert!(store.count().await.unwrap() >= sessions);
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

/// Polls `ready` every 20 ms until it gives `want` (`Ok` or `Err`), for at
/// most `within`; checks each call returns within `bound`. Returns how long
/// it took.
async fn until_readiness<F, Fut>(
    ready: F,
    want_ok: bool,
    within: Duration,
    bound: Duration,
) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = session_core::Result<()>>,
{
    let started = Instant::now();
    loop {
        let call = Instant::now();
        let outcome = ready().await;
        let took = call.elapsed();
        assert!(took < bound, "readiness took {took:?}, more than {bound:?}");
        match outcome {
            Ok(()) if want_ok => return started.elapsed(),
            Err(e) if !want_ok => {
                let message = e.to_string();
                assert!(message.contains("redis"), "{message}");
                assert!(e.is_unavailable());
                return started.elapsed();
            }
            _ => {}
        }
        assert!(
            started.elapsed() < within,
            "readiness did not turn {} within {within:?}",
            if want_ok { "Ok" } else { "Err" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn readiness_turns_err_when_redis_dies_and_ok_when_it_is_back() {
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The default reply timeout (2 s): readiness is bounded below it.
    let store =
        rt.block_on(async { RedisStore::connect(&server.url(), RedisOptions::default()).unwrap() });
    let events = store.event_store();
    let bound = Duration::from_millis(1500);
    rt.block_on(async {
        store.readiness().await.unwrap();
        events.readiness().await.unwrap();
    });

    server.kill();
    rt.block_on(async {
        let took =
            until_readiness(|| store.readiness(), false, Duration::from_secs(2), bound).await;
        println!("readiness Err {took:?} after Redis died");
        until_readiness(|| events.readiness(), false, Duration::from_secs(2), bound).await;
    });

    server.restart();
    rt.block_on(async {
        let took = until_readiness(|| store.readiness(), true, Duration::from_secs(3), bound).await;
        println!("readiness Ok {took:?} after Redis came back");
        until_readiness(|| events.readiness(), true, Duration::from_secs(3), bound).await;
    });
}

#[test]
fn readiness_of_a_frozen_redis_fails_within_a_second() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store =
        rt.block_on(async { RedisStore::connect(&server.url(), RedisOptions::default()).unwrap() });
    rt.block_on(store.readiness()).unwrap();
    server.freeze();
    rt.block_on(async {
        let started = Instant::now();
        let failed = store.readiness().await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(failed.to_string().contains("PING"), "{failed}");
    });
    server.thaw();
    rt.block_on(async {
        until_readiness(
            || store.readiness(),
            true,
            Duration::from_secs(3),
            Duration::from_millis(1500),
        )
        .await;
    });
}

/// A write sent to a Redis that does not answer may be applied later: its
/// outcome is unknown. An insert whose index update timed out never sent
/// its record: not applied. Reads change nothing.
#[test]
fn writes_that_time_out_are_unknown_and_those_never_sent_are_not_applied() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { store(&server) });
    let events = store.event_store();
    let session = SessionId::generate();
    let g = StreamId::standalone();
    let first = record();
    rt.block_on(store.insert(&first)).unwrap();
    let bump = |r: &SessionRecord, key: &str| {
        let mut write = r
            .begin_write(r.last_activity().saturating_add(Duration::from_millis(1)))
            .unwrap();
        write.state_mut().insert(key.into(), true.into());
        write.finish()
    };
    // One write of each script before Redis freezes: a script Redis does
    // not have yet would be refused (NOSCRIPT) once it went on, not run.
    let r = bump(&first, "early");
    let swapped = rt.block_on(store.compare_and_swap(&r, first.version()));
    assert_eq!(swapped.unwrap(), Cas::Swapped);
    rt.block_on(events.append(&session, &g, "early".into()))
        .unwrap();
    let next = bump(&r, "late");
    let never = record();
    server.freeze();
    rt.block_on(async {
        let cas = store
            .compare_and_swap(&next, r.version())
            .await
            .unwrap_err();
        assert_eq!(cas.outcome(), Some(WriteOutcome::Unknown), "{cas}");
        let append = events
            .append(&session, &g, "late".into())
            .await
            .unwrap_err();
        assert_eq!(append.outcome(), Some(WriteOutcome::Unknown), "{append}");
        let insert = store.insert(&never).await.unwrap_err();
        assert_eq!(
            insert.outcome(),
            Some(WriteOutcome::NotApplied),
            "the record of an insert whose index update failed is never sent: {insert}"
        );
        let load = store.load(r.id()).await.unwrap_err();
        assert_eq!(load.outcome(), Some(WriteOutcome::NotApplied));
    });
    server.thaw();
    rt.block_on(async {
        // The writes were in the socket: Redis ran them once it went on.
        let loaded = until_ok(|| store.load(r.id())).await;
        assert_eq!(
            loaded,
            Some(next),
            "the unknown write was applied after all"
        );
        assert_eq!(store.load(never.id()).await.unwrap(), None);
        let latest = events.latest(&session, &g).await.unwrap();
        assert_eq!(
            latest.map(|id| id.seq),
            Some(2),
            "the unknown append was applied"
        );
    });
}

#[test]
fn writes_to_a_redis_that_refuses_connections_are_not_applied() {
    let mut server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { store(&server) });
    let events = store.event_store();
    let r = record();
    rt.block_on(store.insert(&r)).unwrap();
    server.kill();
    rt.block_on(async {
        // The first call may still go to the connection that just died
        // (unknown); once the client reconnects, Redis refuses it.
        until_readiness(
            || store.readiness(),
            false,
            Duration::from_secs(2),
            Duration::from_millis(1500),
        )
        .await;
        let started = Instant::now();
        let mut outcomes = Vec::new();
        loop {
            let e = store.delete(r.id()).await.unwrap_err();
            outcomes.push(e.outcome());
            if e.outcome() == Some(WriteOutcome::NotApplied) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a refused connection must read as not applied: {outcomes:?}, last {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = events
            .append(&SessionId::generate(), &StreamId::standalone(), "x".into())
            .await
            .unwrap_err();
        assert_eq!(e.outcome(), Some(WriteOutcome::NotApplied), "{e}");
    });
}
