//! Session identifiers: minted from a cryptographically secure generator,
//! parsed from untrusted input with a bound.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest session id accepted from the outside, in bytes.
///
/// Ids we mint are 32 characters; the bound leaves room for ids minted by other
/// servers (a client stores whatever the server issued) while keeping a hostile
/// header from growing memory or a store key without limit.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A session identifier.
///
/// Minted ids carry 122 random bits (a version-4 UUID) and are written as 32
/// lowercase hex digits. The bits come from `rand`'s thread-local generator
/// (through `uuid`'s `fast-rng` feature): ChaCha12, a cryptographically secure
/// generator seeded from the operating system's random source and reseeded
/// from it after every 64 KiB of output. Not reseeding on `fork` is `rand`'s
/// documented limitation; this crate does not fork. Parsed ids may be
/// any string of 1 to [`MAX_SESSION_ID_LEN`] visible ASCII characters
/// (0x21 to 0x7E), the set the MCP specification allows in `MCP-Session-Id`.
///
/// Cloning is cheap (a reference-count increment).
///
/// ```
/// use session_core::SessionId;
///
/// let id = SessionId::generate();
/// assert_eq!(id.as_str().len(), 32);
/// let parsed: SessionId = id.as_str().parse()?;
/// assert_eq!(parsed, id);
///
/// assert!("has space".parse::<SessionId>().is_err());
/// # Ok::<(), session_core::InvalidSessionId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Mints a fresh id from the thread-local ChaCha12 generator, seeded from
    /// the operating system (see [`SessionId`]).
    ///
    /// # Panics
    ///
    /// Panics only if the operating system cannot provide random bytes to
    /// seed or reseed the generator, which `rand` treats as unrecoverable.
    pub fn generate() -> Self {
        let uuid = uuid::Uuid::new_v4();
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        SessionId(Arc::from(&*uuid.simple().encode_lower(&mut buf)))
    }

    /// Parses an id received from outside, checking its length and alphabet.
    ///
    /// # Errors
    ///
    /// [`InvalidSessionId`] when the input is empty, longer than
    /// [`MAX_SESSION_ID_LEN`] bytes, or holds a byte outside 0x21..=0x7E.
    pub fn parse(input: &str) -> Result<Self, InvalidSessionId> {
        if input.is_empty() {
            return Err(InvalidSessionId::Empty);
        }
        if input.len() > MAX_SESSION_ID_LEN {
            return Err(InvalidSessionId::TooLong { len: input.len() });
        }
        // Checked over all bytes without stopping early (which compiles to a
        // fast loop); where the bad byte is, only on the error path.
        let visible = |b: u8| (0x21..=0x7E).contains(&b);
        if !input.bytes().fold(true, |ok, b| ok & visible(b)) {
            let position = input.bytes().position(|b| !visible(b)).unwrap_or(0);
            return Err(InvalidSessionId::BadCharacter { position });
        }
        Ok(SessionId(Arc::from(input)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionId::parse(s)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SessionId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a valid [`SessionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSessionId {
    /// The id is the empty string.
    #[error("session id is empty")]
    Empty,
    /// The id is longer than [`MAX_SESSION_ID_LEN`].
    #[error("session id is {len} bytes long, the limit is {MAX_SESSION_ID_LEN}")]
    TooLong {
        /// Length of the rejected input in bytes.
        len: usize,
    },
    /// The id holds a byte outside visible ASCII (0x21..=0x7E).
    #[error("session id has a byte outside visible ASCII at position {position}")]
    BadCharacter {
        /// Byte offset of the first offending byte.
        position: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_visible_ascii_hex_and_distinct() {
        let ids: HashSet<SessionId> = (0..10_000).map(|_| SessionId::generate()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.as_str().len(), 32);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(SessionId::parse(id.as_str()).as_ref(), Ok(id));
        }
    }

    #[test]
    fn parse_rejects_empty_long_and_invisible_input() {
        assert_eq!(SessionId::parse(""), Err(InvalidSessionId::Empty));
        let long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        assert_eq!(
            SessionId::parse(&long),
            Err(InvalidSessionId::TooLong { len: 129 })
        );
        assert!(SessionId::parse(&long[1..]).is_ok());
        assert_eq!(
            SessionId::parse("ab c"),
            Err(InvalidSessionId::BadCharacter { position: 2 })
        );
        assert_eq!(
            SessionId::parse("é"),
            Err(InvalidSessionId::BadCharacter { position: 0 })
        );
        assert_eq!(
            SessionId::parse("tab\t"),
            Err(InvalidSessionId::BadCharacter { position: 3 })
        );
        assert!(SessionId::parse("!~").is_ok());
    }

    #[test]
    fn deserializing_checks_the_alphabet() {
        let ok: SessionId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(ok.as_str(), "abc");
        assert!(serde_json::from_str::<SessionId>("\"a b\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"abc\"");
    }
}
