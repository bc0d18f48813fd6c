//! Opening a directory: load the newest snapshot, replay the logs after it,
//! drop an unacknowledged tail, and report damage per session.
//!
//! A snapshot is synced before it is renamed into place, so one that is there
//! was written whole: damage inside it (even to its final commit frame) is
//! damage, not a torn write. Its readable records are used and the damaged
//! ones reported, session by session. Only when the older snapshot and every
//! log since it are still on disk (a crash before compaction removed them) is
//! that complete older state used instead.
//!
//! Frames are checked (checksums, commits) as they are scanned, but a record
//! is decoded only once the scan is over and only if it is its session's
//! last: a log may hold twice the live data, and most of its records are
//! superseded. The files stay in memory until then, and the surviving
//! records are decoded on all cores.

use std::collections::BTreeSet;

use foldhash::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{SessionId, SessionRecord};

use super::dir::{self, Entry};
use super::frame::{self, FileKind, FrameKind, HeaderError, Read};
use super::index::Durable;
use crate::Error;

/// What opening a [`FileStore`](crate::FileStore) directory found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Sessions loaded, including damaged ones.
    pub sessions: usize,
    /// Sessions whose latest record failed its checksum or did not decode.
    /// Loading them returns [`session_core::Error::Corrupt`]; the rest load.
    pub corrupt: Vec<SessionId>,
    /// Damage that could not be tied to one session, as readable lines.
    pub damage: Vec<String>,
    /// Bytes of an unacknowledged batch at the end of the log, dropped.
    pub torn_bytes: u64,
    /// Log and snapshot files read.
    pub files: usize,
    /// Time spent recovering.
    pub elapsed: Duration,
}

/// The recovered state, ready to build the index from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) entries: HashMap<SessionId, (Durable, u64)>,
    pub(crate) report: RecoveryReport,
    /// Number of the snapshot used, if any.
    pub(crate) snapshot: Option<u64>,
    /// Number and valid length of the newest log, if any.
    pub(crate) log: Option<(u64, u64)>,
    pub(crate) last_batch: u64,
}

/// One frame's effect on the state.
#[derive(Debug)]
enum Effect {
    Put(SessionId, Undecoded, u64),
    Delete(SessionId),
    Corrupt(SessionId, String, u64),
}

/// A record found in a file and not decoded yet: where its payload is.
#[derive(Debug, Clone)]
struct Undecoded {
    /// Index into [`Replay::files`].
    file: usize,
    /// The frame's offset, for messages.
    at: usize,
    /// The payload's bytes within the file.
    payload: std::ops::Range<usize>,
}

/// A session's latest state during the scan.
#[derive(Debug)]
enum Found {
    Record(Undecoded),
    Corrupt(Arc<str>),
}

#[derive(Debug, Default)]
struct Replay {
    entries: HashMap<SessionId, (Found, u64)>,
    /// The files scanned, by name, kept until their records are decoded.
    files: Vec<(String, Vec<u8>)>,
    report: RecoveryReport,
    last_batch: u64,
}

/// Reads the directory's snapshot and logs.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, Error> {
    let started = Instant::now();
    let mut snapshots = Vec::new();
    let mut logs = Vec::new();
    for (entry, path) in dir::SESSIONS.list(dir)? {
        match entry {
            Entry::Snapshot(n) => snapshots.push((n, path)),
            Entry::Log(n) => logs.push((n, path)),
            Entry::Temp => {}
        }
    }
    let log_numbers: BTreeSet<u64> = logs.iter().map(|(n, _)| *n).collect();
    let mut replay = Replay::default();
    let mut snapshot = None;
    for (i, (n, path)) in snapshots.iter().enumerate().rev() {
        let bytes = read(path)?;
        check_header(&bytes, path, FileKind::Snapshot)?;
        let mut attempt = Replay::default();
        let outcome = attempt.file(bytes, path, Tail::Snapshot);
        attempt.report.files = replay.report.files + 1;
        if outcome.complete || !older_state_intact(&snapshots[..i], *n, &log_numbers) {
            let mut damage = std::mem::take(&mut replay.report.damage);
            damage.append(&mut attempt.report.damage);
            attempt.report.damage = damage;
            replay = attempt;
            snapshot = Some(*n);
            break;
        }
        replay.report.files = attempt.report.files;
        replay.report.damage.append(&mut attempt.report.damage);
        replay.report.damage.push(format!(
            "{}: snapshot damaged; the older snapshot and the logs since it are used",
            path.display()
        ));
    }
    let base = snapshot.unwrap_or(0);
    let logs: Vec<_> = logs.into_iter().filter(|(n, _)| *n >= base).collect();
    let mut log = None;
    for (i, (n, path)) in logs.iter().enumerate() {
        let bytes = read(path)?;
        if i == 0 {
            // Room for about as many sessions as the first log could hold
            // (a record frame is a few hundred bytes), so the map does not
            // regrow and rehash all the way up.
            replay.entries.reserve((bytes.len() / 512).min(1 << 22));
        }
        check_header(&bytes, path, FileKind::Log)?;
        let last = i + 1 == logs.len();
        let tail = if last { Tail::Drop } else { Tail::Log };
        // Zeros the committer wrote ahead of the log's end are not a torn
        // write; what lies between the last commit and them is.
        let data_end = crate::reserve::data_end(&bytes);
        let outcome = replay.file(bytes, path, tail);
        replay.report.files += 1;
        if last {
            replay.report.torn_bytes = data_end.saturating_sub(outcome.valid_end) as u64;
            log = Some((*n, outcome.valid_end as u64));
        }
    }
    let entries = decode(replay.entries, &replay.files);
    drop(replay.files);
    let mut report = replay.report;
    report.sessions = entries.len();
    report.corrupt = entries
        .iter()
        .filter(|(_, (d, _))| matches!(d, Durable::Corrupt(_)))
        .map(|(id, _)| id.clone())
        .collect();
    report.corrupt.sort();
    report.elapsed = started.elapsed();
    Ok(Recovered {
        entries,
        report,
        snapshot,
        log,
        last_batch: replay.last_batch,
    })
}

/// Whether the state before snapshot `n` can be rebuilt in full from the
/// files still on disk: the next older snapshot (or none, when the logs start
/// at 1) and every log from it up to `n`. Compaction removes old logs in
/// order, so a crash while removing them leaves a gap this catches.
fn older_state_intact(older: &[(u64, PathBuf)], n: u64, logs: &BTreeSet<u64>) -> bool {
    let base = older.last().map_or(1, |(m, _)| *m);
    (base..n).all(|k| logs.contains(&k))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// Refuses files of another format version; damage to a header is left to the
/// frame scan, which does not depend on it.
fn check_header(bytes: &[u8], path: &Path, kind: FileKind) -> Result<(), Error> {
    match frame::check_file_header(bytes, kind) {
        Err(HeaderError::Version(v)) => Err(Error::Format {
            path: path.to_path_buf(),
            detail: format!(
                "written in format version {v}; this build reads version {}",
                frame::FORMAT_VERSION
            ),
        }),
        Err(HeaderError::Kind) => Err(Error::Format {
            path: path.to_path_buf(),
            detail: "file kind does not match its name".into(),
        }),
        Err(HeaderError::Damaged) | Ok(()) => Ok(()),
    }
}

/// What to do with the frames after a file's last intact commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// The newest log: a batch without its commit was never acknowledged.
    /// It is dropped.
    Drop,
    /// An older log: later logs prove its batches were acknowledged. Applied.
    Log,
    /// A snapshot: synced before it was renamed into place, so it was
    /// written whole and what is readable is applied.
    Snapshot,
}

/// How a file ended.
struct Outcome {
    /// Offset just past the last applied batch.
    valid_end: usize,
    /// Whether the file ended exactly at a commit (or at a commit followed
    /// only by zeros).
    complete: bool,
}

impl Replay {
    /// Replays one file; `tail` says what to do with frames after its last
    /// intact commit.
    fn file(&mut self, bytes: Vec<u8>, path: &Path, tail: Tail) -> Outcome {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let number = self.files.len();
        let outcome = self.scan(&bytes, number, &name, tail);
        self.files.push((name, bytes));
        outcome
    }

    /// [`file`](Self::file) on the bytes of file `number`.
    fn scan(&mut self, bytes: &[u8], number: usize, name: &str, tail: Tail) -> Outcome {
        let mut pos = frame::FILE_HEADER_LEN.min(bytes.len());
        let mut valid_end = pos;
        let mut batch: Vec<Effect> = Vec::new();
        let mut batch_id: Option<u64> = None;
        // Damage noticed since the last commit; reported only if the batch is.
        let mut damage: Vec<String> = Vec::new();
        let mut zero_tail = false;
        while pos < bytes.len() {
            match frame::read_frame(bytes, pos) {
                Read::Frame(f, next) if f.kind == FrameKind::Commit => {
                    let count = <[u8; 4]>::try_from(f.payload)
                        .ok()
                        .filter(|_| f.payload_ok)
                        .map(u32::from_le_bytes);
                    if batch_id.is_some_and(|b| b != f.batch) {
                        damage.push(format!("{name}@{pos}: commit of batch {} missing", f.batch));
                    } else if count != Some(batch.len() as u32) {
                        damage.push(format!(
                            "{name}@{pos}: batch {} holds {} readable frames, its commit says {count:?}; the others could not be tied to a session",
                            f.batch,
                            batch.len()
                        ));
                    }
                    self.last_batch = self.last_batch.max(f.batch);
                    self.apply(&mut batch, &mut damage);
                    batch_id = None;
                    valid_end = next;
                    pos = next;
                }
                Read::Frame(f, next) => {
                    if let Some(previous) = batch_id.filter(|b| *b != f.batch) {
                        damage.push(format!(
                            "{name}@{pos}: commit of batch {previous} missing, applied since later batches follow"
                        ));
                        self.last_batch = self.last_batch.max(previous);
                        self.apply(&mut batch, &mut damage);
                    }
                    batch_id = Some(f.batch);
                    let at = FrameAt {
                        file: number,
                        name,
                        bytes,
                        at: pos,
                        next,
                    };
                    if let Some(effect) = effect(&f, &at, &mut damage) {
                        batch.push(effect);
                    }
                    pos = next;
                }
                // Zeros written ahead of the log's end (the committer's
                // reservation): the log ends here.
                Read::Truncated | Read::Damaged if bytes[pos..].iter().all(|&b| b == 0) => {
                    zero_tail = true;
                    break;
                }
                Read::Truncated => break,
                Read::Damaged => match frame::resync(bytes, pos) {
                    Some(next) => {
                        damage.push(format!(
                            "{name}@{pos}: {} unreadable bytes skipped",
                            next - pos
                        ));
                        pos = next;
                    }
                    None => break,
                },
            }
        }
        let complete = batch.is_empty() && (pos == bytes.len() || zero_tail);
        if !complete && tail != Tail::Drop {
            damage.push(match tail {
                Tail::Snapshot => format!(
                    "{name}: snapshot ends without an intact commit; its readable records are used"
                ),
                _ => format!("{name}: ends without a commit, applied since later logs follow"),
            });
            if let Some(b) = batch_id {
                self.last_batch = self.last_batch.max(b);
            }
            self.apply(&mut batch, &mut damage);
            valid_end = bytes.len();
        }
        Outcome {
            valid_end,
            complete,
        }
    }

    fn apply(&mut self, batch: &mut Vec<Effect>, damage: &mut Vec<String>) {
        for effect in batch.drain(..) {
            match effect {
                Effect::Put(id, record, bytes) => {
                    self.entries.insert(id, (Found::Record(record), bytes));
                }
                Effect::Delete(id) => {
                    self.entries.remove(&id);
                }
                Effect::Corrupt(id, detail, bytes) => {
                    tracing::warn!(session = %id, "{detail}");
                    self.entries
                        .insert(id, (Found::Corrupt(Arc::from(detail.as_str())), bytes));
                }
            }
        }
        for line in damage.drain(..) {
            tracing::warn!("{line}");
            self.report.damage.push(line);
        }
    }
}

/// Where a frame is: in which file, at which offset, up to where.
struct FrameAt<'a> {
    file: usize,
    name: &'a str,
    bytes: &'a [u8],
    at: usize,
    next: usize,
}

/// What a frame does, or `None` (with a damage note) if it names no session.
fn effect(f: &frame::Frame<'_>, place: &FrameAt<'_>, damage: &mut Vec<String>) -> Option<Effect> {
    let (file, at) = (place.name, place.at);
    let Some(id) = std::str::from_utf8(f.id)
        .ok()
        .and_then(|s| SessionId::parse(s).ok())
    else {
        damage.push(format!("{file}@{at}: frame with an invalid session id"));
        return None;
    };
    let bytes = (place.next - at) as u64;
    Some(match f.kind {
        FrameKind::Put if !f.payload_ok => {
            Effect::Corrupt(id, format!("{file}@{at}: record checksum mismatch"), bytes)
        }
        FrameKind::Put => {
            // The payload is a slice of the file: its offset is the distance
            // between the two starts.
            let start = f.payload.as_ptr() as usize - place.bytes.as_ptr() as usize;
            let undecoded = Undecoded {
                file: place.file,
                at,
                payload: start..start + f.payload.len(),
            };
            Effect::Put(id, undecoded, bytes)
        }
        FrameKind::Delete => Effect::Delete(id),
        FrameKind::Corrupt => {
            Effect::Corrupt(id, String::from_utf8_lossy(f.payload).into_owned(), bytes)
        }
        FrameKind::Commit => return None,
    })
}

/// Decodes each session's last record, on all cores: the sessions are
/// split into one share per core.
fn decode(
    entries: HashMap<SessionId, (Found, u64)>,
    files: &[(String, Vec<u8>)],
) -> HashMap<SessionId, (Durable, u64)> {
    let entries: Vec<(SessionId, (Found, u64))> = entries.into_iter().collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below this, threads cost more than they save.
    let threads = cores.min(entries.len() / 4096).max(1);
    let share = entries.len().div_ceil(threads).max(1);
    let mut decoded = HashMap::default();
    decoded.reserve(entries.len());
    if threads == 1 {
        decoded.extend(entries.into_iter().map(|e| decode_one(e, files)));
        return decoded;
    }
    let mut shares: Vec<Vec<(SessionId, (Found, u64))>> = Vec::with_capacity(threads);
    let mut rest = entries;
    while rest.len() > share {
        let tail = rest.split_off(rest.len() - share);
        shares.push(tail);
    }
    shares.push(rest);
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|e| decode_one(e, files))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            // A decoder does not panic on bad input; if one did, the
            // panic is passed on rather than losing its sessions.
            let part = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            decoded.extend(part);
        }
    });
    decoded
}

fn decode_one(
    (id, (found, bytes)): (SessionId, (Found, u64)),
    files: &[(String, Vec<u8>)],
) -> (SessionId, (Durable, u64)) {
    let durable = match found {
        Found::Corrupt(detail) => Durable::Corrupt(detail),
        Found::Record(undecoded) => {
            let (name, data) = &files[undecoded.file];
            let at = undecoded.at;
            match serde_json::from_slice::<SessionRecord>(&data[undecoded.payload]) {
                Ok(record) if record.id() == &id => Durable::Record(record),
                Ok(_) => corrupt(
                    &id,
                    format!("{name}@{at}: record holds another session's id"),
                ),
                Err(e) => corrupt(&id, format!("{name}@{at}: record does not decode: {e}")),
            }
        }
    };
    (id, (durable, bytes))
}

fn corrupt(id: &SessionId, detail: String) -> Durable {
    tracing::warn!(session = %id, "{detail}");
    Durable::Corrupt(Arc::from(detail.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{ExpiryPolicy, NewSession, Timestamp};

    fn record(id: &SessionId) -> SessionRecord {
        SessionRecord::create(
            id.clone(),
            NewSession::new(),
            Timestamp::from_millis(1_000),
            ExpiryPolicy::default(),
        )
    }

    /// A log of one batch holding `frames` (id, payload).
    fn write_log(dir: &Path, frames: &[(&SessionId, Vec<u8>)]) {
        let mut bytes = frame::file_header(FileKind::Log).to_vec();
        for (id, payload) in frames {
            let crc = crc32fast::hash(payload);
            frame::encode_frame(&mut bytes, FrameKind::Put, id.as_str(), 1, payload, crc);
        }
        frame::encode_commit(&mut bytes, 1, frames.len());
        fs::write(dir::SESSIONS.log_path(dir, 1), bytes).unwrap();
    }

    /// The bytes of log `n`: batch `n` holding a record of each of `ids`,
    /// then `torn` (a batch cut short), then `zeros` zero bytes.
    fn log_bytes(n: u64, ids: &[&SessionId], torn: &[u8], zeros: usize) -> Vec<u8> {
        let mut bytes = frame::file_header(FileKind::Log).to_vec();
        for id in ids {
            let payload = serde_json::to_vec(&record(id)).unwrap();
            let crc = crc32fast::hash(&payload);
            frame::encode_frame(&mut bytes, FrameKind::Put, id.as_str(), n, &payload, crc);
        }
        frame::encode_commit(&mut bytes, n, ids.len());
        bytes.extend_from_slice(torn);
        bytes.resize(bytes.len() + zeros, 0);
        bytes
    }

    #[test]
    fn zeros_after_the_last_commit_end_a_log_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            SessionId::generate(),
            SessionId::generate(),
            SessionId::generate(),
        );
        // An older log and the newest, each with zeros reserved after its
        // last commit (the older one when the committer moved on to a new
        // log at a compaction).
        fs::write(
            dir::SESSIONS.log_path(dir.path(), 1),
            log_bytes(1, &[&a, &b], &[], 1 << 16),
        )
        .unwrap();
        let newest = log_bytes(2, &[&c], &[], 1 << 16);
        let valid = newest.len() - (1 << 16);
        fs::write(dir::SESSIONS.log_path(dir.path(), 2), newest).unwrap();
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.report.sessions, 3);
        assert_eq!(recovered.report.torn_bytes, 0);
        assert!(
            recovered.report.damage.is_empty(),
            "{:?}",
            recovered.report.damage
        );
        assert_eq!(recovered.log, Some((2, valid as u64)));
    }

    #[test]
    fn a_batch_torn_over_reserved_zeros_is_dropped_and_counted_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        // Batch 2 was being written over the zeros when the process died:
        // one frame of it made it, its commit did not.
        let mut torn = Vec::new();
        let payload = serde_json::to_vec(&record(&b)).unwrap();
        let crc = crc32fast::hash(&payload);
        frame::encode_frame(&mut torn, FrameKind::Put, b.as_str(), 2, &payload, crc);
        let bytes = log_bytes(1, &[&a], &torn, 1 << 16);
        let valid = bytes.len() - torn.len() - (1 << 16);
        fs::write(dir::SESSIONS.log_path(dir.path(), 1), bytes).unwrap();
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.report.sessions, 1);
        assert!(recovered.entries.contains_key(&a));
        assert_eq!(recovered.report.torn_bytes, torn.len() as u64);
        assert_eq!(recovered.log, Some((1, valid as u64)));
    }

    #[test]
    fn only_each_sessions_last_record_is_decoded_and_judged() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        let json = |r: &SessionRecord| serde_json::to_vec(r).unwrap();
        write_log(
            dir.path(),
            &[
                // Superseded garbage does not count against its session.
                (&ids[0], b"not a record".to_vec()),
                (&ids[0], json(&record(&ids[0]))),
                // The latest record is another session's.
                (&ids[1], json(&record(&ids[3]))),
                // The latest record does not decode (its checksum is fine).
                (&ids[2], json(&record(&ids[2]))),
                (&ids[2], b"{\"id\": 7}".to_vec()),
            ],
        );
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.report.sessions, 3);
        assert!(matches!(
            &recovered.entries[&ids[0]].0,
            Durable::Record(r) if r.id() == &ids[0]
        ));
        let detail = |id: &SessionId| match &recovered.entries[id].0 {
            Durable::Corrupt(detail) => detail.to_string(),
            Durable::Record(_) => panic!("{id} decoded"),
        };
        assert!(detail(&ids[1]).contains("another session's id"));
        assert!(detail(&ids[2]).contains("does not decode"));
        let mut corrupt = vec![ids[1].clone(), ids[2].clone()];
        corrupt.sort();
        assert_eq!(recovered.report.corrupt, corrupt);
    }

    #[test]
    fn many_sessions_are_decoded_in_shares_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<SessionId> = (0..10_000).map(|_| SessionId::generate()).collect();
        let payloads: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| serde_json::to_vec(&record(id)).unwrap())
            .collect();
        let frames: Vec<(&SessionId, Vec<u8>)> = ids.iter().zip(payloads).collect();
        write_log(dir.path(), &frames);
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.entries.len(), ids.len());
        for id in &ids {
            assert!(
                matches!(&recovered.entries[id].0, Durable::Record(r) if r.id() == id),
                "{id}"
            );
        }
        assert!(recovered.report.corrupt.is_empty());
    }

    fn logs(numbers: &[u64]) -> BTreeSet<u64> {
        numbers.iter().copied().collect()
    }

    #[test]
    fn an_older_state_counts_only_with_every_log_since_it() {
        let snapshot = |m: u64| (m, PathBuf::from(format!("snapshot-{m}")));
        // No older snapshot: the logs must run from 1.
        assert!(older_state_intact(&[], 4, &logs(&[1, 2, 3, 4])));
        assert!(!older_state_intact(&[], 4, &logs(&[2, 3, 4])));
        // An older snapshot: every log from it up to the damaged one.
        assert!(older_state_intact(&[snapshot(2)], 4, &logs(&[2, 3, 4])));
        assert!(!older_state_intact(&[snapshot(2)], 4, &logs(&[3, 4])));
        assert!(!older_state_intact(&[snapshot(2)], 4, &logs(&[4])));
    }
}
