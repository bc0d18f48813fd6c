//! The headers a 2026-07-28 request mirrors its body into (SEP-2243):
//! `Mcp-Method`, `Mcp-Name`, and `Mcp-Param-{Name}` for tool arguments
//! marked `x-mcp-header`, each checked against the body (-32020 and HTTP
//! 400 on any difference), values in the Base64 sentinel form decoded
//! first.

use base64::Engine as _;
use serde_json::Value;
use serde_json::value::RawValue;
use session_core::wire::{ErrorObject, code};

use super::Mirrored;
use crate::registry::{HeaderParam, Registry};

/// `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` against the body of a
/// request for `method` naming `name` (a tool or prompt), `uri` or
/// `task_id` (a task), with `arguments` (a tool's).
pub(super) fn check(
    registry: &Registry,
    method: &str,
    name: Option<&str>,
    uri: Option<&str>,
    task_id: Option<&str>,
    arguments: Option<&RawValue>,
    mirrored: &Mirrored<'_>,
) -> Result<(), ErrorObject> {
    match mirrored.method {
        Some(sent) if trim(sent) == method.as_bytes() => {}
        Some(sent) => {
            return Err(mismatch(format!(
                "Mcp-Method header value '{}' does not match the body's method '{}'",
                String::from_utf8_lossy(trim(sent)),
                method
            )));
        }
        None => return Err(mismatch("the Mcp-Method header is missing".into())),
    }
    let named = match method {
        "tools/call" | "prompts/get" => Some(name.unwrap_or("")),
        "resources/read" => Some(uri.unwrap_or("")),
        // The tasks extension routes by task (a body without one is
        // refused by the method).
        "tasks/get" | "tasks/update" | "tasks/cancel" => task_id,
        _ => None,
    };
    if let Some(body) = named {
        let Some(header) = mirrored.name else {
            return Err(mismatch("the Mcp-Name header is missing".into()));
        };
        let header = decode(header).map_err(|why| mismatch(format!("Mcp-Name: {why}")))?;
        if header != body {
            return Err(mismatch(format!(
                "Mcp-Name header value '{header}' does not match the body's '{body}'"
            )));
        }
    }
    if method == "tools/call"
        && let Some(name) = name
        && let Some(mapped) = registry.header_params(name)
    {
        check_params(mapped, arguments, &mirrored.params)?;
    }
    Ok(())
}

pub(super) fn mismatch(message: String) -> ErrorObject {
    ErrorObject::new(code::HEADER_MISMATCH, format!("Header mismatch: {message}"))
}

/// A header value without optional whitespace around it.
fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// A mirrored value, decoded: the Base64 sentinel form
/// (`=?base64?…?=`, strict standard alphabet with padding) or the value as
/// sent.
fn decode(value: &[u8]) -> Result<String, String> {
    let value = trim(value);
    let text = std::str::from_utf8(value).map_err(|_| "the value is not ASCII".to_string())?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| format!("'{text}' is not valid Base64 of UTF-8 text")),
        None => Ok(text.to_string()),
    }
}

/// `Mcp-Param-*` headers against the tool arguments they mirror.
fn check_params(
    mapped: &[HeaderParam],
    arguments: Option<&RawValue>,
    headers: &[(&str, &[u8])],
) -> Result<(), ErrorObject> {
    let arguments: Value = arguments
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or(Value::Null);
    for param in mapped {
        let header = headers
            .iter()
            .find(|(name, _)| *name == param.header)
            .map(|(_, value)| *value);
        let decoded = header
            .map(decode)
            .transpose()
            .map_err(|why| mismatch(format!("Mcp-Param-{}: {why}", param.name)))?;
        let body = param
            .path
            .iter()
            .try_fold(&arguments, |value, key| value.get(key))
            .filter(|value| !value.is_null());
        match (body, decoded) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(mismatch(format!(
                    "the Mcp-Param-{} header is missing but the arguments carry its value",
                    param.name
                )));
            }
            (Some(body), Some(header)) => {
                if !same_value(body, &header) {
                    return Err(mismatch(format!(
                        "Mcp-Param-{} header value '{header}' does not match the argument {body}",
                        param.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether a header value states the argument `body`: strings as they
/// are, numbers numerically, booleans as `true`/`false`.
fn same_value(body: &Value, header: &str) -> bool {
    match body {
        Value::String(text) => text == header,
        Value::Bool(flag) => header == if *flag { "true" } else { "false" },
        Value::Number(number) => match (number.as_f64(), header.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        // Objects and arrays cannot be mirrored: never equal.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mirrored_values_decode_only_the_strict_sentinel_form() {
        assert_eq!(decode(b"  echo  "), Ok("echo".into()));
        assert_eq!(decode(b"=?base64?SGVsbG8=?="), Ok("Hello".into()));
        assert!(decode(b"=?base64?SGVsbG8?=").is_err(), "missing padding");
        assert!(decode(b"=?base64?SGVs!!!bG8=?=").is_err(), "bad characters");
        // Not wrapped by both markers: a literal.
        assert_eq!(decode(b"=?base64?SGVsbG8="), Ok("=?base64?SGVsbG8=".into()));
        assert_eq!(decode(b"SGVsbG8="), Ok("SGVsbG8=".into()));
        assert!(decode(&[0xff]).is_err());
    }

    #[test]
    fn header_values_compare_by_the_argument_type() {
        assert!(same_value(&json!("us-west1"), "us-west1"));
        assert!(!same_value(&json!("us-west1"), "us-east1"));
        assert!(same_value(&json!(42), "42.0"));
        assert!(!same_value(&json!(42), "forty-two"));
        assert!(same_value(&json!(true), "true"));
        assert!(!same_value(&json!(false), "true"));
    }

    #[test]
    fn a_mapped_argument_needs_its_header_and_an_absent_one_does_not() {
        let mapped = [HeaderParam {
            name: "Region".into(),
            header: "region".into(),
            path: vec!["region".into()],
        }];
        let args = |text: &str| serde_json::value::RawValue::from_string(text.into()).unwrap();
        let header = |v: &'static str| vec![("region", v.as_bytes())];
        let with = args(r#"{"region":"eu"}"#);
        assert!(check_params(&mapped, Some(&with), &header("eu")).is_ok());
        assert_eq!(
            check_params(&mapped, Some(&with), &[]).unwrap_err().code,
            code::HEADER_MISMATCH
        );
        assert!(check_params(&mapped, Some(&with), &header("us")).is_err());
        let without = args(r#"{"level":1}"#);
        assert!(check_params(&mapped, Some(&without), &[]).is_ok());
        let null = args(r#"{"region":null}"#);
        assert!(check_params(&mapped, Some(&null), &[]).is_ok());
        assert!(check_params(&mapped, None, &[]).is_ok());
    }
}
