//! Errors, and the one place they become HTTP statuses and JSON-RPC codes.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use session_core::WriteOutcome;
use session_core::wire::{ErrorObject, code};

/// Why starting or running the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding, accepting or stdio failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The session store could not be opened.
    #[error("session store: {0}")]
    Store(#[from] session_store::Error),
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A message the server refuses, with everything needed to answer it.
///
/// [`Rejection::status`] and [`Rejection::error_object`] are the single
/// mapping from refusals to the wire; every transport answers through them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The body is not JSON.
    #[error("Parse error: {0}")]
    Parse(String),
    /// The body is JSON but not an acceptable JSON-RPC message.
    #[error("Invalid Request: {0}")]
    InvalidRequest(String),
    /// `Accept` does not allow what the endpoint answers with.
    #[error("Not Acceptable: {0}")]
    NotAcceptable(String),
    /// `Content-Type` is not `application/json`.
    #[error("Unsupported Media Type: Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the limit.
    #[error("Payload Too Large: the body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// `Origin` or `Host` is not allowed.
    #[error("Forbidden: {0}")]
    Forbidden(String),
    /// A request other than `initialize` came without `MCP-Session-Id`.
    #[error("Bad Request: MCP-Session-Id header is required")]
    MissingSessionId,
    /// `MCP-Session-Id` is malformed.
    #[error("Bad Request: invalid MCP-Session-Id: {0}")]
    InvalidSessionId(String),
    /// The session is unknown, expired, closed or another principal's.
    #[error("Session not found: {0}")]
    SessionNotFound(&'static str),
    /// The protocol revision asked for is not one this server speaks.
    #[error("Unsupported protocol version: {requested}")]
    UnsupportedVersion {
        /// What the client asked for.
        requested: String,
    },
    /// The method is not allowed on the endpoint.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// A stream of this session is already open.
    #[error("Conflict: {0}")]
    Conflict(String),
    /// `Last-Event-ID` names events that can no longer be replayed.
    #[error(
        "Bad Request: cannot resume from Last-Event-ID {0}: the events are no longer available"
    )]
    CannotResume(String),
    /// The request's body did not arrive within the header timeout of its
    /// head (a client that sends a head and then trickles or withholds the
    /// body holds a connection busy).
    #[error("Request Timeout: the request body did not arrive within {0:?} of its head")]
    RequestTimeout(std::time::Duration),
    /// The server cannot take this now (session cap, shutting down).
    #[error("Service Unavailable: {0}")]
    Unavailable(String),
    /// A store failed ([`session_core::Error::Backend`]): the session
    /// store, the handle store or the event store. Answered alike wherever
    /// it happens: HTTP 503 with `Retry-After`, JSON-RPC
    /// [`STORE_UNAVAILABLE`](Rejection::STORE_UNAVAILABLE), `data.store`
    /// and `data.outcome` (`"not_applied"`, or `"unknown"` for a write that
    /// may have been applied). What the store said is logged, not sent.
    #[error("Service Unavailable: the {store} store is unavailable; retry later")]
    StoreUnavailable {
        /// Which store: `"session"`, `"handle"` or `"event"`.
        store: &'static str,
        /// What the failed call did to the stored data.
        outcome: WriteOutcome,
    },
    /// A stdio message other than `initialize` came before a session began.
    #[error("Server not initialized: send initialize first")]
    NotInitialized,
    /// A 2026-07-28 request broke a rule of its era: the error says which
    /// (-32602 envelope, -32020 header mismatch, -32022 unsupported
    /// version, -32601 no such method).
    #[error("{}", .0.message)]
    Protocol(ErrorObject),
}

impl Rejection {
    /// The JSON-RPC code of [`Rejection::StoreUnavailable`] (-32003, in the
    /// range JSON-RPC leaves to servers). A handler's error with this code
    /// is answered with HTTP 503 and `Retry-After` like any other store
    /// failure (unless its SSE stream already began: then it is the
    /// stream's last event).
    pub const STORE_UNAVAILABLE: i64 = -32003;

    /// The `Retry-After` of every 503, in seconds.
    pub const RETRY_AFTER_SECS: u64 = 1;

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Parse(_)
            | Rejection::InvalidRequest(_)
            | Rejection::MissingSessionId
            | Rejection::InvalidSessionId(_)
            | Rejection::UnsupportedVersion { .. }
            | Rejection::CannotResume(_) => StatusCode::BAD_REQUEST,
            Rejection::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Forbidden(_) => StatusCode::FORBIDDEN,
            Rejection::SessionNotFound(_) => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Conflict(_) => StatusCode::CONFLICT,
            Rejection::Unavailable(_) | Rejection::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::NotInitialized => StatusCode::BAD_REQUEST,
            // 2026-07-28: an unknown method is 404, every other refusal 400.
            Rejection::Protocol(error) if error.code == code::METHOD_NOT_FOUND => {
                StatusCode::NOT_FOUND
            }
            Rejection::Protocol(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON-RPC error to put in the body.
    pub fn error_object(&self) -> ErrorObject {
        let code = match self {
            Rejection::Protocol(error) => return error.clone(),
            Rejection::Parse(_) => code::PARSE_ERROR,
            Rejection::InvalidRequest(_) | Rejection::NotInitialized => code::INVALID_REQUEST,
            Rejection::SessionNotFound(_) => code::SESSION_NOT_FOUND,
            Rejection::UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            Rejection::StoreUnavailable { .. } => Self::STORE_UNAVAILABLE,
            _ => code::SERVER_ERROR,
        };
        let error = ErrorObject::new(code, self.to_string());
        match self {
            Rejection::UnsupportedVersion { requested } => error.with_data(json!({
                "supported": crate::dispatch::supported_versions(),
                "requested": requested,
            })),
            Rejection::StoreUnavailable { store, outcome } => error.with_data(json!({
                "store": store,
                "outcome": outcome.as_str(),
            })),
            _ => error,
        }
    }

    /// The refusal for a failure of `store` (`"session"`, `"handle"`,
    /// `"event"`): [`Rejection::StoreUnavailable`] with the error's write
    /// outcome. What the store said is logged (at most every few seconds),
    /// not sent to the client.
    ///
    /// A handler that meets [`session_core::Error::Backend`] returns
    /// `Err(Rejection::store_unavailable("handle", &e).error_object())` (or
    /// [`Rejection::from_session`]'s) and its client gets the same 503 as
    /// when the store fails before the handler runs.
    pub fn store_unavailable(store: &'static str, error: &session_core::Error) -> Rejection {
        let outcome = error.outcome().unwrap_or(WriteOutcome::NotApplied);
        if let Some(suppressed) = STORE_FAILURES.allow() {
            tracing::warn!(
                store,
                outcome = outcome.as_str(),
                suppressed,
                "answering 503: the {store} store failed: {}",
                describe(error)
            );
        }
        Rejection::StoreUnavailable { store, outcome }
    }

    /// The refusal for a session-layer failure met while resolving a session.
    pub fn from_session(error: &session_core::Error) -> Rejection {
        use session_core::Error as E;
        match error {
            E::NotFound => Rejection::SessionNotFound("no session has this id"),
            E::Expired => Rejection::SessionNotFound("the session expired"),
            E::Closed => Rejection::SessionNotFound("the session was closed"),
            E::Corrupt { .. } => {
                Rejection::SessionNotFound("the session's stored record is damaged")
            }
            E::InvalidId(e) => Rejection::InvalidSessionId(e.to_string()),
            E::LimitReached { limit } => {
                Rejection::Unavailable(format!("the server holds its maximum of {limit} sessions"))
            }
            E::Backend { .. } => Rejection::store_unavailable("session", error),
            other => Rejection::Unavailable(format!("session store: {other}")),
        }
    }

    /// The refusal for a failure of the event store (resuming a stream):
    /// [`Rejection::StoreUnavailable`] for a backend failure.
    pub(crate) fn from_events(error: &session_core::Error) -> Rejection {
        if error.is_unavailable() {
            Rejection::store_unavailable("event", error)
        } else {
            Rejection::Unavailable(format!("event store: {error}"))
        }
    }
}

/// Whether a handler's error is a store failure (answered with 503).
pub(crate) fn is_store_unavailable(error: &ErrorObject) -> bool {
    error.code == Rejection::STORE_UNAVAILABLE
}

/// What a store error says, its cause included (for the logs).
pub(crate) fn describe(error: &session_core::Error) -> String {
    match error {
        session_core::Error::Backend {
            message,
            source: Some(source),
            ..
        } => format!("{message}: {source}"),
        session_core::Error::Backend { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The JSON-RPC error for a failure of the handle store met while handling
/// a request (a tool using its handles): a backend failure is the store
/// being unavailable; anything else as [`session_error_object`].
pub(crate) fn handle_error_object(error: &session_core::Error) -> ErrorObject {
    if error.is_unavailable() {
        return Rejection::store_unavailable("handle", error).error_object();
    }
    session_error_object(error)
}

/// The JSON-RPC error for a session-layer failure met while handling a
/// request (inside a tool, or `session/update`). A backend failure is the
/// session store being unavailable ([`Rejection::StoreUnavailable`]'s
/// error, answered with 503).
pub(crate) fn session_error_object(error: &session_core::Error) -> ErrorObject {
    use session_core::Error as E;
    match error {
        E::Backend { .. } => Rejection::store_unavailable("session", error).error_object(),
        E::NotFound | E::Expired | E::Closed | E::Corrupt { .. } => ErrorObject::new(
            code::SESSION_NOT_FOUND,
            format!("Session not found: {error}"),
        ),
        E::StateTooLarge { .. }
        | E::MetaTooLarge { .. }
        | E::RecordTooLarge { .. }
        | E::InvalidId(_) => ErrorObject::new(code::INVALID_PARAMS, error.to_string()),
        other => ErrorObject::new(code::INTERNAL_ERROR, format!("session store: {other}")),
    }
}

/// Lets a message through at most once per interval; counts the ones it
/// held back, so a failing store does not flood the log.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    /// When a message last went through, in ms since [`EPOCH`] plus one
    /// (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// The origin of [`Throttle`]'s clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Warnings about store failures answered with 503.
static STORE_FAILURES: Throttle = Throttle::new(Duration::from_secs(10));

impl Throttle {
    pub(crate) const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(how many were held back since the last one)` when a message
    /// may go through now; `None` when it is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(EPOCH.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < interval
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_maps_to_its_status_and_code() {
        let cases = [
            (Rejection::Parse("x".into()), 400, code::PARSE_ERROR),
            (
                Rejection::InvalidRequest("x".into()),
                400,
                code::INVALID_REQUEST,
            ),
            (
                Rejection::NotAcceptable("x".into()),
                406,
                code::SERVER_ERROR,
            ),
            (Rejection::UnsupportedMediaType, 415, code::SERVER_ERROR),
            (
                Rejection::PayloadTooLarge { limit: 1 },
                413,
                code::SERVER_ERROR,
            ),
            (Rejection::Forbidden("x".into()), 403, code::SERVER_ERROR),
            (Rejection::MissingSessionId, 400, code::SERVER_ERROR),
            (
                Rejection::InvalidSessionId("x".into()),
                400,
                code::SERVER_ERROR,
            ),
            (
                Rejection::SessionNotFound("x"),
                404,
                code::SESSION_NOT_FOUND,
            ),
            (
                Rejection::UnsupportedVersion {
                    requested: "2026-07-28".into(),
                },
                400,
                code::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            (Rejection::MethodNotAllowed, 405, code::SERVER_ERROR),
            (Rejection::Conflict("x".into()), 409, code::SERVER_ERROR),
            (Rejection::CannotResume("x".into()), 400, code::SERVER_ERROR),
            (Rejection::Unavailable("x".into()), 503, code::SERVER_ERROR),
            (
                Rejection::StoreUnavailable {
                    store: "session",
                    outcome: WriteOutcome::NotApplied,
                },
                503,
                Rejection::STORE_UNAVAILABLE,
            ),
        ];
        for (rejection, status, code) in cases {
            assert_eq!(rejection.status().as_u16(), status, "{rejection}");
            assert_eq!(rejection.error_object().code, code, "{rejection}");
        }
    }

    #[test]
    fn unsupported_version_names_the_supported_ones() {
        let e = Rejection::UnsupportedVersion {
            requested: "2026-07-28".into(),
        }
        .error_object();
        let data = e.data.unwrap();
        assert_eq!(
            data["supported"],
            json!(crate::dispatch::supported_versions())
        );
        assert_eq!(data["requested"], "2026-07-28");
    }

    #[test]
    fn session_failures_map_to_404_or_503() {
        use session_core::Error as E;
        assert_eq!(
            Rejection::from_session(&E::Expired).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Rejection::from_session(&E::Closed).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            Rejection::from_session(&E::LimitReached { limit: 3 }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Rejection::from_session(&E::backend_msg("down")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn a_store_failure_is_one_error_wherever_it_is_met() {
        use session_core::Error as E;
        let down = E::backend_msg("connection refused");
        let unknown = E::backend_unknown("reply timed out", "timeout");
        // Resolving a session.
        let lookup = Rejection::from_session(&down);
        assert_eq!(lookup.status(), StatusCode::SERVICE_UNAVAILABLE);
        let lookup = lookup.error_object();
        // A handler writing the session, or a handle.
        let write = session_error_object(&down);
        let handle = handle_error_object(&unknown);
        let events = Rejection::from_events(&down).error_object();
        for error in [&lookup, &write, &handle, &events] {
            assert_eq!(error.code, Rejection::STORE_UNAVAILABLE);
            assert!(is_store_unavailable(error));
            assert!(
                error.message.starts_with("Service Unavailable: the ")
                    && error
                        .message
                        .ends_with(" store is unavailable; retry later"),
                "{}",
                error.message
            );
            assert!(
                !error.message.contains("refused") && !error.message.contains("timed out"),
                "what the store said stays in the logs: {}",
                error.message
            );
        }
        assert_eq!(lookup, write, "the same answer before and inside a handler");
        assert_eq!(
            lookup.data.unwrap(),
            json!({"store": "session", "outcome": "not_applied"})
        );
        assert_eq!(
            handle.data.unwrap(),
            json!({"store": "handle", "outcome": "unknown"})
        );
        assert_eq!(events.data.unwrap()["store"], "event");
        // Other failures keep their own answers.
        assert_eq!(
            handle_error_object(&E::NotFound).code,
            code::SESSION_NOT_FOUND
        );
        assert!(!is_store_unavailable(&session_error_object(
            &E::StateTooLarge { size: 2, limit: 1 }
        )));
    }

    #[test]
    fn the_throttle_lets_one_message_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
    }
}
