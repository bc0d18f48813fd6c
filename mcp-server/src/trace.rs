//! Request spans: each request handled inside a `tracing` span that names
//! its era, method, legacy session and W3C trace context, so that every log
//! line of the request carries them (`--log-format json`). Off by default
//! ([`ServerConfig::request_spans`](crate::ServerConfig::request_spans)): a
//! span per request costs on the hot path.
//!
//! The trace context comes from the request's `_meta.traceparent`
//! (2026-07-28) or, failing that, the HTTP `traceparent` header; the span
//! records its trace id and the caller's span id as its parent. Tokens and
//! state values are never recorded.

use serde_json::value::RawValue;
use session_core::wire::Message;

/// A W3C `traceparent`: version `00`, a trace id and a parent id, both not
/// all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent<'a> {
    pub(crate) trace_id: &'a str,
    pub(crate) parent_id: &'a str,
}

/// Reads a `traceparent` value; `None` for one that is not well-formed.
pub(crate) fn parse(value: &str) -> Option<TraceParent<'_>> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    (version.len() == 2
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(TraceParent {
        trace_id,
        parent_id,
    })
}

/// The `_meta.traceparent` of a message's params, if any.
fn from_meta(params: Option<&RawValue>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "_meta")]
        meta: Option<Meta>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        traceparent: Option<String>,
    }
    let params: Params = serde_json::from_str(params?.get()).ok()?;
    params.meta?.traceparent
}

/// The span a request is handled in.
pub(crate) fn request_span(
    message: &Message,
    modern: bool,
    session: Option<&str>,
    header: Option<&str>,
) -> tracing::Span {
    let (method, params) = match message {
        Message::Request(r) => (r.method.as_str(), r.params.as_deref()),
        Message::Notification(n) => (n.method.as_str(), n.params.as_deref()),
        Message::Response(_) => ("response", None),
    };
    let meta = from_meta(params);
    let traceparent = meta.as_deref().or(header);
    let parent = traceparent.and_then(parse);
    let span = tracing::info_span!(
        "request",
        era = if modern { "modern" } else { "legacy" },
        method = crate::metrics::method_label(method),
        session = if modern { None } else { session },
        trace_id = parent.map(|p| p.trace_id),
        parent_span_id = parent.map(|p| p.parent_id),
    );
    #[cfg(feature = "otel")]
    if let Some(traceparent) = traceparent.filter(|_| parent.is_some()) {
        // The caller's span is this one's parent in the exported trace.
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let carrier: std::collections::HashMap<String, String> =
            [("traceparent".to_string(), traceparent.to_string())].into();
        let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(context);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_w3c_writes_them() {
        let good = parse("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01").unwrap();
        assert_eq!(good.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(good.parent_id, "00f067aa0ba902b7");
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-00f067aa0ba902b7-01",
            "ff-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-extra",
            "00-xyz7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
