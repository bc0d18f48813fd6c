//! The one error type of the session layer.

use crate::{InvalidSessionId, SessionId, SessionStatus};

/// A boxed error from a store's backend, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong with a session, in terms a caller can act on.
///
/// Stores and the [`SessionManager`](crate::SessionManager) both report with this
/// type; `mcp-server` maps it to HTTP statuses and JSON-RPC codes in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session has this id (or it belongs to another principal).
    #[error("session not found")]
    NotFound,
    /// The session passed its deadline or was expired on purpose.
    #[error("session expired")]
    Expired,
    /// The session was closed.
    #[error("session closed")]
    Closed,
    /// A compare-and-swap lost: the stored version is not the expected one.
    /// `found` is `None` when the record is gone. The manager reports it when
    /// a write lost `max_write_attempts` races in a row, with the version
    /// the store holds now.
    #[error("version conflict: expected {expected}, found {found:?}")]
    Conflict {
        /// The version the writer based its change on.
        expected: u64,
        /// The version in the store, if the record still exists.
        found: Option<u64>,
    },
    /// A record with this id already exists.
    #[error("a session with this id already exists")]
    AlreadyExists,
    /// The cap on live sessions is reached.
    #[error("the limit of {limit} live sessions is reached")]
    LimitReached {
        /// The configured cap.
        limit: usize,
    },
    /// A session id from outside is malformed.
    #[error("invalid session id: {0}")]
    InvalidId(#[from] InvalidSessionId),
    /// The state would exceed the configured size limit.
    #[error("session state of {size} bytes exceeds the limit of {limit} bytes")]
    StateTooLarge {
        /// Serialized size of the rejected state.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The session's metadata (owner, protocol version, `clientInfo` and
    /// capabilities, all from the client) would exceed the configured size
    /// limit; nothing is written.
    #[error("session metadata of {size} bytes exceeds the limit of {limit} bytes")]
    MetaTooLarge {
        /// Serialized size of the rejected metadata.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The whole encoded record is larger than the store can keep; nothing is
    /// written.
    #[error("session record of {size} bytes exceeds the store's limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size of the rejected record.
        size: usize,
        /// The store's limit.
        limit: usize,
    },
    /// The lifecycle has no such move.
    #[error("a session cannot go from {from} to {to}")]
    InvalidTransition {
        /// Status before.
        from: SessionStatus,
        /// Status asked for.
        to: SessionStatus,
    },
    /// The stored record of this session failed its integrity check; other
    /// sessions are unaffected.
    #[error("stored record of session {id} is corrupt: {detail}")]
    Corrupt {
        /// The session whose record is damaged.
        id: SessionId,
        /// What the check found.
        detail: String,
    },
    /// The store failed (I/O, network, encoding), or refuses writes after an
    /// earlier failure it cannot prove harmless.
    #[error("session store failure: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// A store failure with a cause.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A store failure with only a message.
    pub fn backend_msg(message: impl Into<String>) -> Self {
        Error::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// Whether the session is gone for good from the client's point of view:
    /// not found, expired or closed. An MCP server answers these with 404.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::NotFound | Error::Expired | Error::Closed)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
