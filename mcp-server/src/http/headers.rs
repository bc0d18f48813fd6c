//! Checks of the request headers the Streamable HTTP transport depends on.
//!
//! [`Head::scan`] finds every header the endpoint reads in one pass over the
//! request's header map; the checks then work on what it found.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::dispatch::Mirrored;
use crate::error::Rejection;

/// `MCP-Session-Id`.
pub(crate) const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The `MCP-Protocol-Version` header.
pub(crate) const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// The headers the endpoint reads, found in one pass. Where a header comes
/// more than once the first counts, as with [`HeaderMap::get`], except
/// `Accept`, whose values all count.
#[derive(Debug, Default)]
pub(crate) struct Head<'a> {
    pub(crate) origin: Option<&'a HeaderValue>,
    pub(crate) host: Option<&'a HeaderValue>,
    pub(crate) content_type: Option<&'a HeaderValue>,
    pub(crate) content_length: Option<&'a HeaderValue>,
    /// What the `Accept` values admit.
    pub(crate) accept: Accept,
    pub(crate) session_id: Option<&'a HeaderValue>,
    pub(crate) protocol_version: Option<&'a HeaderValue>,
    pub(crate) last_event_id: Option<&'a HeaderValue>,
    /// Whether any header mirrors the body (`Mcp-Method`, `Mcp-Name`,
    /// `Mcp-Param-*`, revision 2026-07-28).
    mirrors: bool,
}

impl<'a> Head<'a> {
    /// One pass over `headers`.
    pub(crate) fn scan(headers: &'a HeaderMap) -> Self {
        let mut head = Head::default();
        for (name, value) in headers {
            // Header names are lowercase in a `HeaderMap`.
            let slot = match name.as_str() {
                "accept" => {
                    head.accept.add(value);
                    continue;
                }
                "host" => &mut head.host,
                "content-type" => &mut head.content_type,
                "content-length" => &mut head.content_length,
                "mcp-session-id" => &mut head.session_id,
                "mcp-protocol-version" => &mut head.protocol_version,
                "origin" => &mut head.origin,
                "last-event-id" => &mut head.last_event_id,
                name => {
                    head.mirrors |= name.starts_with("mcp-") && is_mirror(name);
                    continue;
                }
            };
            slot.get_or_insert(value);
        }
        head
    }

    /// Whether the request mirrors body fields in headers (a 2026-07-28
    /// client's does).
    pub(crate) fn mirrors(&self) -> bool {
        self.mirrors
    }

    /// The declared body length, if it is a number.
    pub(crate) fn content_length(&self) -> Option<usize> {
        self.content_length
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

/// Whether `name` (lowercase) is a header that mirrors the body.
fn is_mirror(name: &str) -> bool {
    name == "mcp-method" || name == "mcp-name" || name.starts_with("mcp-param-")
}

/// The body fields the request mirrors into headers, borrowed from its
/// header map.
pub(crate) fn mirrored(headers: &HeaderMap) -> Mirrored<'_> {
    let mut mirrored = Mirrored::default();
    for (name, value) in headers {
        match name.as_str() {
            "mcp-method" => {
                mirrored.method.get_or_insert(value.as_bytes());
            }
            "mcp-name" => {
                mirrored.name.get_or_insert(value.as_bytes());
            }
            name => {
                if let Some(param) = name.strip_prefix("mcp-param-")
                    && !mirrored.params.iter().any(|(p, _)| *p == param)
                {
                    mirrored.params.push((param, value.as_bytes()));
                }
            }
        }
    }
    mirrored
}

/// What the `Accept` header admits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accept {
    json: bool,
    sse: bool,
}

impl Accept {
    fn add(&mut self, value: &HeaderValue) {
        let bytes = value.as_bytes();
        // What every MCP client sends, decided without parsing.
        if bytes == b"application/json, text/event-stream"
            || bytes == b"text/event-stream, application/json"
        {
            self.json = true;
            self.sse = true;
            return;
        }
        for range in bytes.split(|&b| b == b',') {
            let range = range
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let any = range == b"*/*";
            self.json |= any
                || range.eq_ignore_ascii_case(JSON.as_bytes())
                || range.eq_ignore_ascii_case(b"application/*");
            self.sse |= any
                || range.eq_ignore_ascii_case(EVENT_STREAM.as_bytes())
                || range.eq_ignore_ascii_case(b"text/*");
        }
    }

    /// Whether SSE is acceptable.
    pub(crate) fn sse(self) -> bool {
        self.sse
    }

    /// POST must accept both JSON and SSE.
    pub(crate) fn check_post(self) -> Result<(), Rejection> {
        if self.json && self.sse {
            Ok(())
        } else {
            Err(Rejection::NotAcceptable(
                "Accept must list both application/json and text/event-stream".into(),
            ))
        }
    }

    /// GET must accept SSE.
    pub(crate) fn check_get(self) -> Result<(), Rejection> {
        if self.sse {
            Ok(())
        } else {
            Err(Rejection::NotAcceptable(
                "Accept must list text/event-stream".into(),
            ))
        }
    }
}

/// The body must be JSON.
pub(crate) fn check_content_type(content_type: Option<&HeaderValue>) -> Result<(), Rejection> {
    let json = content_type.is_some_and(|v| {
        // What every client sends, decided without parsing.
        v.as_bytes() == JSON.as_bytes()
            || v.as_bytes()
                .split(|&b| b == b';')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(JSON.as_bytes()))
    });
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
    match authority.bytes().position(|b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
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
    pub(crate) fn check(&self, head: &Head<'_>) -> Result<(), Rejection> {
        if let Some(origin) = head.origin {
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
            && let Some(host) = head.host
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let map = headers(&[("accept", accept)]);
            assert!(Head::scan(&map).accept.check_post().is_ok(), "{accept}");
        }
        for accept in ["application/json", "text/event-stream", "text/html"] {
            let map = headers(&[("accept", accept)]);
            assert!(Head::scan(&map).accept.check_post().is_err(), "{accept}");
        }
        // Every value of a repeated Accept counts.
        let map = headers(&[
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
        ]);
        assert!(Head::scan(&map).accept.check_post().is_ok());
        assert!(Head::scan(&HeaderMap::new()).accept.check_post().is_err());
        let map = headers(&[("accept", "text/event-stream")]);
        assert!(Head::scan(&map).accept.check_get().is_ok());
        let map = headers(&[("accept", "application/json")]);
        assert!(Head::scan(&map).accept.check_get().is_err());
    }

    #[test]
    fn content_type_must_be_json() {
        let content_type = |pairs: &[(&'static str, &str)]| {
            let map = headers(pairs);
            check_content_type(Head::scan(&map).content_type)
        };
        assert!(content_type(&[("content-type", "application/json; charset=utf-8")]).is_ok());
        assert!(content_type(&[("content-type", "text/plain")]).is_err());
        assert!(content_type(&[]).is_err());
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
            let map = headers(&[(k, v)]);
            assert!(guard.check(&Head::scan(&map)).is_ok(), "{k}: {v}");
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
            let map = headers(&[(k, v)]);
            let refused = guard.check(&Head::scan(&map));
            assert!(matches!(refused, Err(Rejection::Forbidden(_))), "{k}: {v}");
        }
    }

    #[test]
    fn mirrored_headers_are_found_by_name_whatever_their_case() {
        let map = headers(&[
            ("MCP-METHOD", "tools/call"),
            ("Mcp-Name", "echo"),
            ("Mcp-Param-Region", "eu"),
            ("mcp-param-region", "second"),
            ("Mcp-Session-Id", "not a mirror"),
        ]);
        assert!(Head::scan(&map).mirrors());
        let mirrored = mirrored(&map);
        assert_eq!(mirrored.method, Some(&b"tools/call"[..]));
        assert_eq!(mirrored.name, Some(&b"echo"[..]));
        assert_eq!(mirrored.params, vec![("region", &b"eu"[..])]);
        let map = headers(&[("Mcp-Param-X", "1")]);
        assert!(Head::scan(&map).mirrors());
        let map = headers(&[("Mcp-Session-Id", "abc")]);
        assert!(!Head::scan(&map).mirrors());
    }

    #[test]
    fn scan_finds_each_header_and_keeps_the_first_of_a_repeated_one() {
        let map = headers(&[
            ("Host", "localhost:1"),
            ("Origin", "http://localhost"),
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Mcp-Session-Id", "first"),
            ("mcp-session-id", "second"),
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Last-Event-ID", "s-1"),
            ("X-Other", "ignored"),
        ]);
        let head = Head::scan(&map);
        let text = |v: Option<&HeaderValue>| v.map(|v| v.to_str().unwrap().to_string());
        assert_eq!(text(head.host).as_deref(), Some("localhost:1"));
        assert_eq!(text(head.origin).as_deref(), Some("http://localhost"));
        assert_eq!(text(head.content_type).as_deref(), Some("application/json"));
        assert_eq!(head.content_length(), Some(12));
        assert_eq!(text(head.session_id).as_deref(), Some("first"));
        assert_eq!(text(head.protocol_version).as_deref(), Some("2025-11-25"));
        assert_eq!(text(head.last_event_id).as_deref(), Some("s-1"));
        assert_eq!(head.accept, Accept::default());
        assert!(!head.mirrors());
        let map = headers(&[("content-length", "many")]);
        assert_eq!(Head::scan(&map).content_length(), None);
    }
}
