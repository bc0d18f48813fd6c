//! The on-disk format: a file header, then checksummed frames.
//!
//! ```text
//! file   := header frame*
//! header := "MCPSTORE" version:u32 kind:u8 0 0 0 crc:u32          (20 bytes)
//! frame  := 0xFF "MSF" kind:u8 id_len:u8 batch:u64 len:u32
//!           payload_crc:u32 header_crc:u32 id[id_len] payload[len]
//! ```
//!
//! Integers are little-endian; checksums are CRC-32 (IEEE). `header_crc`
//! covers `kind..payload_crc` and the id, so a damaged frame whose header is
//! intact still names the session it belonged to. The frame magic starts with
//! 0xFF, a byte that never occurs in UTF-8, so it cannot appear inside a JSON
//! payload; a reader that loses its place scans forward for it.
//!
//! Every batch of frames written together ends with a `Commit` frame carrying
//! the batch number and how many frames the batch holds. A batch without its
//! commit at the end of the last log was never acknowledged and is dropped.

use crc32fast::Hasher;

use crate::container;

/// Magic at the start of every file.
const FILE_MAGIC: &[u8; 8] = b"MCPSTORE";
/// Version of this format.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) use crate::container::{FILE_HEADER_LEN, HeaderError};
/// Magic at the start of every frame.
const FRAME_MAGIC: [u8; 4] = [0xFF, b'M', b'S', b'F'];
/// Length of a frame header, before the id.
pub(crate) const FRAME_HEADER_LEN: usize = 26;
/// Largest payload a reader accepts; anything larger is damage. Writers
/// refuse larger records before queueing them, so nothing acknowledged is
/// ever read back as damage.
pub(crate) const MAX_PAYLOAD: usize = 256 << 20;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// Appended batches.
    Log = 1,
    /// The full state as of the start of the log with the same number.
    Snapshot = 2,
}

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// Payload: the record as JSON.
    Put = 1,
    /// No payload: the record is gone.
    Delete = 2,
    /// Payload: why the session's record is known to be damaged (snapshots
    /// carry damage forward so it is not silently forgotten).
    Corrupt = 3,
    /// Payload: frame count of the batch as u32. Ends a batch.
    Commit = 4,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Put,
            2 => FrameKind::Delete,
            3 => FrameKind::Corrupt,
            4 => FrameKind::Commit,
            _ => return None,
        })
    }
}

/// The file header for `kind`.
pub(crate) fn file_header(kind: FileKind) -> [u8; FILE_HEADER_LEN] {
    container::file_header(FILE_MAGIC, FORMAT_VERSION, kind as u8)
}

/// Checks the file header at the start of `bytes`.
pub(crate) fn check_file_header(bytes: &[u8], kind: FileKind) -> Result<(), HeaderError> {
    container::check_file_header(bytes, FILE_MAGIC, FORMAT_VERSION, kind as u8)
}

/// Appends one frame to `buf`. `payload_crc` must be the CRC-32 of `payload`
/// (computed by the caller, off the writer's critical path).
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    kind: FrameKind,
    id: &str,
    batch: u64,
    payload: &[u8],
    payload_crc: u32,
) {
    debug_assert!(id.len() <= usize::from(u8::MAX));
    let start = buf.len();
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.push(kind as u8);
    buf.push(id.len() as u8);
    buf.extend_from_slice(&batch.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&payload_crc.to_le_bytes());
    let mut hasher = Hasher::new();
    hasher.update(&buf[start + 4..start + 22]);
    hasher.update(id.as_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(payload);
}

/// A record's payload (its JSON) and the payload's CRC-32.
pub(crate) fn record_payload(
    record: &session_core::SessionRecord,
) -> Result<(Vec<u8>, u32), serde_json::Error> {
    // Room for a small record's JSON at once (serde_json starts at 128
    // bytes and grows by copying); the buffer lives only until its batch is
    // written.
    let mut payload = Vec::with_capacity(512);
    serde_json::to_writer(&mut payload, record)?;
    let crc = crc32fast::hash(&payload);
    Ok((payload, crc))
}

/// Appends a commit frame for a batch of `count` frames.
pub(crate) fn encode_commit(buf: &mut Vec<u8>, batch: u64, count: usize) {
    let count = u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes();
    encode_frame(
        buf,
        FrameKind::Commit,
        "",
        batch,
        &count,
        crc32fast::hash(&count),
    );
}

/// Bytes one frame takes on disk.
pub(crate) fn frame_len(id: &str, payload_len: usize) -> usize {
    FRAME_HEADER_LEN + id.len() + payload_len
}

/// A frame read back.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: FrameKind,
    pub(crate) id: &'a [u8],
    pub(crate) batch: u64,
    pub(crate) payload: &'a [u8],
    /// Whether the payload matched its checksum.
    pub(crate) payload_ok: bool,
}

/// The result of reading at one offset.
#[derive(Debug)]
pub(crate) enum Read<'a> {
    /// A frame with an intact header, and where the next one starts.
    Frame(Frame<'a>, usize),
    /// The bytes end inside a frame (or inside its header).
    Truncated,
    /// No intact frame header starts here.
    Damaged,
}

/// Reads the frame that starts at `at`.
pub(crate) fn read_frame(bytes: &[u8], at: usize) -> Read<'_> {
    let rest = &bytes[at..];
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
    let field =
        |range: std::ops::Range<usize>| -> [u8; 4] { rest[range].try_into().unwrap_or_default() };
    let id_len = usize::from(rest[5]);
    let payload_len = u32::from_le_bytes(field(14..18)) as usize;
    let payload_crc = u32::from_le_bytes(field(18..22));
    let header_crc = u32::from_le_bytes(field(22..26));
    let Some(id) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + id_len) else {
        return Read::Truncated;
    };
    let mut hasher = Hasher::new();
    hasher.update(&rest[4..22]);
    hasher.update(id);
    if hasher.finalize() != header_crc {
        return Read::Damaged;
    }
    let Some(kind) = FrameKind::from_byte(rest[4]) else {
        return Read::Damaged;
    };
    if payload_len > MAX_PAYLOAD {
        return Read::Damaged;
    }
    let start = FRAME_HEADER_LEN + id_len;
    let Some(payload) = rest.get(start..start + payload_len) else {
        return Read::Truncated;
    };
    let batch = u64::from_le_bytes(rest[6..14].try_into().unwrap_or_default());
    let frame = Frame {
        kind,
        id,
        batch,
        payload,
        payload_ok: crc32fast::hash(payload) == payload_crc,
    };
    Read::Frame(frame, at + start + payload_len)
}

/// The next offset after `at` where a frame magic starts, if any.
pub(crate) fn resync(bytes: &[u8], at: usize) -> Option<usize> {
    container::resync(bytes, at, &FRAME_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, id: &str, batch: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(&mut buf, kind, id, batch, payload, crc32fast::hash(payload));
        buf
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(FrameKind::Put, "abc", 7, b"{\"x\":1}");
        bytes.extend(frame(FrameKind::Commit, "", 7, &1u32.to_le_bytes()));
        let Read::Frame(f, next) = read_frame(&bytes, 0) else {
            panic!("first frame unreadable")
        };
        assert_eq!(
            (f.kind, f.id, f.batch, f.payload),
            (FrameKind::Put, &b"abc"[..], 7, &b"{\"x\":1}"[..])
        );
        assert!(f.payload_ok);
        assert_eq!(next, frame_len("abc", 7));
        let Read::Frame(c, end) = read_frame(&bytes, next) else {
            panic!("commit unreadable")
        };
        assert_eq!(c.kind, FrameKind::Commit);
        assert_eq!(end, bytes.len());
    }

    #[test]
    fn damaged_payload_keeps_the_header_readable() {
        let mut bytes = frame(FrameKind::Put, "abc", 1, b"payload");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let Read::Frame(f, _) = read_frame(&bytes, 0) else {
            panic!("header must survive")
        };
        assert!(!f.payload_ok);
        assert_eq!(f.id, b"abc");
    }

    #[test]
    fn damaged_header_is_reported_and_resync_finds_the_next_frame() {
        let mut bytes = frame(FrameKind::Put, "abc", 1, b"one");
        let second = bytes.len();
        bytes.extend(frame(FrameKind::Put, "def", 1, b"two"));
        bytes[5] ^= 1;
        assert!(matches!(read_frame(&bytes, 0), Read::Damaged));
        assert_eq!(resync(&bytes, 0), Some(second));
        assert_eq!(resync(&bytes, second), None);
    }

    #[test]
    fn every_truncation_reads_as_truncated_not_as_a_frame() {
        let bytes = frame(FrameKind::Put, "abc", 1, b"payload");
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
