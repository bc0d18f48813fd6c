//! Opening a directory: load the newest snapshot, replay the logs after it,
//! drop an unfinished tail, report (and skip) damaged frames.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{SessionId, StreamId};

use super::files::{self, Entry};
use super::format::{self, FileKind, FrameKind, HeaderError, Read};
use super::state::{Replayed, State};
use crate::Error;

/// What opening a [`FileEventStore`](super::FileEventStore) directory found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EventRecoveryReport {
    /// Sessions with events.
    pub sessions: usize,
    /// Streams known.
    pub streams: usize,
    /// Events retained (and replayable).
    pub events: usize,
    /// Damage found and skipped, as readable lines (`file@offset: what`). A
    /// damaged event is never returned: the stream resumes only after it.
    pub damage: Vec<String>,
    /// Bytes of an unfinished write at the end of the log, dropped. Such a
    /// write was never acknowledged.
    pub torn_bytes: u64,
    /// Log and snapshot files read.
    pub files: usize,
    /// Time spent recovering.
    pub elapsed: Duration,
}

/// What [`recover`] found besides the state.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) report: EventRecoveryReport,
    /// Number of the snapshot loaded, if any.
    pub(super) snapshot: Option<u64>,
    /// Number and valid length of the newest log, if any, and whether its
    /// header is intact.
    pub(super) log: Option<(u64, u64, bool)>,
}

/// Reads the directory into `state`.
pub(super) fn recover(dir: &Path, state: &State) -> Result<Recovered, Error> {
    let started = Instant::now();
    let mut snapshot = None;
    let mut logs = Vec::new();
    for (entry, path) in files::EVENTS.list(dir)? {
        match entry {
            // Sorted: the last one wins. A snapshot is renamed into place
            // only once complete and synced.
            Entry::Snapshot(n) => snapshot = Some((n, path)),
            Entry::Log(n) => logs.push((n, path)),
            Entry::Temp => {}
        }
    }
    let mut report = EventRecoveryReport::default();
    let base = snapshot.as_ref().map_or(0, |(n, _)| *n);
    if let Some((_, path)) = &snapshot {
        let bytes = read(path)?;
        check_header(&bytes, path, FileKind::Snapshot, &mut report)?;
        let end = scan(&bytes, path, state, &mut report);
        report.files += 1;
        if end < bytes.len() {
            report.damage.push(format!(
                "{}: {} unreadable bytes at the end",
                name(path),
                bytes.len() - end
            ));
        }
    }
    let logs: Vec<_> = logs.into_iter().filter(|(n, _)| *n >= base).collect();
    let mut newest = None;
    for (i, (n, path)) in logs.iter().enumerate() {
        let bytes = read(path)?;
        let intact = check_header(&bytes, path, FileKind::Log, &mut report)?;
        let end = scan(&bytes, path, state, &mut report);
        report.files += 1;
        // Zeros the commit thread wrote ahead of the log's end are neither
        // torn nor damaged.
        let data_end = crate::reserve::data_end(&bytes).max(end);
        if i + 1 == logs.len() {
            report.torn_bytes = (data_end - end) as u64;
            newest = Some((*n, end as u64, intact));
        } else if end < data_end {
            report.damage.push(format!(
                "{}@{end}: {} unreadable bytes at the end",
                name(path),
                data_end - end
            ));
        }
    }
    for line in &report.damage {
        tracing::warn!(dir = %dir.display(), "event store damage: {line}");
    }
    let counts = state.counts();
    report.sessions = counts.sessions;
    report.streams = counts.streams;
    report.events = counts.events;
    report.elapsed = started.elapsed();
    Ok(Recovered {
        report,
        snapshot: snapshot.map(|(n, _)| n),
        log: newest,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| Error::io("read", path, e))
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Refuses files of another format version or kind; a damaged header is
/// reported and the frames are read anyway (they do not depend on it).
/// Returns whether the header is intact.
fn check_header(
    bytes: &[u8],
    path: &Path,
    kind: FileKind,
    report: &mut EventRecoveryReport,
) -> Result<bool, Error> {
    match format::check_file_header(bytes, kind) {
        Ok(()) => Ok(true),
        Err(HeaderError::Version(v)) => Err(Error::Format {
            path: path.to_path_buf(),
            detail: format!(
                "written in event format version {v}; this build reads version {}",
                format::FORMAT_VERSION
            ),
        }),
        Err(HeaderError::Kind) => Err(Error::Format {
            path: path.to_path_buf(),
            detail: "file kind does not match its name".into(),
        }),
        Err(HeaderError::Damaged) => {
            if bytes.len() >= format::FILE_HEADER_LEN {
                report
                    .damage
                    .push(format!("{}: file header damaged", name(path)));
            }
            Ok(false)
        }
    }
}

/// Applies every intact frame of one file; returns the offset just past the
/// last one. Damage is reported only when an intact frame follows it: damage
/// at the very end is an unfinished write, the caller's to judge.
fn scan(bytes: &[u8], path: &Path, state: &State, report: &mut EventRecoveryReport) -> usize {
    let file = name(path);
    let mut pos = format::FILE_HEADER_LEN.min(bytes.len());
    let mut end = pos;
    let mut skipped = Vec::new();
    while pos < bytes.len() {
        match format::read_frame(bytes, pos) {
            Read::Frame(frame, next) => {
                report.damage.append(&mut skipped);
                apply(&frame, &file, pos, state, &mut report.damage);
                end = next;
                pos = next;
            }
            Read::Truncated => break,
            Read::Damaged => match format::resync(bytes, pos) {
                Some(next) => {
                    skipped.push(format!(
                        "{file}@{pos}: {} unreadable bytes skipped (a frame whose header is damaged)",
                        next - pos
                    ));
                    pos = next;
                }
                None => break,
            },
        }
    }
    end
}

/// Applies one intact-header frame.
fn apply(
    frame: &format::Frame<'_>,
    file: &str,
    at: usize,
    state: &State,
    damage: &mut Vec<String>,
) {
    let Some(session) = std::str::from_utf8(frame.session)
        .ok()
        .and_then(|s| SessionId::parse(s).ok())
    else {
        damage.push(format!(
            "{file}@{at}: frame with an invalid session id, skipped"
        ));
        return;
    };
    let stream = || {
        std::str::from_utf8(frame.stream)
            .ok()
            .and_then(StreamId::parse)
    };
    let mut shard = state.lock(&session);
    match frame.kind {
        FrameKind::Event | FrameKind::Mark | FrameKind::Start => {
            let Some(stream) = stream() else {
                damage.push(format!(
                    "{file}@{at}: frame with an invalid stream id, skipped"
                ));
                return;
            };
            let data = std::str::from_utf8(frame.data)
                .ok()
                .filter(|_| frame.data_ok);
            match (frame.kind, data) {
                (FrameKind::Event, Some(data)) => {
                    match shard.replay_event(&session, &stream, frame.seq, Arc::from(data)) {
                        Replayed::Applied => {}
                        // After a frame lost to damage (reported where it
                        // was found), or bounds smaller than when written.
                        Replayed::Gap { expected } => tracing::debug!(
                            "{file}@{at}: {stream}_{} of session {session} follows a gap \
                             (expected {expected}); it resumes only from here",
                            frame.seq
                        ),
                        Replayed::Stale { last } => damage.push(format!(
                            "{file}@{at}: event {stream}_{} of session {session} is not after {last}, skipped",
                            frame.seq
                        )),
                    }
                }
                (FrameKind::Event, None) => {
                    damage.push(format!(
                        "{file}@{at}: event {stream}_{} of session {session} fails its checksum; \
                         the stream resumes only after it",
                        frame.seq
                    ));
                    shard.replay_mark(&session, &stream, frame.seq);
                }
                (FrameKind::Start, _) => shard.replay_start(&session, &stream, frame.seq),
                _ => shard.replay_mark(&session, &stream, frame.seq),
            }
        }
        FrameKind::Floor => shard.replay_floor(&session, frame.seq),
        FrameKind::Remove => {
            shard.remove(&session);
        }
    }
}
