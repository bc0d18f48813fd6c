//! The file stores' group-commit statistics, as a metrics exporter reads
//! them: counted per batch on a real directory; none for the memory stores.

use std::sync::Arc;

use session_core::{
    BATCH_SIZE_BUCKETS, EventStore, GroupCommitStats, SYNC_SECONDS_BUCKETS, SessionId,
    SessionStore, StreamId,
};
use session_store::testkit::cases::{T0, record};
use session_store::{FileEventStore, FileStore, MemoryEventStore, MemoryStore};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    session_store::testkit::block_on(f)
}

/// What holds of any reading: both histograms on the standard bounds,
/// cumulative, with `batches` as their total; `writes` carried by them.
fn check_shape(stats: &GroupCommitStats) {
    for (buckets, bounds) in [
        (&stats.batch_sizes, &BATCH_SIZE_BUCKETS[..]),
        (&stats.sync_seconds, &SYNC_SECONDS_BUCKETS[..]),
    ] {
        let listed: Vec<f64> = buckets.iter().map(|&(bound, _)| bound).collect();
        assert_eq!(listed, bounds, "{stats:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {stats:?}"
        );
        assert_eq!(buckets.last().unwrap().1, stats.batches, "{stats:?}");
    }
    assert!(stats.batches <= stats.writes, "{stats:?}");
    // Every batch carried at least one write, and at most the bound of its
    // bucket (all the writes fit below le=1024 here).
    let mut most = 0.0;
    let mut before = 0;
    for &(bound, total) in &stats.batch_sizes[..BATCH_SIZE_BUCKETS.len() - 1] {
        most += bound * (total - before) as f64;
        before = total;
    }
    assert_eq!(before, stats.batches, "{stats:?}");
    assert!(stats.writes as f64 <= most, "{stats:?}");
}

#[test]
fn the_file_store_counts_every_batch_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let fresh = store.group_commit_stats().unwrap();
    assert_eq!(fresh, GroupCommitStats::default());

    // One at a time: each insert waits for its own batch.
    const N: u64 = 20;
    block_on(async {
        for _ in 0..N {
            store.insert(&record(T0)).await.unwrap();
        }
    });
    let stats = store.group_commit_stats().unwrap();
    check_shape(&stats);
    assert_eq!(stats.batches, N, "{stats:?}");
    assert_eq!(
        stats.writes, N,
        "the commit frames are not writes: {stats:?}"
    );
    assert_eq!(stats.batch_sizes[0], (1.0, N), "{stats:?}");
    assert!(stats.sync_seconds_sum > 0.0, "{stats:?}");
    assert_eq!(stats.failed_batches, 0);

    // Concurrent writers share batches; through the trait object, as a
    // server holds its store. A delete is a write too.
    const M: u64 = 64;
    let dynamic: Arc<dyn SessionStore> = store.clone();
    block_on(async {
        let tasks: Vec<_> = (0..M)
            .map(|_| {
                let store = dynamic.clone();
                tokio::spawn(async move { store.insert(&record(T0)).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let r = record(T0);
        dynamic.insert(&r).await.unwrap();
        assert!(dynamic.delete(r.id()).await.unwrap());
    });
    let after = dynamic.group_commit_stats().unwrap();
    check_shape(&after);
    assert_eq!(after.writes, N + M + 2, "{after:?}");
    assert!(after.batches > N && after.batches <= N + M + 2, "{after:?}");
    assert!(after.sync_seconds_sum > stats.sync_seconds_sum, "{after:?}");
    assert_eq!(after.failed_batches, 0);
}

#[test]
fn the_file_event_store_counts_appends_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let events = FileEventStore::open(dir.path(), 256, 64).unwrap();
    assert_eq!(
        events.group_commit_stats().unwrap(),
        GroupCommitStats::default()
    );
    let session = SessionId::generate();
    let streams = [StreamId::standalone(), StreamId::generate()];
    const N: u64 = 10;
    block_on(async {
        for n in 0..N {
            let stream = &streams[n as usize % 2];
            events
                .append(&session, stream, format!(r#"{{"n":{n}}}"#).into())
                .await
                .unwrap();
        }
        events.remove_session(&session).await.unwrap();
        // Nothing of this one is stored: nothing is queued.
        events.remove_session(&SessionId::generate()).await.unwrap();
    });
    let stats = events.group_commit_stats().unwrap();
    check_shape(&stats);
    // The frames starting the two streams are not writes.
    assert_eq!(stats.writes, N + 1, "{stats:?}");
    assert_eq!(stats.batches, N + 1, "one at a time: {stats:?}");
    assert!(stats.sync_seconds_sum > 0.0, "{stats:?}");
    assert_eq!(stats.failed_batches, 0);

    // Through the trait object, as a server holds it.
    let dynamic: Arc<dyn EventStore> = Arc::new(events);
    assert_eq!(dynamic.group_commit_stats(), Some(stats));
}

#[test]
fn the_memory_stores_have_no_group_commit() {
    let sessions: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    assert_eq!(sessions.group_commit_stats(), None);
    let events: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new(16, 4));
    assert_eq!(events.group_commit_stats(), None);
}
