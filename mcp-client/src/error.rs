//! The client's one error type.

use std::time::Duration;

use session_core::wire::ErrorObject;

/// Everything a client call can fail with, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a JSON-RPC error. Whatever its code (even
    /// -32001, which some servers use for their own timeouts), an in-band
    /// error never means the session is gone and is never retried.
    #[error("the server answered {method} with an error: {error}")]
    Rpc {
        /// The method called.
        method: String,
        /// The server's error.
        error: ErrorObject,
    },
    /// No answer within the timeout. For a request other than `initialize`,
    /// `notifications/cancelled` was sent (the protocol forbids cancelling
    /// `initialize`); for the handshake, `method` names the step that
    /// stalled.
    #[error("{method} timed out after {after:?}")]
    Timeout {
        /// The method called.
        method: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The server negotiated a protocol revision this client does not speak.
    #[error("the server chose protocol version {server}; this client speaks {supported:?}")]
    VersionMismatch {
        /// What the server answered.
        server: String,
        /// What this client accepts.
        supported: &'static [&'static str],
    },
    /// The server no longer knows the session: it answered HTTP 404 to a
    /// message that carried the session id (it expired, was closed, or the
    /// server lost it). The client starts a new session by itself unless
    /// told not to.
    #[error("the server no longer knows session {session}")]
    SessionNotFound {
        /// The session that is gone.
        session: String,
    },
    /// The server answered with an HTTP error.
    #[error("HTTP {status} from the server: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The JSON-RPC error message of the body, or the body itself.
        message: String,
    },
    /// Connecting to, writing to or reading from the server failed.
    #[error("transport failure: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server broke the protocol (a malformed answer, a stream that
    /// ended without the response and cannot be resumed).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An argument the client cannot use (a session id that cannot be sent
    /// as a header, a protocol revision this client does not speak).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call needs something the server did not offer.
    #[error("the server does not support {0}")]
    Unsupported(String),
    /// The task a request became was cancelled (by this client, another
    /// one, or the server) before it ended.
    #[error("task {task_id} was cancelled")]
    TaskCancelled {
        /// The task.
        task_id: String,
    },
    /// A task followed by its id ([`Task::result`](crate::Task::result))
    /// ended `failed`, with this error. (A call that became a task and
    /// failed is reported as the call's [`Error::Rpc`], as if it had failed
    /// at once.)
    #[error("task {task_id} failed: {error}")]
    TaskFailed {
        /// The task.
        task_id: String,
        /// The task's error.
        error: ErrorObject,
    },
    /// The server asked for input (`input_required`) that the client's
    /// request handler refused or failed to give.
    #[error("the handler of the server's {method} failed: {error}")]
    Input {
        /// The kind of input asked (`elicitation/create`, …).
        method: String,
        /// The handler's error.
        error: ErrorObject,
    },
    /// The client was closed or disconnected.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    pub(crate) fn transport(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Transport {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Whether the error means the session is gone (HTTP 404).
    pub fn is_session_gone(&self) -> bool {
        matches!(self, Error::SessionNotFound { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
