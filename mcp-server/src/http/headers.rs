//! Checks of the request headers the Streamable HTTP transport depends on.

use axum::http::header::{ACCEPT, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderName};
use session_core::SessionId;
use session_core::wire::is_supported;

use crate::error::Rejection;

// Header names as values, so a lookup hashes them without parsing them.

/// `MCP-Session-Id`.
pub(crate) const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub(crate) const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Last-Event-ID`.
pub(crate) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// What the `Accept` header admits: (JSON, SSE).
fn accepted(headers: &HeaderMap) -> (bool, bool) {
    let mut admits = (false, false);
    for value in headers.get_all(ACCEPT) {
        let bytes = value.as_bytes();
        // What every MCP client sends, decided without parsing.
        if bytes == b"application/json, text/event-stream"
            || bytes == b"text/event-stream, application/json"
        {
            return (true, true);
        }
        for range in bytes.split(|&b| b == b',') {
            let range = range
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let any = range == b"*/*";
            admits.0 |= any
                || range.eq_ignore_ascii_case(JSON.as_bytes())
                || range.eq_ignore_ascii_case(b"application/*");
            admits.1 |= any
                || range.eq_ignore_ascii_case(EVENT_STREAM.as_bytes())
                || range.eq_ignore_ascii_case(b"text/*");
        }
    }
    admits
}

/// POST must accept both JSON and SSE.
pub(crate) fn check_post_accept(headers: &HeaderMap) -> Result<(), Rejection> {
    match accepted(headers) {
        (true, true) => Ok(()),
        _ => Err(Rejection::NotAcceptable(
            "Accept must list both application/json and text/event-stream".into(),
        )),
    }
}

/// GET must accept SSE.
pub(crate) fn check_get_accept(headers: &HeaderMap) -> Result<(), Rejection> {
    if accepted(headers).1 {
        Ok(())
    } else {
        Err(Rejection::NotAcceptable(
            "Accept must list text/event-stream".into(),
        ))
    }
}

/// The body must be JSON.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(JSON));
    if json {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType)
    }
}

/// Host names that are always allowed: loopback.
fn is_loopback_host(host: &str) -> bool {
    // Host names are case-insensitive.
    host.eq_ignore_ascii_case("localhost") || matches!(host, "127.0.0.1" | "[::1]" | "::1")
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Which `Origin`s and `Host`s are allowed.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) origins: Vec<String>,
    pub(crate) hosts: Vec<String>,
    /// Check `Host` (listening on loopback, or hosts configured).
    pub(crate) check_host: bool,
}

impl Guard {
    /// Refuses a browser origin or a host name that is not allowed: the
    /// defence against DNS rebinding.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let host = origin
                .split_once("://")
                .map(|(_, rest)| host_part(rest.split('/').next().unwrap_or("")))
                .unwrap_or("");
            let allowed = is_loopback_host(host)
                || self
                    .origins
                    .iter()
                    .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
            if !allowed {
                return Err(Rejection::Forbidden(format!(
                    "Origin {origin} is not allowed (allow it with --allowed-origin)"
                )));
            }
        }
        if self.check_host
            && let Some(host) = headers.get(HOST)
        {
            let host = host.to_str().unwrap_or("");
            let name = host_part(host);
            let allowed = is_loopback_host(name)
                || self
                    .hosts
                    .iter()
                    .any(|h| h == "*" || h.eq_ignore_ascii_case(name));
            if !allowed {
                return Err(Rejection::Forbidden(format!(
                    "Host {host} is not allowed (allow it with --allowed-host)"
                )));
            }
        }
        Ok(())
    }
}

/// `MCP-Session-Id`, if present: `Ok(None)` when absent.
pub(crate) fn session_id(headers: &HeaderMap) -> Result<Option<SessionId>, Rejection> {
    let Some(value) = headers.get(SESSION_ID) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Rejection::InvalidSessionId("not visible ASCII".into()))?;
    SessionId::parse(text)
        .map(Some)
        .map_err(|e| Rejection::InvalidSessionId(e.to_string()))
}

/// `MCP-Protocol-Version`, checked: absent is fine (2025-03-26 is assumed),
/// an unsupported one is refused.
pub(crate) fn protocol_version(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let Some(value) = headers.get(PROTOCOL_VERSION) else {
        return Ok(None);
    };
    let version = value.to_str().unwrap_or("");
    if is_supported(version) {
        Ok(Some(version))
    } else {
        Err(Rejection::UnsupportedVersion {
            requested: version.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn accept_needs_both_types_but_honours_wildcards() {
        let ok = [
            "application/json, text/event-stream",
            "text/event-stream;q=0.9,application/json",
            "*/*",
            "application/*, text/*",
        ];
        for accept in ok {
            assert!(
                check_post_accept(&headers(&[("accept", accept)])).is_ok(),
                "{accept}"
            );
        }
        for accept in ["application/json", "text/event-stream", "text/html"] {
            assert!(
                check_post_accept(&headers(&[("accept", accept)])).is_err(),
                "{accept}"
            );
        }
        assert!(check_post_accept(&HeaderMap::new()).is_err());
        assert!(check_get_accept(&headers(&[("accept", "text/event-stream")])).is_ok());
        assert!(check_get_accept(&headers(&[("accept", "application/json")])).is_err());
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(
            check_content_type(&headers(&[(
                "content-type",
                "application/json; charset=utf-8"
            )]))
            .is_ok()
        );
        assert!(check_content_type(&headers(&[("content-type", "text/plain")])).is_err());
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn guard_allows_loopback_and_configured_names_only() {
        let guard = Guard {
            origins: vec!["https://app.example".into()],
            hosts: vec!["mcp.internal".into()],
            check_host: true,
        };
        for (k, v) in [
            ("origin", "http://localhost:3000"),
            ("origin", "http://127.0.0.1"),
            ("origin", "http://[::1]:8080"),
            ("origin", "https://app.example"),
            ("host", "localhost:8080"),
            ("host", "LocalHost:8080"),
            ("host", "localhost"),
            ("host", "127.0.0.1:9"),
            ("host", "127.0.0.1"),
            ("host", "[::1]:8080"),
            ("host", "mcp.internal"),
            ("host", "mcp.internal:443"),
        ] {
            assert!(guard.check(&headers(&[(k, v)])).is_ok(), "{k}: {v}");
        }
        for (k, v) in [
            ("origin", "http://evil.example.com"),
            ("origin", "http://localhost.evil.com"),
            ("host", "evil.example.com"),
            ("host", "evil.example.com:8080"),
            ("host", "localhost.evil.com:8080"),
            ("host", "127.0.0.1.evil.com:80"),
            ("host", "[::2]:8080"),
        ] {
            let refused = guard.check(&headers(&[(k, v)]));
            assert!(matches!(refused, Err(Rejection::Forbidden(_))), "{k}: {v}");
        }
    }

    #[test]
    fn version_header_is_optional_but_must_be_supported() {
        assert_eq!(protocol_version(&HeaderMap::new()), Ok(None));
        assert_eq!(
            protocol_version(&headers(&[("mcp-protocol-version", "2025-06-18")])),
            Ok(Some("2025-06-18"))
        );
        assert!(matches!(
            protocol_version(&headers(&[("mcp-protocol-version", "2026-07-28")])),
            Err(Rejection::UnsupportedVersion { .. })
        ));
    }
}
