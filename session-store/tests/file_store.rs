//! What only a `FileStore` promises: state across reopen, one opener per
//! directory, damage reported per session, torn tails dropped, compaction.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use session_core::{
    Cas, Error as CoreError, ManagerConfig, NewSession, SessionManager, SessionRecord,
    SessionStatus, SessionStore,
};
use session_store::testkit::cases::{T0, next, record};
use session_store::{Error, FileStore, FileStoreOptions, SystemClock};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    session_store::testkit::block_on(f)
}

fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
        .collect();
    logs.sort();
    logs
}

fn snapshots(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with("snapshot-")
                && name.to_str().unwrap().ends_with(".mcps")
        })
        .count()
}

/// Inserts `n` records and returns them.
async fn insert(store: &FileStore, n: usize) -> Vec<SessionRecord> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = record(T0);
        store.insert(&r).await.unwrap();
        out.push(r);
    }
    out
}

#[test]
fn reopen_returns_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (updated, closed, deleted, untouched) = block_on(async {
        let store = FileStore::open(dir.path()).unwrap();
        let rs = insert(&store, 4).await;
        let updated = next(&rs[0], T0, |w| {
            w.merge_state(
                serde_json::from_value(json!({"counter": 5, "lastTool": "list_nodes"})).unwrap(),
            )
        });
        assert_eq!(
            store.compare_and_swap(&updated, 1).await.unwrap(),
            Cas::Swapped
        );
        let closed = next(&rs[1], T0, |w| w.set_status(SessionStatus::Closed).unwrap());
        store.compare_and_swap(&closed, 1).await.unwrap();
        assert!(store.delete(rs[2].id()).await.unwrap());
        (updated, closed, rs[2].clone(), rs[3].clone())
    });
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().sessions, 3);
    assert!(store.recovery().corrupt.is_empty() && store.recovery().damage.is_empty());
    block_on(async {
        assert_eq!(store.load(updated.id()).await.unwrap(), Some(updated));
        assert_eq!(store.load(closed.id()).await.unwrap(), Some(closed));
        assert_eq!(store.load(deleted.id()).await.unwrap(), None);
        assert_eq!(store.load(untouched.id()).await.unwrap(), Some(untouched));
        assert_eq!(store.count().await.unwrap(), 2);
    });
}

#[test]
fn a_second_open_of_a_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStore::open(dir.path()).unwrap();
    let refused = FileStore::open(dir.path());
    assert!(matches!(&refused, Err(Error::Locked { .. })), "{refused:?}");
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("in use by another session store"),
        "{message}"
    );
    drop(first);
    FileStore::open(dir.path()).expect("the lock is released on close");
}

/// Flips one byte inside the newest record of `id` in the newest log.
fn damage_record(dir: &Path, id: &str) {
    let log = logs(dir).pop().unwrap();
    let mut bytes = fs::read(&log).unwrap();
    let at = bytes
        .windows(id.len())
        .rposition(|w| w == id.as_bytes())
        .unwrap();
    // Past the id in the frame header, inside the JSON payload.
    let target = at + id.len() + 10;
    bytes[target] ^= 0x20;
    fs::write(&log, bytes).unwrap();
}

#[test]
fn a_damaged_record_is_reported_for_its_session_only() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async { insert(&FileStore::open(dir.path()).unwrap(), 3).await });
    damage_record(dir.path(), rs[1].id().as_str());
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().corrupt, vec![rs[1].id().clone()]);
    block_on(async {
        assert_eq!(store.load(rs[0].id()).await.unwrap().as_ref(), Some(&rs[0]));
        assert_eq!(store.load(rs[2].id()).await.unwrap().as_ref(), Some(&rs[2]));
        let damaged = store.load(rs[1].id()).await;
        assert!(
            matches!(&damaged, Err(CoreError::Corrupt { id, .. }) if id == rs[1].id()),
            "{damaged:?}"
        );
        let page = store.list(None, 10).await.unwrap();
        assert_eq!(page.records.len(), 2, "a corrupt record is not listed");
        // Writing over the damage is refused; deleting it clears it.
        let v2 = next(&rs[1], T0, |_| {});
        assert!(matches!(
            store.compare_and_swap(&v2, 1).await,
            Err(CoreError::Corrupt { .. })
        ));
        assert!(store.delete(rs[1].id()).await.unwrap());
        assert_eq!(store.load(rs[1].id()).await.unwrap(), None);
    });
}

#[test]
fn damage_is_still_reported_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async { insert(&FileStore::open(dir.path()).unwrap(), 3).await });
    damage_record(dir.path(), rs[0].id().as_str());
    {
        let options = FileStoreOptions::default().compact_min_bytes(1);
        let store = FileStore::open_with(dir.path(), options).unwrap();
        // Rewriting one record makes the log outgrow twice the live data and
        // starts a compaction; closing the store waits for it.
        block_on(async {
            let mut current = insert(&store, 1).await.remove(0);
            for _ in 0..10 {
                let v = next(&current, T0, |_| {});
                store.compare_and_swap(&v, current.version()).await.unwrap();
                current = v;
            }
        });
    }
    assert_eq!(snapshots(dir.path()), 1);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().corrupt, vec![rs[0].id().clone()]);
    assert!(block_on(store.load(rs[0].id())).is_err());
    assert!(block_on(store.load(rs[1].id())).unwrap().is_some());
}

#[test]
fn a_torn_tail_is_dropped_and_the_log_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async { insert(&FileStore::open(dir.path()).unwrap(), 2).await });
    // Append the first 40 bytes of a copy of the first frame (which starts
    // after the 20-byte file header), as a crash mid-write would leave it.
    let log = logs(dir.path()).pop().unwrap();
    let bytes = fs::read(&log).unwrap();
    let torn = bytes[20..60].to_vec();
    let mut appended = bytes.clone();
    appended.extend_from_slice(&torn);
    fs::write(&log, &appended).unwrap();

    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().torn_bytes, torn.len() as u64);
    assert!(store.recovery().corrupt.is_empty());
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        bytes.len() as u64,
        "the tail is cut off"
    );
    let more = block_on(async {
        for r in &rs {
            assert_eq!(store.load(r.id()).await.unwrap().as_ref(), Some(r));
        }
        insert(&store, 1).await
    });
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().torn_bytes, 0);
    assert_eq!(store.recovery().sessions, 3);
    assert!(block_on(store.load(more[0].id())).unwrap().is_some());
}

#[test]
fn a_damaged_frame_header_mid_log_is_reported_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async { insert(&FileStore::open(dir.path()).unwrap(), 3).await });
    let log = logs(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&log).unwrap();
    let id = rs[1].id().as_str().as_bytes();
    let at = bytes.windows(id.len()).position(|w| w == id).unwrap();
    bytes[at] ^= 0x01; // the id is covered by the header checksum
    fs::write(&log, bytes).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert!(!store.recovery().damage.is_empty());
    block_on(async {
        assert!(store.load(rs[0].id()).await.unwrap().is_some());
        assert!(store.load(rs[2].id()).await.unwrap().is_some());
        assert!(store.load(rs[1].id()).await.unwrap().is_none());
    });
}

#[test]
fn compaction_keeps_the_state_and_retires_old_logs() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions::default().compact_min_bytes(16 << 10);
    let ids = block_on(async {
        let store = Arc::new(FileStore::open_with(dir.path(), options.clone()).unwrap());
        let manager = SessionManager::new(store, Arc::new(SystemClock), ManagerConfig::default());
        let mut ids = Vec::new();
        for i in 0..20 {
            let id = manager
                .create(NewSession::new())
                .await
                .unwrap()
                .id()
                .clone();
            for n in 0..=i {
                let patch = serde_json::from_value(json!({"n": n})).unwrap();
                manager.update_state(&id, patch).await.unwrap();
            }
            ids.push(id);
        }
        ids
    });
    assert_eq!(
        snapshots(dir.path()),
        1,
        "one snapshot replaces the old logs"
    );
    assert_eq!(logs(dir.path()).len(), 1, "old logs are removed");
    let store = FileStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.recovery().sessions, 20);
    block_on(async {
        for (i, id) in ids.iter().enumerate() {
            let r = store.load(id).await.unwrap().unwrap();
            assert_eq!(r.state()["n"], json!(i));
            assert_eq!(r.version(), i as u64 + 2);
        }
    });
}

#[test]
fn a_log_of_another_format_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path()).unwrap());
    let log = logs(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&log).unwrap();
    bytes[8] = 9; // format version
    let crc = crc32(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    fs::write(&log, bytes).unwrap();
    let err = FileStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("format version 9"), "{err}");
}

#[test]
fn remove_expired_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async {
        let store = FileStore::open(dir.path()).unwrap();
        let rs = insert(&store, 3).await;
        let removed = store
            .remove_expired(session_core::Timestamp::MAX, 2)
            .await
            .unwrap();
        assert_eq!(removed.len(), 2);
        rs
    });
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().sessions, 1);
    let present = rs
        .iter()
        .filter(|r| block_on(store.load(r.id())).unwrap().is_some())
        .count();
    assert_eq!(present, 1);
}

fn snapshot_path(dir: &Path) -> PathBuf {
    let mut found: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("snapshot-") && name.ends_with(".mcps")
        })
        .collect();
    assert_eq!(found.len(), 1, "one snapshot expected: {found:?}");
    found.pop().unwrap()
}

/// Writes `n` sessions, then compacts them into a snapshot (by rewriting one
/// more session until the log outgrows twice the live data) and closes the
/// store. The `n` sessions then live in the snapshot only.
fn sessions_in_a_snapshot(dir: &Path, n: usize) -> Vec<SessionRecord> {
    let rs = block_on(async { insert(&FileStore::open(dir).unwrap(), n).await });
    let options = FileStoreOptions::default().compact_min_bytes(1);
    let store = FileStore::open_with(dir, options).unwrap();
    block_on(async {
        let mut current = insert(&store, 1).await.remove(0);
        for _ in 0..10 {
            let v = next(&current, T0, |_| {});
            store.compare_and_swap(&v, current.version()).await.unwrap();
            current = v;
        }
    });
    drop(store);
    assert_eq!(snapshots(dir), 1);
    for log in logs(dir) {
        let bytes = fs::read(&log).unwrap();
        for r in &rs {
            assert!(
                !bytes.windows(32).any(|w| w == r.id().as_str().as_bytes()),
                "session {} should be in the snapshot only",
                r.id()
            );
        }
    }
    rs
}

/// Length of the commit frame that ends a snapshot: a 26-byte header, no id,
/// a 4-byte count.
const COMMIT_FRAME: usize = 30;

#[test]
fn damage_to_a_snapshot_commit_loses_only_the_damaged_session() {
    for damage in ["commit header", "truncated commit"] {
        let dir = tempfile::tempdir().unwrap();
        let rs = sessions_in_a_snapshot(dir.path(), 5);
        let path = snapshot_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        // One record's payload, as in a log...
        let id = rs[2].id().as_str().as_bytes();
        let at = bytes.windows(id.len()).position(|w| w == id).unwrap();
        bytes[at + id.len() + 10] ^= 0x20;
        // ...and the final commit frame, which made the whole snapshot
        // count as torn and be skipped, losing every session in it.
        let commit = bytes.len() - COMMIT_FRAME;
        match damage {
            "commit header" => bytes[commit + 8] ^= 0x01,
            _ => bytes.truncate(commit + 12),
        }
        fs::write(&path, bytes).unwrap();

        let store = FileStore::open(dir.path()).unwrap();
        let report = store.recovery();
        assert_eq!(report.corrupt, vec![rs[2].id().clone()], "{damage}");
        assert!(
            report.damage.iter().any(|d| d.contains("snapshot")),
            "{damage}: the snapshot's damage is reported: {:?}",
            report.damage
        );
        block_on(async {
            for (i, r) in rs.iter().enumerate() {
                let loaded = store.load(r.id()).await;
                if i == 2 {
                    assert!(
                        matches!(&loaded, Err(CoreError::Corrupt { id, .. }) if id == r.id()),
                        "{damage}: {loaded:?}"
                    );
                } else {
                    assert_eq!(loaded.unwrap().as_ref(), Some(r), "{damage}: session {i}");
                }
            }
            // The store goes on: new writes are durable beside the damage.
            let more = insert(&store, 1).await;
            drop(store);
            let store = FileStore::open(dir.path()).unwrap();
            assert!(store.load(more[0].id()).await.unwrap().is_some());
            assert!(store.load(rs[0].id()).await.unwrap().is_some());
        });
    }
}

#[test]
fn clear_all_removes_corrupt_records_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let rs = block_on(async { insert(&FileStore::open(dir.path()).unwrap(), 3).await });
    damage_record(dir.path(), rs[1].id().as_str());
    {
        let store = Arc::new(FileStore::open(dir.path()).unwrap());
        assert_eq!(store.recovery().corrupt, vec![rs[1].id().clone()]);
        block_on(async {
            assert_eq!(
                store.list_corrupt(10).await.unwrap(),
                vec![rs[1].id().clone()]
            );
            let manager = SessionManager::new(
                store.clone(),
                Arc::new(SystemClock),
                ManagerConfig::default(),
            );
            assert_eq!(manager.clear_all().await.unwrap(), 3);
            assert!(store.list_corrupt(10).await.unwrap().is_empty());
            assert_eq!(store.load(rs[1].id()).await.unwrap(), None);
        });
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert!(store.recovery().corrupt.is_empty(), "the delete is durable");
    assert_eq!(store.recovery().sessions, 0);
}

#[test]
fn a_record_too_large_to_read_back_is_refused_before_it_is_written() {
    assert_eq!(
        FileStoreOptions::default().max_record_bytes,
        256 << 20,
        "by default a write may store exactly what a reader accepts"
    );
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions::default().max_record_bytes(1024);
    let big = || serde_json::from_value(json!({"blob": "x".repeat(2048)})).unwrap();
    let small = {
        let store = FileStore::open_with(dir.path(), options.clone()).unwrap();
        block_on(async {
            let huge = SessionRecord::create(
                session_core::SessionId::generate(),
                NewSession::new().state(big()),
                T0,
                session_core::ExpiryPolicy::default(),
            );
            assert!(matches!(
                store.insert(&huge).await,
                Err(CoreError::RecordTooLarge { limit: 1024, size }) if size > 2048
            ));
            assert_eq!(store.load(huge.id()).await.unwrap(), None);
            let small = insert(&store, 1).await.remove(0);
            let grown = next(&small, T0, |w| w.merge_state(big()));
            assert!(matches!(
                store.compare_and_swap(&grown, 1).await,
                Err(CoreError::RecordTooLarge { .. })
            ));
            assert_eq!(store.load(small.id()).await.unwrap().as_ref(), Some(&small));
            small
        })
    };
    let store = FileStore::open_with(dir.path(), options).unwrap();
    assert!(store.recovery().damage.is_empty() && store.recovery().corrupt.is_empty());
    assert_eq!(store.recovery().sessions, 1);
    assert_eq!(block_on(store.load(small.id())).unwrap(), Some(small));
}

/// CRC-32 (IEEE), bit by bit: enough for a test fixture.
#[test]
fn a_busy_log_gets_zeros_written_ahead_and_reopens_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let blob = "x".repeat(8 << 10);
    let written: Vec<SessionRecord> = block_on(async {
        let store = FileStore::open(dir.path()).unwrap();
        let mut written = Vec::new();
        // 1.6 MB of records: past the length from which the log is
        // reserved ahead.
        for n in 0..200 {
            let state = serde_json::from_value(json!({"blob": blob, "n": n})).unwrap();
            let r = SessionRecord::create(
                session_core::SessionId::generate(),
                NewSession::new().state(state),
                T0,
                session_core::ExpiryPolicy::default(),
            );
            store.insert(&r).await.unwrap();
            written.push(r);
        }
        written
    });
    let log = logs(dir.path()).pop().unwrap();
    let bytes = fs::read(&log).unwrap();
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(
        bytes.len() - data_end >= 256 << 10,
        "zeros stand ahead of the log's end: {} bytes of {}",
        bytes.len() - data_end,
        bytes.len()
    );

    let store = FileStore::open(dir.path()).unwrap();
    let report = store.recovery();
    assert_eq!(report.sessions, written.len());
    assert_eq!(report.torn_bytes, 0, "reserved zeros are not a torn write");
    assert!(
        report.damage.is_empty() && report.corrupt.is_empty(),
        "{report:?}"
    );
    assert!(
        fs::metadata(&log).unwrap().len() < data_end as u64 + 64,
        "reopening truncates the zeros"
    );
    block_on(async {
        for r in &written {
            assert_eq!(store.load(r.id()).await.unwrap().as_ref(), Some(r));
        }
        // The log goes on after them.
        let more = insert(&store, 3).await;
        drop(store);
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().sessions, written.len() + 3);
        assert!(store.recovery().damage.is_empty());
        for r in &more {
            assert_eq!(store.load(r.id()).await.unwrap().as_ref(), Some(r));
        }
    });
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
