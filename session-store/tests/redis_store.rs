//! `RedisStore` and `RedisEventStore` details the store test kit cannot see:
//! Redis's own TTLs, the key prefix from the URL, the event numbering and
//! caps, blocking reads, and writes whose index update fails. Each test runs
//! its own `redis-server`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{
    Cas, Clock, EventId, EventStore, ManualClock, NewSession, SessionId, SessionRecord,
    SessionStatus, SessionStore, StreamId, Timestamp,
};
use session_store::testkit::redis::RedisServer;
use session_store::{RedisOptions, RedisStore};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    session_store::testkit::block_on(f)
}

/// A plain connection for looking at what the store left in Redis.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(con: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(con).await.unwrap()
}

async fn exists(con: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(con)
        .await
        .unwrap()
        == 1
}

/// Asserts `ttl` (a PTTL reply) lies in `(expected - 10 s, expected]`.
fn assert_about(ttl: i64, expected: Duration, what: &str) {
    let expected = i64::try_from(expected.as_millis()).unwrap();
    assert!(
        ttl <= expected && ttl > expected - 10_000,
        "{what}: PTTL {ttl} ms, expected about {expected} ms"
    );
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(name).unwrap()
}

/// Redis's TTL of a record is the record's own time to its deadline plus
/// the grace, whatever the clock says: a manual clock decades in the past
/// or the future (the test kit's runs in 2027) must not make records vanish
/// or linger.
#[test]
fn the_redis_ttl_is_relative_to_the_record_not_the_wall_clock() {
    let server = RedisServer::start();
    block_on(async {
        let mut options = RedisOptions::default();
        options.ttl_grace = Duration::from_secs(60);
        let store = RedisStore::connect(&server.url(), options).unwrap();
        let mut con = raw(&server).await;
        let idle = Duration::from_secs(600);
        // 1973, 2001, 2096.
        for start in [100_000_000_000, 1_000_000_000_000, 4_000_000_000_000] {
            let clock = ManualClock::new(Timestamp::from_millis(start));
            let r = SessionRecord::create(
                SessionId::generate(),
                NewSession::new().idle_timeout(idle),
                clock.now(),
                session_core::ExpiryPolicy::default(),
            );
            let key = format!("mcp:{{{}}}:s", r.id());
            store.insert(&r).await.unwrap();
            assert_about(
                pttl(&mut con, &key).await,
                idle + Duration::from_secs(60),
                "insert",
            );

            clock.advance(Duration::from_secs(120));
            let touched = r.begin_write(clock.now()).unwrap().finish();
            assert_eq!(
                store.compare_and_swap(&touched, 1).await.unwrap(),
                Cas::Swapped
            );
            assert_about(
                pttl(&mut con, &key).await,
                idle + Duration::from_secs(60),
                "compare-and-swap",
            );
            assert_eq!(store.load(r.id()).await.unwrap(), Some(touched.clone()));

            // Closing keeps it for the retention (5 min) plus the grace.
            clock.advance(Duration::from_secs(10));
            let mut write = touched.begin_write(clock.now()).unwrap();
            write.set_status(SessionStatus::Closed).unwrap();
            let closed = write.finish();
            assert_eq!(
                store.compare_and_swap(&closed, 2).await.unwrap(),
                Cas::Swapped
            );
            assert_about(
                pttl(&mut con, &key).await,
                Duration::from_secs(360),
                "terminal write",
            );
            assert_eq!(store.load(r.id()).await.unwrap(), Some(closed));
        }
    });
}

#[test]
fn a_prefix_in_the_url_keeps_every_key_under_it() {
    let server = RedisServer::start();
    block_on(async {
        let url = format!("{}0?prefix=my-app.1", server.url());
        let store = RedisStore::connect(&url, RedisOptions::default().prefix("ignored")).unwrap();
        assert_eq!(store.prefix(), "my-app.1");
        let r = SessionRecord::create(
            SessionId::generate(),
            NewSession::new(),
            Timestamp::from_millis(4_000_000_000_000),
            session_core::ExpiryPolicy::default(),
        );
        store.insert(&r).await.unwrap();
        store
            .event_store()
            .append(r.id(), &StreamId::standalone(), "{}".into())
            .await
            .unwrap();
        let mut con = raw(&server).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(keys.len() >= 4, "{keys:?}");
        assert!(keys.iter().all(|k| k.starts_with("my-app.1:")), "{keys:?}");
        assert_eq!(store.load(r.id()).await.unwrap(), Some(r));

        for bad in [
            "?prefix=",
            "?prefix",
            "?prefix=a%20b",
            "?prefix=a{b}",
            "?prefix=a&prefix=b",
        ] {
            let url = format!("{}0{bad}", server.url());
            assert!(
                RedisStore::connect(&url, RedisOptions::default()).is_err(),
                "{url} must be refused"
            );
        }
        let long = format!("{}0?prefix={}", server.url(), "p".repeat(65));
        assert!(RedisStore::connect(&long, RedisOptions::default()).is_err());
        // Other parameters still reach the client.
        let with_other = format!("{}0?protocol=resp3&prefix=other", server.url());
        let other = RedisStore::connect(&with_other, RedisOptions::default()).unwrap();
        assert_eq!(other.prefix(), "other");
        other.ping().await.unwrap();
    });
}

#[test]
fn a_store_beside_another_keeps_its_records_apart_under_its_own_prefix() {
    let server = RedisServer::start();
    block_on(async {
        let url = format!("{}0", server.url());
        let sessions = RedisStore::connect(&url, RedisOptions::default()).unwrap();
        let handles = sessions.with_prefix("mcp:h").unwrap();
        assert_eq!(handles.prefix(), "mcp:h");
        let r = SessionRecord::create(
            SessionId::generate(),
            NewSession::new(),
            Timestamp::from_millis(4_000_000_000_000),
            session_core::ExpiryPolicy::default(),
        );
        handles.insert(&r).await.unwrap();
        assert_eq!(handles.load(r.id()).await.unwrap(), Some(r.clone()));
        assert_eq!(sessions.load(r.id()).await.unwrap(), None, "apart");
        assert_eq!(
            (
                sessions.count().await.unwrap(),
                handles.count().await.unwrap()
            ),
            (0, 1)
        );
        let mut con = raw(&server).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(keys.iter().all(|k| k.starts_with("mcp:h:")), "{keys:?}");
        for bad in ["mcp", "", "a b", &"p".repeat(65)] {
            assert!(sessions.with_prefix(bad).is_err(), "{bad:?}");
        }
    });
}

#[test]
fn latest_is_the_last_number_appended_even_past_the_cap() {
    let server = RedisServer::start();
    block_on(async {
        let events =
            RedisStore::connect(&server.url(), RedisOptions::default().events_per_stream(3))
                .unwrap()
                .event_store();
        let session = SessionId::generate();
        let g = StreamId::standalone();
        assert_eq!(events.latest(&session, &g).await.unwrap(), None);
        for n in 1..=10 {
            let id = events
                .append(&session, &g, format!("{n}").into())
                .await
                .unwrap();
            assert_eq!(id.seq, n);
        }
        let origin = EventId {
            stream: g.clone(),
            seq: 0,
        };
        // What the default `latest` would read is gone by the cap.
        assert_eq!(events.replay_after(&session, &origin).await.unwrap(), None);
        assert_eq!(
            events.latest(&session, &g).await.unwrap(),
            Some(EventId {
                stream: g.clone(),
                seq: 10
            })
        );
        assert_eq!(
            events.latest(&session, &stream("other")).await.unwrap(),
            None
        );
        events.remove_session(&session).await.unwrap();
        assert_eq!(events.latest(&session, &g).await.unwrap(), None);
    });
}

#[test]
fn past_the_stream_cap_the_least_recently_appended_go_but_never_the_standalone() {
    let server = RedisServer::start();
    block_on(async {
        let events = RedisStore::connect(
            &server.url(),
            RedisOptions::default().streams_per_session(3),
        )
        .unwrap()
        .event_store();
        let mut con = raw(&server).await;
        let session = SessionId::generate();
        let g = StreamId::standalone();
        let events_key = |s: &StreamId| format!("mcp:{{{session}}}:e:{s}");
        events.append(&session, &g, "g1".into()).await.unwrap();
        for name in ["r1", "r2", "r3"] {
            events
                .append(&session, &stream(name), name.into())
                .await
                .unwrap();
        }
        // g is the oldest, but stays; r1 goes, events and numbering.
        assert_eq!(events.latest(&session, &stream("r1")).await.unwrap(), None);
        assert!(!exists(&mut con, &events_key(&stream("r1"))).await);
        for kept in [&g, &stream("r2"), &stream("r3")] {
            assert!(
                events.latest(&session, kept).await.unwrap().is_some(),
                "{kept}"
            );
            assert!(exists(&mut con, &events_key(kept)).await, "{kept}");
        }
        let card: i64 = redis::cmd("ZCARD")
            .arg(format!("mcp:{{{session}}}:streams"))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(card, 3);
        // Appending to r2 makes r3 the least recently appended.
        events
            .append(&session, &stream("r2"), "again".into())
            .await
            .unwrap();
        let id = events
            .append(&session, &stream("r4"), "r4".into())
            .await
            .unwrap();
        assert_eq!(id.seq, 1);
        assert_eq!(events.latest(&session, &stream("r3")).await.unwrap(), None);
        assert_eq!(
            events
                .latest(&session, &stream("r2"))
                .await
                .unwrap()
                .map(|e| e.seq),
            Some(2)
        );
        assert_eq!(
            events.latest(&session, &g).await.unwrap().map(|e| e.seq),
            Some(1)
        );
    });
}

/// Events last the configured TTL after the last one; the numbering lasts
/// at least as long as the session record, so it is not reused while the
/// session lives.
#[test]
fn events_follow_the_session_idle_timeout_and_numbering_the_record() {
    let server = RedisServer::start();
    block_on(async {
        let options = RedisOptions::default().session_idle_timeout(Duration::from_secs(600));
        assert_eq!(options.events_ttl, Duration::from_secs(900));
        let store = RedisStore::connect(&server.url(), options).unwrap();
        let events = store.event_store();
        assert_eq!(events.events_ttl_ms(), 900_000);
        let mut con = raw(&server).await;
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000_000_000));
        let r = SessionRecord::create(
            SessionId::generate(),
            NewSession::new().idle_timeout(Duration::from_secs(3600)),
            clock.now(),
            session_core::ExpiryPolicy::default(),
        );
        let g = StreamId::standalone();
        let events_key = format!("mcp:{{{}}}:e:g", r.id());
        let counters = format!("mcp:{{{}}}:c", r.id());
        let streams = format!("mcp:{{{}}}:streams", r.id());
        store.insert(&r).await.unwrap();
        events.append(r.id(), &g, "one".into()).await.unwrap();
        for key in [&events_key, &counters, &streams] {
            assert_about(pttl(&mut con, key).await, Duration::from_secs(900), key);
        }
        // A write of the session (idle 1 h, grace 5 min) raises the
        // numbering's TTL to the record's, not the events'.
        clock.advance(Duration::from_secs(1));
        let touched = r.begin_write(clock.now()).unwrap().finish();
        assert_eq!(
            store.compare_and_swap(&touched, 1).await.unwrap(),
            Cas::Swapped
        );
        let record_ttl = Duration::from_secs(3900);
        assert_about(pttl(&mut con, &counters).await, record_ttl, "counters");
        assert_about(pttl(&mut con, &streams).await, record_ttl, "streams");
        assert_about(
            pttl(&mut con, &events_key).await,
            Duration::from_secs(900),
            "events",
        );
        // An append does not shorten it again.
        events.append(r.id(), &g, "two".into()).await.unwrap();
        assert_about(
            pttl(&mut con, &counters).await,
            record_ttl,
            "counters after append",
        );

        // The events expired, the numbering did not: a resume is refused
        // and new events go on from the old numbers.
        redis::cmd("DEL")
            .arg(&events_key)
            .query_async::<()>(&mut con)
            .await
            .unwrap();
        let first = EventId {
            stream: g.clone(),
            seq: 1,
        };
        assert_eq!(events.replay_after(r.id(), &first).await.unwrap(), None);
        let next = events.append(r.id(), &g, "three".into()).await.unwrap();
        assert_eq!(next.seq, 3);
    });
}

/// `wait_after` blocks longer than the Redis client's default reply timeout
/// (500 ms) and delivers what arrives, in one call, without an error; its
/// connection is reused.
#[test]
fn a_blocking_read_longer_than_the_default_reply_timeout_delivers() {
    let server = RedisServer::start();
    block_on(async {
        let options = RedisOptions::default().response_timeout(Duration::from_millis(300));
        let writer = RedisStore::connect(&server.url(), options.clone())
            .unwrap()
            .event_store();
        let reader = Arc::new(
            RedisStore::connect(&server.url(), options)
                .unwrap()
                .event_store(),
        );
        let session = SessionId::generate();
        let g = StreamId::standalone();
        let first = writer.append(&session, &g, "one".into()).await.unwrap();

        let waiter = {
            let (reader, session, first) = (reader.clone(), session.clone(), first.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let got = reader.wait_after(&session, &first, 3_000).await;
                (got, started.elapsed())
            })
        };
        // Once the read is blocked in Redis, the event comes 900 ms later.
        let mut con = raw(&server).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut con)
                .await
                .unwrap();
            if info.contains("blocked_clients:1") {
                break;
            }
            assert!(Instant::now() < deadline, "the read never blocked: {info}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
        writer.append(&session, &g, "two".into()).await.unwrap();
        let (got, took) = waiter.await.unwrap();
        let got = got
            .expect("a blocking read past 500 ms must not fail")
            .unwrap();
        assert_eq!(got.iter().map(|e| &*e.data).collect::<Vec<_>>(), ["two"]);
        assert!(took >= Duration::from_millis(900), "{took:?}");

        // Nothing arrives: the wait runs out (past 500 ms) with no events
        // and no error, on the pooled connection.
        let started = Instant::now();
        let none = reader.wait_after(&session, &got[0].id, 700).await.unwrap();
        assert_eq!(none, Some(Vec::new()));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(650) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // `0` is a short wait, not for ever.
        let started = Instant::now();
        assert_eq!(
            reader.wait_after(&session, &got[0].id, 0).await.unwrap(),
            Some(Vec::new())
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    });
}

/// The indexes are separate keys written in separate commands: a failing
/// index update before the record fails the insert with nothing written;
/// after the record, it does not turn an acknowledged write into an error.
#[test]
fn a_failing_index_update_never_misreports_the_record_write() {
    let server = RedisServer::start();
    block_on(async {
        let store = RedisStore::connect(&server.url(), RedisOptions::default()).unwrap();
        let mut con = raw(&server).await;
        let break_index = |con: &mut redis::aio::MultiplexedConnection| {
            let mut con = con.clone();
            async move {
                // A string where a sorted set belongs: ZADD and ZREM fail.
                redis::cmd("SET")
                    .arg("mcp:deadlines")
                    .arg("not a sorted set")
                    .query_async::<()>(&mut con)
                    .await
                    .unwrap();
            }
        };
        let record = || {
            SessionRecord::create(
                SessionId::generate(),
                NewSession::new(),
                Timestamp::from_millis(4_000_000_000_000),
                session_core::ExpiryPolicy::default(),
            )
        };

        break_index(&mut con).await;
        let refused = record();
        assert!(store.insert(&refused).await.is_err());
        assert_eq!(store.load(refused.id()).await.unwrap(), None);

        redis::cmd("DEL")
            .arg("mcp:deadlines")
            .query_async::<()>(&mut con)
            .await
            .unwrap();
        let r = record();
        store.insert(&r).await.unwrap();
        break_index(&mut con).await;
        let next = r.begin_write(r.created_at()).unwrap().finish();
        assert_eq!(
            store.compare_and_swap(&next, 1).await.unwrap(),
            Cas::Swapped
        );
        assert_eq!(store.load(r.id()).await.unwrap(), Some(next));
        assert!(store.delete(r.id()).await.unwrap());
        assert_eq!(store.load(r.id()).await.unwrap(), None);
    });
}
