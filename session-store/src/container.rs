//! What the file store's and the event store's files have in common: a
//! 20-byte header (magic, format version, file kind, CRC-32 of the rest) and
//! frames that start with a magic a reader can find again after damage.

/// Length of a file header.
pub(crate) const FILE_HEADER_LEN: usize = 20;

/// The file header: 8 bytes of `magic`, the format `version`, the file
/// `kind`, then a CRC-32 of the first 16 bytes.
pub(crate) fn file_header(magic: &[u8; 8], version: u32, kind: u8) -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..8].copy_from_slice(magic);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header[12] = kind;
    let crc = crc32fast::hash(&header[..16]);
    header[16..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a file header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Too short, wrong magic or checksum: not one of our files, or damaged.
    Damaged,
    /// Written by another version of this format.
    Version(u32),
    /// A log where a snapshot was expected, or the reverse.
    Kind,
}

/// Checks the header at the start of `bytes` against what
/// [`file_header`] would write.
pub(crate) fn check_file_header(
    bytes: &[u8],
    magic: &[u8; 8],
    version: u32,
    kind: u8,
) -> Result<(), HeaderError> {
    let Some(header) = bytes.get(..FILE_HEADER_LEN) else {
        return Err(HeaderError::Damaged);
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if &header[..8] != magic || crc32fast::hash(&header[..16]) != word(16) {
        return Err(HeaderError::Damaged);
    }
    if word(8) != version {
        return Err(HeaderError::Version(word(8)));
    }
    if header[12] != kind {
        return Err(HeaderError::Kind);
    }
    Ok(())
}

/// The next offset after `at` where `frame_magic` starts, if any: where a
/// reader picks up again after a damaged frame.
pub(crate) fn resync(bytes: &[u8], at: usize, frame_magic: &[u8]) -> Option<usize> {
    let from = at + 1;
    bytes
        .get(from..)?
        .windows(frame_magic.len())
        .position(|w| w == frame_magic)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_refuse_what_differs() {
        let header = file_header(b"MAGICNUM", 3, 1);
        assert_eq!(check_file_header(&header, b"MAGICNUM", 3, 1), Ok(()));
        assert_eq!(
            check_file_header(&header, b"MAGICNUM", 3, 2),
            Err(HeaderError::Kind)
        );
        assert_eq!(
            check_file_header(&header, b"MAGICNUM", 4, 1),
            Err(HeaderError::Version(3))
        );
        assert_eq!(
            check_file_header(&header, b"OTHERNUM", 3, 1),
            Err(HeaderError::Damaged)
        );
        assert_eq!(
            check_file_header(&header[..19], b"MAGICNUM", 3, 1),
            Err(HeaderError::Damaged)
        );
        let mut flipped = header;
        flipped[12] ^= 0xFF;
        assert_eq!(
            check_file_header(&flipped, b"MAGICNUM", 3, 1),
            Err(HeaderError::Damaged)
        );
    }

    #[test]
    fn resync_finds_the_next_magic_after_the_offset() {
        let bytes = b"xxMAGxxMAGx";
        assert_eq!(resync(bytes, 0, b"MAG"), Some(2));
        assert_eq!(resync(bytes, 2, b"MAG"), Some(7));
        assert_eq!(resync(bytes, 7, b"MAG"), None);
        assert_eq!(resync(bytes, 100, b"MAG"), None);
    }
}
