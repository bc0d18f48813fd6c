//! What a handler may ask the client for: [`InputRequest`], asked with
//! [`RequestContext::input`](crate::RequestContext::input) in either era.

use std::time::Duration;

use serde_json::{Value, json};
use session_core::wire::{ErrorObject, code};

/// How long a legacy session's client gets to answer an input request.
pub const INPUT_TIMEOUT: Duration = Duration::from_secs(300);

/// Something a handler needs from the client before it can finish: an
/// elicitation (the user), a sampling request (the client's model), or the
/// client's roots.
///
/// [`RequestContext::input`](crate::RequestContext::input) asks for it the
/// way the request's era allows: in a legacy session as a request to the
/// client on the response stream; in the modern era (2026-07-28) as an
/// `input_required` result, after which the client retries the request
/// with the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRequest {
    method: &'static str,
    params: Value,
}

impl InputRequest {
    /// `elicitation/create` in form mode: ask the user `message`, for an
    /// object matching `requested_schema`.
    pub fn elicit(message: impl Into<String>, requested_schema: Value) -> Self {
        InputRequest {
            method: "elicitation/create",
            params: json!({"message": message.into(), "requestedSchema": requested_schema}),
        }
    }

    /// `elicitation/create` with the parameters given as they are.
    pub fn elicitation(params: Value) -> Self {
        InputRequest {
            method: "elicitation/create",
            params,
        }
    }

    /// `sampling/createMessage` with the parameters given as they are.
    pub fn sampling(params: Value) -> Self {
        InputRequest {
            method: "sampling/createMessage",
            params,
        }
    }

    /// `roots/list`.
    pub fn list_roots() -> Self {
        InputRequest {
            method: "roots/list",
            params: json!({}),
        }
    }

    /// The method asked for.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The parameters of the request.
    pub fn params(&self) -> &Value {
        &self.params
    }

    /// The client capability the request needs.
    pub fn capability(&self) -> &'static str {
        match self.method {
            "elicitation/create" => "elicitation",
            "sampling/createMessage" => "sampling",
            _ => "roots",
        }
    }

    /// Checks that `answer` has the shape of this request's result (an
    /// `ElicitResult`, a `CreateMessageResult`, a `ListRootsResult`).
    pub(crate) fn check_answer(&self, key: &str, answer: &Value) -> Result<(), ErrorObject> {
        let (ok, what) = match self.method {
            "elicitation/create" => (
                answer["action"]
                    .as_str()
                    .is_some_and(|a| matches!(a, "accept" | "decline" | "cancel")),
                "an ElicitResult (an object whose action is accept, decline or cancel)",
            ),
            "sampling/createMessage" => (
                answer["role"].is_string() && answer["content"].is_object(),
                "a CreateMessageResult (an object with role and content)",
            ),
            _ => (
                answer["roots"].is_array(),
                "a ListRootsResult (an object with a roots array)",
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(ErrorObject::new(
                code::INVALID_PARAMS,
                format!("Invalid params: inputResponses.{key} is not {what}"),
            ))
        }
    }

    /// The request as an entry of `inputRequests`.
    pub(crate) fn to_entry(&self) -> Value {
        json!({"method": self.method, "params": self.params})
    }
}
