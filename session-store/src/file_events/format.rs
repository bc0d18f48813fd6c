//! The on-disk format of a [`FileEventStore`](super::FileEventStore): a file
//! header, then self-checking frames.
//!
//! ```text
//! file   := header frame*
//! header := "MCPEVENT" version:u32 kind:u8 0 0 0 crc:u32             (20 bytes)
//! frame  := 0xFF "EVF" kind:u8 sid_len:u8 stream_len:u8 0:u8 seq:u64 len:u32
//!           data_crc:u32 header_crc:u32 session[sid_len] stream[stream_len]
//!           data[len]                                        (28 + ids + data)
//! ```
//!
//! Integers are little-endian, checksums CRC-32 (IEEE). `header_crc` covers
//! `kind..data_crc` and both ids, so a frame whose data is damaged still says
//! which event it was (the event becomes a known gap instead of vanishing).
//! The frame magic starts with 0xFF, which never occurs in UTF-8: it cannot
//! appear inside the JSON data, and a reader that meets damage scans forward
//! for it. Every frame stands alone; there are no batches to commit, because
//! events do not depend on each other.

use crc32fast::Hasher;

use crate::container;

/// Magic at the start of every file.
const FILE_MAGIC: &[u8; 8] = b"MCPEVENT";
/// Version of this format.
pub(super) const FORMAT_VERSION: u32 = 1;
pub(super) use crate::container::{FILE_HEADER_LEN, HeaderError};
/// Magic at the start of every frame.
const FRAME_MAGIC: [u8; 4] = [0xFF, b'E', b'V', b'F'];
/// Length of a frame header, before the ids.
pub(super) const FRAME_HEADER_LEN: usize = 28;
/// Largest data an event may carry; a reader treats anything larger as damage.
pub(super) const MAX_DATA: usize = 64 << 20;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKind {
    /// Frames appended in order.
    Log = 1,
    /// The retained state as of the start of the log with the same number.
    Snapshot = 2,
}

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameKind {
    /// Event `seq` of the stream carries `data`.
    Event = 1,
    /// The stream has reached `seq` and holds nothing up to it (written by
    /// compaction for a stream whose retained events are all newer than its
    /// durable ones; recovery treats a damaged event the same way).
    Mark = 2,
    /// Streams created in the session from now on start after `seq` (so a
    /// dropped stream's name never reuses an id). No stream, no data.
    Floor = 3,
    /// The session's events are forgotten (tombstone). No stream, no data.
    Remove = 4,
    /// The stream was created, starting after `seq`. No data.
    Start = 5,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Event,
            2 => FrameKind::Mark,
            3 => FrameKind::Floor,
            4 => FrameKind::Remove,
            5 => FrameKind::Start,
            _ => return None,
        })
    }
}

/// The file header for `kind`.
pub(super) fn file_header(kind: FileKind) -> [u8; FILE_HEADER_LEN] {
    container::file_header(FILE_MAGIC, FORMAT_VERSION, kind as u8)
}

/// Checks the file header at the start of `bytes`.
pub(super) fn check_file_header(bytes: &[u8], kind: FileKind) -> Result<(), HeaderError> {
    container::check_file_header(bytes, FILE_MAGIC, FORMAT_VERSION, kind as u8)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    // Callers index inside bounds they checked; a short slice reads as 0.
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Appends one frame to `buf`. `data_crc` must be the CRC-32 of `data`
/// (computed by the caller, off the commit thread). The ids must fit in a
/// byte's length (session ids are at most 128 bytes, stream ids 32).
pub(super) fn encode_frame(
    buf: &mut Vec<u8>,
    kind: FrameKind,
    session: &str,
    stream: &str,
    seq: u64,
    data: &[u8],
    data_crc: u32,
) {
    debug_assert!(session.len() <= usize::from(u8::MAX) && stream.len() <= usize::from(u8::MAX));
    debug_assert!(data.len() <= MAX_DATA);
    let start = buf.len();
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.push(kind as u8);
    buf.push(u8::try_from(session.len()).unwrap_or(u8::MAX));
    buf.push(u8::try_from(stream.len()).unwrap_or(u8::MAX));
    buf.push(0);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(&data_crc.to_le_bytes());
    let mut hasher = Hasher::new();
    hasher.update(&buf[start + 4..start + 24]);
    hasher.update(session.as_bytes());
    hasher.update(stream.as_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(session.as_bytes());
    buf.extend_from_slice(stream.as_bytes());
    buf.extend_from_slice(data);
}

/// Bytes one frame takes on disk.
pub(super) fn frame_len(session: &str, stream: &str, data_len: usize) -> usize {
    FRAME_HEADER_LEN + session.len() + stream.len() + data_len
}

/// A frame read back, its header intact.
#[derive(Debug)]
pub(super) struct Frame<'a> {
    pub(super) kind: FrameKind,
    pub(super) session: &'a [u8],
    pub(super) stream: &'a [u8],
    pub(super) seq: u64,
    pub(super) data: &'a [u8],
    /// Whether the data matched its checksum.
    pub(super) data_ok: bool,
}

/// The result of reading at one offset.
#[derive(Debug)]
pub(super) enum Read<'a> {
    /// A frame with an intact header, and where the next one starts.
    Frame(Frame<'a>, usize),
    /// The bytes end inside a frame: an unfinished write.
    Truncated,
    /// No intact frame header starts here.
    Damaged,
}

/// Reads the frame that starts at `at`.
pub(super) fn read_frame(bytes: &[u8], at: usize) -> Read<'_> {
    let Some(rest) = bytes.get(at..) else {
        return Read::Truncated;
    };
    if rest.len() < FRAME_HEADER_LEN {
        return if FRAME_MAGIC.starts_with(&rest[..rest.len().min(4)]) {
            Read::Truncated
        } else {
            Read::Damaged
        };
    }
    if rest[..4] != FRAME_MAGIC {
        return Read::Damaged;
    }
    let sid_len = usize::from(rest[5]);
    let stream_len = usize::from(rest[6]);
    let ids_end = FRAME_HEADER_LEN + sid_len + stream_len;
    let Some(ids) = rest.get(FRAME_HEADER_LEN..ids_end) else {
        return Read::Truncated;
    };
    let mut hasher = Hasher::new();
    hasher.update(&rest[4..24]);
    hasher.update(ids);
    if hasher.finalize() != u32_at(rest, 24) {
        return Read::Damaged;
    }
    let Some(kind) = FrameKind::from_byte(rest[4]) else {
        return Read::Damaged;
    };
    let data_len = u32_at(rest, 16) as usize;
    if data_len > MAX_DATA {
        return Read::Damaged;
    }
    let Some(data) = rest.get(ids_end..ids_end + data_len) else {
        return Read::Truncated;
    };
    let frame = Frame {
        kind,
        session: &ids[..sid_len],
        stream: &ids[sid_len..],
        seq: u64_at(rest, 8),
        data,
        data_ok: crc32fast::hash(data) == u32_at(rest, 20),
    };
    Read::Frame(frame, at + ids_end + data_len)
}

/// The next offset after `at` where a frame magic starts, if any.
pub(super) fn resync(bytes: &[u8], at: usize) -> Option<usize> {
    container::resync(bytes, at, &FRAME_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, seq: u64, data: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            kind,
            "sess",
            "g",
            seq,
            data,
            crc32fast::hash(data),
        );
        buf
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(FrameKind::Event, 7, b"{\"x\":1}");
        let second = bytes.len();
        assert_eq!(second, frame_len("sess", "g", 7));
        bytes.extend(frame(FrameKind::Remove, 0, b""));
        let Read::Frame(f, next) = read_frame(&bytes, 0) else {
            panic!("first frame unreadable")
        };
        assert_eq!(
            (f.kind, f.session, f.stream, f.seq, f.data, f.data_ok),
            (
                FrameKind::Event,
                &b"sess"[..],
                &b"g"[..],
                7,
                &b"{\"x\":1}"[..],
                true
            )
        );
        assert_eq!(next, second);
        let Read::Frame(r, end) = read_frame(&bytes, next) else {
            panic!("second frame unreadable")
        };
        assert_eq!(r.kind, FrameKind::Remove);
        assert_eq!(end, bytes.len());
    }

    #[test]
    fn damaged_data_keeps_the_header_readable() {
        let mut bytes = frame(FrameKind::Event, 3, b"payload");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let Read::Frame(f, _) = read_frame(&bytes, 0) else {
            panic!("header must survive")
        };
        assert!(!f.data_ok);
        assert_eq!((f.session, f.seq), (&b"sess"[..], 3));
    }

    #[test]
    fn damaged_header_is_damage_and_resync_finds_the_next_frame() {
        let mut bytes = frame(FrameKind::Event, 1, b"one");
        let second = bytes.len();
        bytes.extend(frame(FrameKind::Event, 2, b"two"));
        bytes[9] ^= 1;
        assert!(matches!(read_frame(&bytes, 0), Read::Damaged));
        assert_eq!(resync(&bytes, 0), Some(second));
        assert_eq!(resync(&bytes, second), None);
    }

    #[test]
    fn every_truncation_reads_as_truncated() {
        let bytes = frame(FrameKind::Event, 1, b"payload");
        for len in 1..bytes.len() {
            assert!(
                matches!(read_frame(&bytes[..len], 0), Read::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn file_header_checks_magic_version_and_kind() {
        let header = file_header(FileKind::Log);
        assert_eq!(check_file_header(&header, FileKind::Log), Ok(()));
        assert_eq!(
            check_file_header(&header, FileKind::Snapshot),
            Err(HeaderError::Kind)
        );
        assert_eq!(
            check_file_header(&header[..10], FileKind::Log),
            Err(HeaderError::Damaged)
        );
        let mut future = header;
        future[8] = 9;
        let crc = crc32fast::hash(&future[..16]);
        future[16..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            check_file_header(&future, FileKind::Log),
            Err(HeaderError::Version(9))
        );
    }
}
