//! The commit thread's failure paths, on logs it cannot write or sync.

use super::*;
use session_core::{ExpiryPolicy, NewSession, Timestamp};

/// A log the commit thread cannot write: every batch fails as a full or
/// broken disk would make it fail.
fn unwritable_log(dir: &std::path::Path) -> File {
    let path = dir::SESSIONS.log_path(dir, 1);
    std::fs::write(&path, frame::file_header(FileKind::Log)).unwrap();
    File::open(&path).unwrap() // read-only: writes fail with EBADF
}

/// A committer on an unwritable log in `dir`, reopening after `backoff`.
fn start(
    dir: &std::path::Path,
    backoff: Duration,
) -> (
    Arc<Index>,
    Arc<Queue>,
    Arc<CommitStats>,
    std::thread::JoinHandle<()>,
) {
    start_on(dir, unwritable_log(dir), backoff)
}

/// A committer appending to `log`, reopening `dir` after `backoff`.
fn start_on(
    dir: &std::path::Path,
    log: File,
    backoff: Duration,
) -> (
    Arc<Index>,
    Arc<Queue>,
    Arc<CommitStats>,
    std::thread::JoinHandle<()>,
) {
    let index = Arc::new(Index::new());
    let queue = Arc::new(Queue::default());
    let stats = Arc::new(CommitStats::default());
    let committer = Committer {
        settings: Settings {
            dir: dir.to_path_buf(),
            compact_min_bytes: u64::MAX,
            reopen_backoff: (backoff, backoff),
        },
        index: index.clone(),
        queue: queue.clone(),
        log: Arc::new(log),
        log_seq: 1,
        log_bytes: frame::FILE_HEADER_LEN as u64,
        reservation: Reservation::new(u64::MAX),
        last_batch: 0,
        compaction: None,
        stats: stats.clone(),
        syncer: Syncer::start(index.clone(), queue.clone(), stats.clone()).unwrap(),
    };
    let thread = std::thread::spawn(move || committer.run());
    (index, queue, stats, thread)
}

pub(crate) fn record() -> SessionRecord {
    SessionRecord::create(
        SessionId::generate(),
        NewSession::new(),
        Timestamp::from_millis(1),
        ExpiryPolicy::default(),
    )
}

pub(crate) fn put(
    index: &Index,
    queue: &Queue,
    record: &SessionRecord,
) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
    let (payload, crc) = frame::record_payload(record).unwrap();
    let mut shard = index.lock(record.id());
    let write = Write::Put {
        record: record.clone(),
        payload,
        crc,
    };
    queue.push(&mut shard, record.id(), write)
}

#[test]
fn after_a_failed_write_the_store_refuses_writes_and_forgets_the_pending_one() {
    let dir = tempfile::tempdir().unwrap();
    // No reopening during this test.
    let (index, queue, stats, thread) = start(dir.path(), Duration::from_secs(3600));
    let record = record();
    let done = put(&index, &queue, &record).unwrap();
    let failed = done.blocking_recv().unwrap().unwrap_err();
    assert!(
        failed.to_string().contains("may not be durable"),
        "{failed}"
    );
    assert_eq!(
        failed.outcome(),
        Some(WriteOutcome::Unknown),
        "the failed batch may be on disk"
    );
    assert!(index.durable(record.id()).is_none());
    assert!(
        index.lock(record.id()).slot(record.id()).is_none(),
        "the failed write is no longer pending"
    );
    let refused = {
        let mut shard = index.lock(record.id());
        queue.push(&mut shard, record.id(), Write::Delete)
    };
    let refused = refused.unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("refuses writes after an I/O error") && message.contains("retrying"),
        "{message}"
    );
    assert_eq!(refused.outcome(), Some(WriteOutcome::NotApplied));
    assert!(queue.failure().is_some());
    let counted = stats.snapshot();
    assert_eq!(counted.failed_batches, 1);
    assert_eq!((counted.batches, counted.writes), (0, 0), "{counted:?}");
    // Stopping does not wait for the next attempt to reopen.
    queue.stop();
    thread.join().unwrap();
}

#[test]
fn after_a_failed_sync_the_directory_is_reopened_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // Writes to a pipe work (while they fit in its buffer); syncing
    // one fails (EINVAL).
    let (reader, writer) = std::io::pipe().unwrap();
    let log = File::from(std::os::fd::OwnedFd::from(writer));
    let (index, queue, stats, thread) = start_on(dir.path(), log, Duration::from_millis(5));
    let lost = record();
    let failed = put(&index, &queue, &lost)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap_err();
    assert!(failed.to_string().contains("cannot sync"), "{failed}");
    assert_eq!(failed.outcome(), Some(WriteOutcome::Unknown));
    assert!(index.durable(lost.id()).is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.failure().is_some() {
        assert!(Instant::now() < deadline, "the store did not reopen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kept = record();
    put(&index, &queue, &kept)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(matches!(index.durable(kept.id()), Some(Durable::Record(r)) if r == kept));
    let counted = stats.snapshot();
    assert_eq!(
        (counted.failed_batches, counted.batches, counted.writes),
        (1, 1, 1),
        "{counted:?}"
    );
    queue.stop();
    thread.join().unwrap();
    drop(reader);
    let recovered = recovery::recover(dir.path()).unwrap();
    assert_eq!(recovered.entries.len(), 1);
    assert!(recovered.entries.contains_key(kept.id()));
}

#[test]
fn after_a_failed_write_the_directory_is_reopened_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (index, queue, stats, thread) = start(dir.path(), Duration::from_millis(5));
    let lost = record();
    let done = put(&index, &queue, &lost).unwrap();
    assert!(done.blocking_recv().unwrap().is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.failure().is_some() {
        assert!(Instant::now() < deadline, "the store did not reopen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kept = record();
    let done = put(&index, &queue, &kept).unwrap();
    done.blocking_recv().unwrap().unwrap();
    assert!(matches!(index.durable(kept.id()), Some(Durable::Record(r)) if r == kept));
    let counted = stats.snapshot();
    assert_eq!(
        (counted.failed_batches, counted.batches, counted.writes),
        (1, 1, 1),
        "the failed batch and the one after the reopening: {counted:?}"
    );
    queue.stop();
    thread.join().unwrap();

    // The reopened directory is a snapshot and a new log after it.
    let names: Vec<String> = dir::SESSIONS
        .list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(_, path)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "log-0000000000000002.mcps",
            "snapshot-0000000000000002.mcps"
        ]
    );
    let recovered = recovery::recover(dir.path()).unwrap();
    assert_eq!(recovered.entries.len(), 1);
    assert!(recovered.entries.contains_key(kept.id()));
}
