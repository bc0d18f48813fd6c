//! Errors, and the one place they become HTTP statuses and JSON-RPC codes.

use axum::http::StatusCode;
use serde_json::json;
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
    /// The server cannot take this now (session cap, store down).
    #[error("Service Unavailable: {0}")]
    Unavailable(String),
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
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Parse(_)
            | Rejection::InvalidRequest(_)
            | Rejection::MissingSessionId
            | Rejection::InvalidSessionId(_)
            | Rejection::UnsupportedVersion { .. }
            | Rejection::CannotResume(_) => StatusCode::BAD_REQUEST,
            Rejection::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Forbidden(_) => StatusCode::FORBIDDEN,
            Rejection::SessionNotFound(_) => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Conflict(_) => StatusCode::CONFLICT,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            _ => code::SERVER_ERROR,
        };
        let error = ErrorObject::new(code, self.to_string());
        match self {
            Rejection::UnsupportedVersion { requested } => error.with_data(json!({
                "supported": crate::dispatch::supported_versions(),
                "requested": requested,
            })),
            _ => error,
        }
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
            other => Rejection::Unavailable(format!("session store: {other}")),
        }
    }
}

/// The JSON-RPC error for a session-layer failure met while handling a
/// request (inside a tool, or `session/update`).
pub(crate) fn session_error_object(error: &session_core::Error) -> ErrorObject {
    use session_core::Error as E;
    match error {
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
}
