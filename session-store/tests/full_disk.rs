//! `FileStore` and `FileEventStore` on a real, small file system that fills
//! up: writes fail, reads go on, `readiness()` says why, and once space is
//! freed the same store object takes writes again with nothing acknowledged
//! lost.
//!
//! Each test mounts its own 2 MiB tmpfs (we run as root in a container).
//! Where mounting is not allowed the test says so and passes without
//! checking anything.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{
    Cas, EventId, EventStore, ExpiryPolicy, NewSession, SessionId, SessionRecord, SessionStore,
    StreamId, Timestamp, WriteOutcome,
};
use session_store::testkit::disk::{SmallDisk, fill};
use session_store::{FileEventStore, FileEventStoreOptions, FileStore, FileStoreOptions};

/// The disk for a test, or `None` after printing why the test is skipped.
fn small_disk() -> Option<SmallDisk> {
    SmallDisk::or_skip("2m")
}

/// Frees what [`fill`] took.
fn free(ballast: &Path) {
    std::fs::remove_file(ballast).unwrap();
}

/// Waits (polling every 5 ms, for at most 10 s) for `ready` to say so.
async fn until_ready<F, Fut>(ready: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = session_core::Result<()>>,
{
    let started = Instant::now();
    loop {
        match ready().await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("the store did not become ready again within 10 s: {e}"),
        }
    }
}

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// A session whose record is about 16 KiB.
fn big_session() -> SessionRecord {
    let state = serde_json::from_value(serde_json::json!({ "blob": "x".repeat(16 << 10) }))
        .expect("a state object");
    SessionRecord::create(
        SessionId::generate(),
        NewSession::new().state(state),
        NOW,
        ExpiryPolicy::default(),
    )
}

/// The next version of `record`, with `n` in its state.
fn updated(record: &SessionRecord, n: u64) -> SessionRecord {
    let mut write = record
        .begin_write(Timestamp::from_millis(NOW.as_millis() + n))
        .unwrap();
    write.state_mut().insert("n".into(), n.into());
    write.finish()
}

fn backend_outcome(error: &session_core::Error) -> WriteOutcome {
    error
        .outcome()
        .unwrap_or_else(|| panic!("a full disk must fail as a store failure: {error}"))
}

#[test]
fn a_file_store_on_a_full_disk_serves_reads_and_takes_writes_again_once_space_is_freed() {
    let Some(disk) = small_disk() else {
        return;
    };
    let dir = disk.path().join("sessions");
    let options = FileStoreOptions::default()
        .reopen_backoff(Duration::from_millis(10), Duration::from_millis(50));
    session_store::testkit::block_on(async {
        let store = Arc::new(FileStore::open_with(&dir, options).unwrap());
        // The last acknowledged version of every session.
        let mut acked: Vec<SessionRecord> = Vec::new();
        for n in 0..6 {
            let record = big_session();
            store.insert(&record).await.unwrap();
            let next = updated(&record, n);
            assert_eq!(
                store
                    .compare_and_swap(&next, record.version())
                    .await
                    .unwrap(),
                Cas::Swapped
            );
            acked.push(next);
        }
        store.readiness().await.unwrap();

        // The disk fills up (another process's file) and a write fails.
        let ballast = fill(disk.path());
        let mut unknown = None;
        for _ in 0..64 {
            let record = big_session();
            match store.insert(&record).await {
                Ok(()) => acked.push(record),
                Err(e) => {
                    assert_eq!(
                        backend_outcome(&e),
                        WriteOutcome::Unknown,
                        "the write whose own write failed may be on disk: {e}"
                    );
                    unknown = Some(record);
                    break;
                }
            }
        }
        let unknown = unknown.expect("a write fails once the disk is full");

        // Writes are refused before they reach the disk, and say why.
        let readiness = store.readiness().await.unwrap_err();
        let reason = readiness.to_string();
        assert!(
            reason.contains("refuses writes after an I/O error")
                && reason.contains("No space left on device")
                && reason.contains("retrying"),
            "{reason}"
        );
        let refused_insert = big_session();
        let started = Instant::now();
        let refused = store.insert(&refused_insert).await.unwrap_err();
        assert_eq!(
            backend_outcome(&refused),
            WriteOutcome::NotApplied,
            "{refused}"
        );
        assert!(refused.to_string().contains("refuses writes"), "{refused}");
        let refused_update = updated(&acked[0], 100);
        let refused = store
            .compare_and_swap(&refused_update, acked[0].version())
            .await
            .unwrap_err();
        assert_eq!(backend_outcome(&refused), WriteOutcome::NotApplied);
        let refused = store.delete(acked[1].id()).await.unwrap_err();
        assert_eq!(backend_outcome(&refused), WriteOutcome::NotApplied);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "refusals are immediate: {:?}",
            started.elapsed()
        );

        // Reads go on from memory, showing exactly what was acknowledged.
        for record in &acked {
            assert_eq!(
                store.load(record.id()).await.unwrap().as_ref(),
                Some(record)
            );
        }
        assert_eq!(store.load(refused_insert.id()).await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), acked.len());
        let listed = store.list(None, 1000).await.unwrap().records;
        assert_eq!(listed.len(), acked.len());
        assert!(store.readiness().await.is_err(), "still full");

        // Space comes back: the same store object takes writes again.
        free(&ballast);
        let took = until_ready(|| store.readiness()).await;
        println!("ready again {took:?} after the space was freed");
        let next = updated(&acked[0], 200);
        assert_eq!(
            store
                .compare_and_swap(&next, acked[0].version())
                .await
                .unwrap(),
            Cas::Swapped
        );
        acked[0] = next;
        let late = big_session();
        store.insert(&late).await.unwrap();
        acked.push(late);
        store.readiness().await.unwrap();
        for record in &acked {
            assert_eq!(
                store.load(record.id()).await.unwrap().as_ref(),
                Some(record)
            );
        }
        assert_eq!(store.load(refused_insert.id()).await.unwrap(), None);
        let unknown_then = store.load(unknown.id()).await.unwrap();
        assert!(
            unknown_then.is_none() || unknown_then.as_ref() == Some(&unknown),
            "a write of unknown outcome is there whole or not at all"
        );
        drop(store);

        // Opened afresh, as at a restart: every acknowledged write is there.
        let reopened = FileStore::open(&dir).unwrap();
        for record in &acked {
            assert_eq!(
                reopened.load(record.id()).await.unwrap().as_ref(),
                Some(record),
                "an acknowledged write is lost"
            );
        }
        assert_eq!(reopened.load(refused_insert.id()).await.unwrap(), None);
        assert_eq!(reopened.load(unknown.id()).await.unwrap(), unknown_then);
        assert_eq!(
            reopened.count().await.unwrap(),
            acked.len() + usize::from(unknown_then.is_some())
        );
        assert!(
            reopened.recovery().damage.is_empty(),
            "{:?}",
            reopened.recovery()
        );
    });
    drop(disk);
}

#[test]
fn a_file_event_store_on_a_full_disk_serves_replays_and_takes_appends_again_once_space_is_freed() {
    let Some(disk) = small_disk() else {
        return;
    };
    let dir = disk.path().join("events");
    let options = FileEventStoreOptions::default()
        .reopen_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let session = SessionId::generate();
    let g = StreamId::standalone();
    let origin = EventId {
        stream: g.clone(),
        seq: 0,
    };
    let data = |n: usize| -> Arc<str> { Arc::from(format!("{n:04} {}", "e".repeat(16 << 10))) };
    session_store::testkit::block_on(async {
        let events = FileEventStore::open_with(&dir, options).unwrap();
        let mut acked: Vec<(EventId, Arc<str>)> = Vec::new();
        for n in 0..6 {
            let id = events.append(&session, &g, data(n)).await.unwrap();
            acked.push((id, data(n)));
        }
        events.readiness().await.unwrap();

        let ballast = fill(disk.path());
        let mut failed = false;
        for n in 6..70 {
            match events.append(&session, &g, data(n)).await {
                Ok(id) => acked.push((id, data(n))),
                Err(e) => {
                    assert_eq!(backend_outcome(&e), WriteOutcome::Unknown, "{e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "an append fails once the disk is full");
        let reason = events.readiness().await.unwrap_err().to_string();
        assert!(
            reason.contains("refuses appends after an I/O error")
                && reason.contains("No space left on device"),
            "{reason}"
        );
        let refused = events.append(&session, &g, data(99)).await.unwrap_err();
        assert_eq!(
            backend_outcome(&refused),
            WriteOutcome::NotApplied,
            "{refused}"
        );

        // Replays go on, showing what was acknowledged.
        let replayed = |all: Vec<session_core::StoredEvent>| -> Vec<(EventId, Arc<str>)> {
            all.into_iter().map(|e| (e.id, e.data)).collect()
        };
        let all = events
            .replay_after(&session, &origin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(replayed(all), acked);
        let last = acked.last().unwrap().0.clone();
        assert_eq!(
            events.latest(&session, &g).await.unwrap(),
            Some(last.clone())
        );

        free(&ballast);
        let took = until_ready(|| events.readiness()).await;
        println!("ready again {took:?} after the space was freed");
        let id = events.append(&session, &g, data(100)).await.unwrap();
        assert!(id.seq > last.seq, "ids go on: {id} after {last}");
        let all = events
            .replay_after(&session, &origin)
            .await
            .unwrap()
            .unwrap();
        let all = replayed(all);
        assert_eq!(all.last(), Some(&(id.clone(), data(100))));
        for event in &acked {
            assert!(all.contains(event), "{} is lost", event.0);
        }
        acked.push((id, data(100)));
        drop(events);

        let reopened = FileEventStore::open(&dir, 256, 64).unwrap();
        let all = reopened
            .replay_after(&session, &origin)
            .await
            .unwrap()
            .unwrap();
        let all = replayed(all);
        for event in &acked {
            assert!(all.contains(event), "{} is lost at a restart", event.0);
        }
        assert_eq!(all.last(), acked.last());
    });
    drop(disk);
}
