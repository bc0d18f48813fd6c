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
    /// earlier failure it cannot prove harmless. A server answers it with
    /// "unavailable, retry later" (HTTP 503); [`outcome`](Self::outcome)
    /// says whether a write it failed may nevertheless have been applied.
    #[error("session store failure: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
        /// What the failed call did to the stored data.
        outcome: WriteOutcome,
    },
}

/// What a failed store call did to the stored data, as far as the store
/// can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Nothing changed: a read, or a write refused or failed before it
    /// reached the storage.
    NotApplied,
    /// The write may or may not have been applied: a timeout or a
    /// connection lost after the command was sent, or a failed `fsync`. A
    /// caller reads the record before retrying a change that is not
    /// idempotent.
    Unknown,
}

impl WriteOutcome {
    /// `"not_applied"` or `"unknown"`, as errors on the wire name it.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::NotApplied => "not_applied",
            WriteOutcome::Unknown => "unknown",
        }
    }
}

impl Error {
    /// A store failure with a cause, which changed nothing.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(source.into()),
            outcome: WriteOutcome::NotApplied,
        }
    }

    /// A store failure with only a message, which changed nothing.
    pub fn backend_msg(message: impl Into<String>) -> Self {
        Error::Backend {
            message: message.into(),
            source: None,
            outcome: WriteOutcome::NotApplied,
        }
    }

    /// A failed write that may nevertheless have been applied
    /// ([`WriteOutcome::Unknown`]).
    pub fn backend_unknown(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(source.into()),
            outcome: WriteOutcome::Unknown,
        }
    }

    /// The same error with its write outcome set to `outcome` (no change
    /// for errors other than [`Error::Backend`]).
    #[must_use]
    pub fn with_outcome(mut self, outcome: WriteOutcome) -> Self {
        if let Error::Backend { outcome: o, .. } = &mut self {
            *o = outcome;
        }
        self
    }

    /// For [`Error::Backend`], what the failed call did to the stored data.
    pub fn outcome(&self) -> Option<WriteOutcome> {
        match self {
            Error::Backend { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    /// Whether the store is unavailable ([`Error::Backend`]): the call may
    /// succeed later, and a server answers it with 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Backend { .. })
    }

    /// Whether the session is gone for good from the client's point of view:
    /// not found, expired or closed. An MCP server answers these with 404.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::NotFound | Error::Expired | Error::Closed)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
