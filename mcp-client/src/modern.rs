//! The 2026-07-28 era ("modern"): no session, every request carrying its
//! `_meta` envelope and, over HTTP, mirrored in headers; results read by
//! their `resultType`.
//!
//! Everything here is pure: building what goes out, reading what comes
//! back. The client core ([`Client`](crate::Client)) decides when.

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use session_core::wire::{ErrorObject, META_PROTOCOL_VERSION, code};

use crate::{Error, Result};

/// `_meta` key of the client's identity.
pub(crate) const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the client's capabilities, per request.
pub(crate) const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the server's identity in results.
pub(crate) const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The tasks extension's identifier.
pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// The kinds of input a server may ask for in `input_required`.
pub(crate) const INPUT_KINDS: [&str; 3] =
    ["elicitation/create", "sampling/createMessage", "roots/list"];

/// Whether `code` is an error only a modern server answers with: it tells
/// a modern server from a legacy one when probing.
pub(crate) fn is_modern_error(code: i64) -> bool {
    matches!(
        code,
        code::HEADER_MISMATCH
            | code::MISSING_CLIENT_CAPABILITY
            | code::UNSUPPORTED_PROTOCOL_VERSION
    )
}

/// The versions a `-32022` error says the server supports.
pub(crate) fn supported_versions(error: &ErrorObject) -> Vec<String> {
    error
        .data
        .as_ref()
        .and_then(|d| d["supported"].as_array())
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What every modern request says about its client.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) version: String,
    pub(crate) client_info: Value,
    pub(crate) capabilities: Value,
}

impl Envelope {
    /// Puts the envelope into `params` (made an object if it is not one),
    /// beside what its `_meta` already holds.
    pub(crate) fn wrap(&self, params: &mut Value) {
        if !params.is_object() {
            *params = Value::Object(Map::new());
        }
        let meta = params.as_object_mut().map(|p| {
            p.entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()))
        });
        if let Some(meta) = meta {
            if !meta.is_object() {
                *meta = Value::Object(Map::new());
            }
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_PROTOCOL_VERSION.into(), self.version.clone().into());
                meta.insert(META_CLIENT_INFO.into(), self.client_info.clone());
                meta.insert(META_CLIENT_CAPABILITIES.into(), self.capabilities.clone());
            }
        }
    }
}

/// A header value as the transport binding wants it: as it is when it is
/// plain visible ASCII (spaces inside allowed), else
/// `=?base64?…?=` of its UTF-8 (also for a plain value that looks like that
/// sentinel, so it cannot be misread).
pub(crate) fn header_value(value: &str) -> HeaderValue {
    let printable = value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b));
    let padded = value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    let sentinel = value.starts_with("=?base64?") && value.ends_with("?=");
    let plain = printable && !padded && !sentinel;
    let text = if plain {
        value.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
        )
    };
    // Visible ASCII either way.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One tool parameter mirrored into a `Mcp-Param-{name}` header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamHeader {
    /// The header's name, `mcp-param-{x-mcp-header}`.
    pub(crate) name: HeaderName,
    /// The chain of `properties` keys leading to the parameter.
    pub(crate) path: Vec<String>,
}

/// The `x-mcp-header` annotations of a tool's `inputSchema`, or why the
/// tool definition is invalid (it is then left out of `tools/list`).
pub(crate) fn param_headers(schema: &Value) -> std::result::Result<Vec<ParamHeader>, String> {
    let mut found = Vec::new();
    collect(schema, &mut Vec::new(), &mut found)?;
    // An annotation anywhere but on a chain of `properties` is invalid.
    if count_annotations(schema) != found.len() {
        return Err(
            "an x-mcp-header annotation is not reachable through `properties` alone".into(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for header in &found {
        if !seen.insert(header.name.as_str().to_string()) {
            return Err(format!(
                "two parameters are mirrored into the header {}",
                header.name
            ));
        }
    }
    Ok(found)
}

fn collect(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<ParamHeader>,
) -> std::result::Result<(), String> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, property) in properties {
        path.push(key.clone());
        if let Some(annotation) = property.get("x-mcp-header") {
            let name = annotation
                .as_str()
                .filter(|n| !n.is_empty() && n.bytes().all(is_tchar))
                .ok_or_else(|| {
                    format!("x-mcp-header of {} is not an HTTP token", path.join("."))
                })?;
            let primitive = matches!(
                property.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "boolean")
            );
            if !primitive {
                return Err(format!(
                    "x-mcp-header on {}, which is not a string, integer or boolean",
                    path.join(".")
                ));
            }
            let name = HeaderName::from_bytes(format!("mcp-param-{name}").as_bytes())
                .map_err(|e| format!("x-mcp-header {name:?}: {e}"))?;
            found.push(ParamHeader {
                name,
                path: path.clone(),
            });
        }
        collect(property, path, found)?;
        path.pop();
    }
    Ok(())
}

fn count_annotations(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            usize::from(map.contains_key("x-mcp-header"))
                + map.values().map(count_annotations).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(count_annotations).sum(),
        _ => 0,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The headers of a modern POST beyond `MCP-Protocol-Version`:
/// `Mcp-Method`, `Mcp-Name` for the methods that name something (a task's
/// id for `tasks/*`, as the tasks extension says), and the tool's
/// `Mcp-Param-*` headers.
pub(crate) fn request_headers(
    method: &str,
    params: &Value,
    params_of_tool: &[ParamHeader],
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("mcp-method"), header_value(method));
    let name = match method {
        "tools/call" | "prompts/get" => params["name"].as_str(),
        "resources/read" => params["uri"].as_str(),
        "tasks/get" | "tasks/update" | "tasks/cancel" => params["taskId"].as_str(),
        _ => None,
    };
    if let Some(name) = name {
        headers.insert(HeaderName::from_static("mcp-name"), header_value(name));
    }
    if method == "tools/call" {
        for header in params_of_tool {
            let mut value = &params["arguments"];
            for key in &header.path {
                value = &value[key.as_str()];
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                // Absent or null: no header.
                _ => continue,
            };
            headers.insert(header.name.clone(), header_value(&text));
        }
    }
    headers
}

/// A modern result, by its `resultType`.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `complete` (or no `resultType`): the result itself.
    Complete(Value),
    /// `input_required`: what the server asks, and the state to echo.
    InputRequired {
        requests: Map<String, Value>,
        state: Option<String>,
    },
    /// `task`: a `CreateTaskResult`.
    Task(Value),
}

/// Reads `result` (of `method`) by its `resultType`.
pub(crate) fn classify(method: &str, result: Value) -> Result<Reply> {
    let kind = match result.get("resultType") {
        None | Some(Value::Null) => "complete",
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(Error::Protocol(format!(
                "{method} answered with a resultType that is not a string: {other}"
            )));
        }
    };
    match kind {
        "complete" => Ok(Reply::Complete(result)),
        "input_required" => {
            let requests = match result.get("inputRequests") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(requests)) => requests.clone(),
                Some(_) => {
                    return Err(Error::Protocol(format!(
                        "{method} answered input_required with inputRequests that is not an object"
                    )));
                }
            };
            let state = match result.get("requestState") {
                None | Some(Value::Null) => None,
                Some(Value::String(state)) => Some(state.clone()),
                Some(_) => {
                    return Err(Error::Protocol(format!(
                        "{method} answered input_required with a requestState that is not a string"
                    )));
                }
            };
            if requests.is_empty() && state.is_none() {
                return Err(Error::Protocol(format!(
                    "{method} answered input_required with neither inputRequests nor requestState"
                )));
            }
            Ok(Reply::InputRequired { requests, state })
        }
        "task" => {
            if result["taskId"].as_str().is_none_or(str::is_empty) {
                return Err(Error::Protocol(format!(
                    "{method} answered with a task that has no taskId"
                )));
            }
            Ok(Reply::Task(result))
        }
        other => Err(Error::Protocol(format!(
            "{method} answered with an unknown resultType {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_values_are_plain_or_base64_sentinels() {
        assert_eq!(header_value("us-west1"), "us-west1");
        assert_eq!(header_value("a b"), "a b");
        assert_eq!(
            header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(header_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }

    #[test]
    fn envelope_keeps_what_meta_holds() {
        let envelope = Envelope {
            version: "2026-07-28".into(),
            client_info: json!({"name": "c", "version": "1"}),
            capabilities: json!({}),
        };
        let mut params = json!({"name": "t", "_meta": {"progressToken": 3}});
        envelope.wrap(&mut params);
        assert_eq!(params["_meta"]["progressToken"], 3);
        assert_eq!(params["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(params["_meta"][META_CLIENT_INFO]["name"], "c");
        let mut none = Value::Null;
        envelope.wrap(&mut none);
        assert!(none["_meta"][META_CLIENT_CAPABILITIES].is_object());
    }

    #[test]
    fn param_headers_follow_properties_and_reject_the_rest() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {
                "dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "query": {"type": "string"}}});
        let headers = param_headers(&schema).unwrap();
        assert_eq!(headers.len(), 2);
        let params = json!({"name": "sql", "arguments": {"region": "eu", "opts": {"dry": true}}});
        let out = request_headers("tools/call", &params, &headers);
        assert_eq!(out["mcp-method"], "tools/call");
        assert_eq!(out["mcp-name"], "sql");
        assert_eq!(out["mcp-param-region"], "eu");
        assert_eq!(out["mcp-param-dry"], "true");
        // Absent or null: no header.
        let params = json!({"name": "sql", "arguments": {"region": null}});
        let out = request_headers("tools/call", &params, &headers);
        assert!(out.get("mcp-param-region").is_none());

        for bad in [
            json!({"properties": {"n": {"type": "number", "x-mcp-header": "N"}}}),
            json!({"properties": {"n": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"n": {"type": "string", "x-mcp-header": "a b"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"},
                                  "b": {"type": "string", "x-mcp-header": "x"}}}),
            json!({"properties": {"l": {"type": "array",
                "items": {"type": "string", "x-mcp-header": "L"}}}}),
            json!({"oneOf": [{"properties": {"n": {"type": "string", "x-mcp-header": "N"}}}]}),
        ] {
            assert!(param_headers(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_are_read_by_result_type() {
        assert!(matches!(
            classify("m", json!({"x": 1})),
            Ok(Reply::Complete(_))
        ));
        assert!(matches!(
            classify("m", json!({"resultType": "complete"})),
            Ok(Reply::Complete(_))
        ));
        assert!(matches!(
            classify(
                "m",
                json!({"resultType": "input_required", "requestState": "s"})
            ),
            Ok(Reply::InputRequired { .. })
        ));
        assert!(matches!(
            classify("m", json!({"resultType": "task", "taskId": "t"})),
            Ok(Reply::Task(_))
        ));
        for bad in [
            json!({"resultType": 3}),
            json!({"resultType": "later"}),
            json!({"resultType": "input_required"}),
            json!({"resultType": "input_required", "inputRequests": []}),
            json!({"resultType": "task"}),
        ] {
            assert!(matches!(classify("m", bad), Err(Error::Protocol(_))));
        }
    }
}
