//! JSON-RPC 2.0 messages, as MCP carries them.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The id of a request: a string or an integer (never `null` in MCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Number(i64),
    /// A string id.
    String(Arc<str>),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

// Read directly rather than as an untagged enum, which would buffer every
// id before trying each variant in turn.
impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = RequestId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RequestId, E> {
                Ok(RequestId::Number(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RequestId, E> {
                i64::try_from(n)
                    .map(RequestId::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RequestId, E> {
                Ok(RequestId::String(Arc::from(s)))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        RequestId::Number(n)
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId::String(Arc::from(s))
    }
}

/// Standard and MCP-specific JSON-RPC error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server fault.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Transport-level refusal (bad header, missing session id, …): the code the
    /// official SDKs use in error bodies of 4xx answers.
    pub const SERVER_ERROR: i64 = -32000;
    /// The session named by `MCP-Session-Id` does not exist (any more).
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// A resource that does not exist (`resources/read`).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Request cancelled before it completed.
    pub const REQUEST_CANCELLED: i64 = -32800;
    /// A header contradicts the body (revision 2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A required client capability is missing (revision 2026-07-28).
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// The protocol version is not supported; `data.supported` lists those that
    /// are (revision 2026-07-28).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// The `error` member of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// One of [`code`] or an application code.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error with `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}

/// A request: expects a response.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its id.
    pub id: RequestId,
    /// The method.
    pub method: String,
    /// Parameters, unparsed.
    pub params: Option<Box<RawValue>>,
}

/// A notification: no response.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The method.
    pub method: String,
    /// Parameters, unparsed.
    pub params: Option<Box<RawValue>>,
}

/// A response, successful or not.
#[derive(Debug, Clone)]
pub struct Response {
    /// The id of the request answered; `None` only for an error about a
    /// message whose id could not be read.
    pub id: Option<RequestId>,
    /// The outcome.
    pub outcome: Result<Box<RawValue>, ErrorObject>,
}

/// Any JSON-RPC message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A notification.
    Notification(Notification),
    /// A response.
    Response(Response),
}

/// Parsing a message failed: either not JSON (`code::PARSE_ERROR`) or not a
/// JSON-RPC message (`code::INVALID_REQUEST`). `id` is the request id if it
/// could be read, so the error response can name it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// The JSON-RPC error to answer with.
    pub error: ErrorObject,
    /// The id of the offending request, if readable.
    pub id: Option<RequestId>,
}

/// The shape every message is read into before it is classified.
#[derive(Deserialize)]
struct Envelope {
    jsonrpc: Option<IsVersion2>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<RequestId>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<ErrorObject>,
}

/// Whether a `"jsonrpc"` member says `"2.0"`, read without copying it.
struct IsVersion2(bool);

impl<'de> Deserialize<'de> for IsVersion2 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = IsVersion2;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the string \"2.0\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<IsVersion2, E> {
                Ok(IsVersion2(s == "2.0"))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// Just the id of a message that is otherwise malformed.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<RequestId>,
}

/// Distinguishes a missing `id` (outer `None`) from `"id": null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<RequestId>>, D::Error> {
    Option::<RequestId>::deserialize(d).map(Some)
}

impl Message {
    /// Parses one message from JSON text.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] carrying the JSON-RPC error to answer with:
    /// [`code::PARSE_ERROR`] for text that is not JSON,
    /// [`code::INVALID_REQUEST`] for JSON that is not a JSON-RPC message.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) => Self::classify(envelope),
            Err(e) if e.is_data() => {
                // Valid JSON of the wrong shape: keep its id if it has one.
                let id = serde_json::from_slice::<IdOnly>(bytes)
                    .ok()
                    .and_then(|v| v.id);
                Err(ParseError {
                    error: ErrorObject::new(code::INVALID_REQUEST, format!("Invalid Request: {e}")),
                    id,
                })
            }
            Err(e) => Err(ParseError {
                error: ErrorObject::new(code::PARSE_ERROR, format!("Parse error: {e}")),
                id: None,
            }),
        }
    }

    /// Parses one message from an already validated JSON value.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] with [`code::INVALID_REQUEST`].
    pub fn from_raw(raw: &RawValue) -> Result<Message, ParseError> {
        let envelope: Envelope = serde_json::from_str(raw.get()).map_err(|e| ParseError {
            error: ErrorObject::new(code::INVALID_REQUEST, format!("Invalid Request: {e}")),
            id: None,
        })?;
        Self::classify(envelope)
    }

    fn classify(envelope: Envelope) -> Result<Message, ParseError> {
        let invalid = |message: String, id: Option<RequestId>| ParseError {
            error: ErrorObject::new(code::INVALID_REQUEST, message),
            id,
        };
        let id = envelope.id.clone().flatten();
        if !matches!(envelope.jsonrpc, Some(IsVersion2(true))) {
            return Err(invalid(
                "Invalid Request: \"jsonrpc\" must be \"2.0\"".into(),
                id,
            ));
        }
        match envelope {
            Envelope {
                method: Some(method),
                id: None,
                params,
                ..
            } => Ok(Message::Notification(Notification { method, params })),
            Envelope {
                method: Some(method),
                id: Some(Some(id)),
                params,
                ..
            } => Ok(Message::Request(Request { id, method, params })),
            Envelope {
                method: Some(_),
                id: Some(None),
                ..
            } => Err(invalid("Invalid Request: id must not be null".into(), None)),
            Envelope {
                method: None,
                id,
                result: Some(result),
                error: None,
                ..
            } => Ok(Message::Response(Response {
                id: id.flatten(),
                outcome: Ok(result),
            })),
            Envelope {
                method: None,
                id,
                result: None,
                error: Some(error),
                ..
            } => Ok(Message::Response(Response {
                id: id.flatten(),
                outcome: Err(error),
            })),
            _ => Err(invalid(
                "Invalid Request: not a request, notification or response".into(),
                id,
            )),
        }
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Room for the envelope and id besides the payload, so the string
        // is allocated once.
        let payload = match self {
            Message::Request(r) => {
                r.method.len() + r.params.as_deref().map_or(0, |p| p.get().len())
            }
            Message::Notification(n) => {
                n.method.len() + n.params.as_deref().map_or(0, |p| p.get().len())
            }
            Message::Response(r) => r.outcome.as_ref().map_or(128, |result| result.get().len()),
        };
        let mut out = String::with_capacity(96 + payload);
        out.push_str("{\"jsonrpc\":\"2.0\"");
        let push_id = |out: &mut String, id: &Option<RequestId>| {
            out.push_str(",\"id\":");
            match id {
                Some(RequestId::Number(n)) => {
                    use fmt::Write as _;
                    let _ = write!(out, "{n}");
                }
                Some(RequestId::String(s)) => push_json_string(out, s),
                None => out.push_str("null"),
            }
        };
        match self {
            Message::Request(r) => {
                push_id(&mut out, &Some(r.id.clone()));
                push_method(&mut out, &r.method, r.params.as_deref());
            }
            Message::Notification(n) => push_method(&mut out, &n.method, n.params.as_deref()),
            Message::Response(r) => {
                push_id(&mut out, &r.id);
                match &r.outcome {
                    Ok(result) => {
                        out.push_str(",\"result\":");
                        out.push_str(result.get());
                    }
                    Err(error) => {
                        out.push_str(",\"error\":");
                        out.push_str(&serde_json::to_string(error).unwrap_or_else(|_| "{}".into()));
                    }
                }
            }
        }
        out.push('}');
        out
    }
}

fn push_method(out: &mut String, method: &str, params: Option<&RawValue>) {
    out.push_str(",\"method\":");
    push_json_string(out, method);
    if let Some(params) = params {
        out.push_str(",\"params\":");
        out.push_str(params.get());
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    // Serializing into a `Vec` of the string's own bytes cannot fail, and
    // serde_json writes only valid UTF-8.
    let mut bytes = std::mem::take(out).into_bytes();
    let _ = serde_json::to_writer(&mut bytes, text);
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// Serializes `value` as raw JSON, for params and results.
///
/// # Panics
///
/// Never for the types in this crate; a `Serialize` impl that fails (a map
/// with non-string keys) is a bug in the caller.
pub fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("value serializes to JSON")
}

/// Parses `params` (absent means `{}`) into `T`.
///
/// # Errors
///
/// An [`ErrorObject`] with [`code::INVALID_PARAMS`] naming what is wrong.
pub fn parse_params<T: de::DeserializeOwned>(params: Option<&RawValue>) -> Result<T, ErrorObject> {
    let text = params.map_or("{}", RawValue::get);
    serde_json::from_str(text)
        .map_err(|e| ErrorObject::new(code::INVALID_PARAMS, format!("Invalid params: {e}")))
}

impl Response {
    /// A successful response carrying `result`.
    pub fn ok(id: RequestId, result: Box<RawValue>) -> Self {
        Response {
            id: Some(id),
            outcome: Ok(result),
        }
    }

    /// An error response.
    pub fn error(id: Option<RequestId>, error: ErrorObject) -> Self {
        Response {
            id,
            outcome: Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Message, ParseError> {
        Message::parse(v.to_string().as_bytes())
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let req = parse(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})).unwrap();
        assert!(matches!(
            req,
            Message::Request(Request {
                id: RequestId::Number(7),
                ..
            })
        ));
        let note = parse(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).unwrap();
        assert!(matches!(note, Message::Notification(_)));
        let escaped = Message::parse(br#"{"jsonrpc":"2\u002e0","method":"n"}"#).unwrap();
        assert!(matches!(escaped, Message::Notification(_)));
        let resp = parse(json!({"jsonrpc": "2.0", "id": "a", "result": {}})).unwrap();
        assert!(matches!(
            resp,
            Message::Response(Response { outcome: Ok(_), .. })
        ));
        let err =
            parse(json!({"jsonrpc": "2.0", "id": null, "error": {"code": 1, "message": "m"}}))
                .unwrap();
        assert!(matches!(
            err,
            Message::Response(Response {
                id: None,
                outcome: Err(_)
            })
        ));
    }

    #[test]
    fn ids_are_strings_or_integers_only() {
        let id = |v: Value| serde_json::from_value::<RequestId>(v);
        assert_eq!(id(json!(-3)).unwrap(), RequestId::Number(-3));
        assert_eq!(id(json!(i64::MAX)).unwrap(), RequestId::Number(i64::MAX));
        assert_eq!(id(json!("a\"b")).unwrap(), RequestId::from("a\"b"));
        // From text, so escaped strings take serde_json's owned path.
        let escaped: RequestId = serde_json::from_str(r#""x\u0041""#).unwrap();
        assert_eq!(escaped, RequestId::from("xA"));
        for bad in [
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!(null),
            json!([1]),
        ] {
            assert!(id(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_what_is_not_json_rpc_with_the_right_code() {
        let not_json = Message::parse(b"{nope").unwrap_err();
        assert_eq!(not_json.error.code, code::PARSE_ERROR);
        for bad in [
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
            json!([1, 2]),
            json!("text"),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert_eq!(e.error.code, code::INVALID_REQUEST, "{bad}");
        }
        let e = parse(json!({"jsonrpc": "1.0", "id": 9, "method": "x"})).unwrap_err();
        assert_eq!(
            e.id,
            Some(RequestId::Number(9)),
            "the id is kept for the error response"
        );
    }

    #[test]
    fn serializes_back_to_json_rpc() {
        let m = Message::Response(Response::ok("x".into(), to_raw(&json!({"a": 1}))));
        assert_eq!(
            m.to_json(),
            r#"{"jsonrpc":"2.0","id":"x","result":{"a":1}}"#
        );
        let m = Message::Response(Response::ok("q\"1".into(), to_raw(&json!(null))));
        assert_eq!(
            m.to_json(),
            r#"{"jsonrpc":"2.0","id":"q\"1","result":null}"#
        );
        let m = Message::Response(Response::ok(RequestId::Number(-4), to_raw(&json!(1))));
        assert_eq!(m.to_json(), r#"{"jsonrpc":"2.0","id":-4,"result":1}"#);
        let m = Message::Response(Response::error(None, ErrorObject::new(-1, "m")));
        assert_eq!(
            m.to_json(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m"}}"#
        );
        let m = Message::Notification(Notification {
            method: "n".into(),
            params: Some(to_raw(&json!({"p": true}))),
        });
        let back = Message::parse(m.to_json().as_bytes()).unwrap();
        assert!(matches!(back, Message::Notification(n) if n.method == "n"));
    }

    #[test]
    fn params_parse_with_invalid_params_errors() {
        #[derive(Deserialize)]
        struct P {
            #[allow(dead_code)]
            name: String,
        }
        let err = parse_params::<P>(Some(&to_raw(&json!({"x": 1}))))
            .err()
            .unwrap();
        assert_eq!(err.code, code::INVALID_PARAMS);
        assert!(parse_params::<Value>(None).is_ok());
    }
}
