//! Multi round-trip requests (2026-07-28): the sealed `requestState` a
//! server hands the client with `input_required` and gets back on the
//! retry.
//!
//! The state carries the answers given so far, so a handler that asks
//! again on the retry finds them; it is sealed with HMAC-SHA256 under a key
//! every replica shares (kept in the handle store), and bound to what it was
//! minted for: the method, the tool, prompt or resource, the principal, and
//! an expiry. A state that fails any check is refused before the handler
//! runs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use session_core::wire::{ErrorObject, code};
use session_core::{Handles, NewSession, SessionId, SessionState, Timestamp};
use sha2::Sha256;
use tokio::sync::OnceCell;

/// The id of the record in the handle store that holds the key. It cannot
/// be named as a handle ([`Handles::parse`] refuses it).
const KEY_RECORD: &str = "mcp-request-state-key";

/// The largest `requestState` minted or accepted.
pub(crate) const MAX_STATE_BYTES: usize = 256 * 1024;

/// Seals and opens `requestState`s with the key all replicas share.
#[derive(Debug, Default)]
pub(crate) struct StateKey {
    key: OnceCell<[u8; 32]>,
}

/// What a `requestState` is bound to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    /// The method of the request (`tools/call`, …).
    pub(crate) method: &'a str,
    /// The tool or prompt name, or the resource URI.
    pub(crate) target: &'a str,
    /// The principal the request runs for.
    pub(crate) principal: Option<&'a str>,
}

/// The sealed payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// Format version.
    v: u8,
    m: String,
    t: String,
    p: Option<String>,
    /// Expiry, Unix milliseconds.
    x: u64,
    /// Answers so far, by input key.
    a: Map<String, Value>,
}

/// Why a `requestState` was refused; the message tells the client.
pub(crate) fn invalid(reason: &str) -> ErrorObject {
    ErrorObject::new(
        code::INVALID_PARAMS,
        format!("Invalid requestState: {reason}; retry the original request without it"),
    )
    .with_data(json!({"reason": "invalid_request_state"}))
}

type HmacSha256 = Hmac<Sha256>;

impl StateKey {
    /// The key, from the handle store (created there by the first replica
    /// that needs it).
    async fn key(&self, handles: &Handles) -> Result<&[u8; 32], ErrorObject> {
        self.key
            .get_or_try_init(|| load_or_create(handles))
            .await
            .map_err(|e| {
                if e.is_unavailable() {
                    return crate::error::handle_error_object(&e);
                }
                ErrorObject::new(
                    code::INTERNAL_ERROR,
                    format!("cannot read the request-state key from the store: {e}"),
                )
            })
    }

    /// Seals `answers` for a retry of the request `binding` describes,
    /// valid until `expires`.
    pub(crate) async fn seal(
        &self,
        handles: &Handles,
        binding: Binding<'_>,
        expires: Timestamp,
        answers: Map<String, Value>,
    ) -> Result<String, ErrorObject> {
        let payload = Payload {
            v: 1,
            m: binding.method.into(),
            t: binding.target.into(),
            p: binding.principal.map(str::to_string),
            x: expires.as_millis(),
            a: answers,
        };
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let body = B64.encode(json);
        let mac = mac(self.key(handles).await?, &body);
        let state = format!("{body}.{}", B64.encode(mac));
        if state.len() > MAX_STATE_BYTES {
            return Err(ErrorObject::new(
                code::INTERNAL_ERROR,
                format!(
                    "the answers given so far exceed the {MAX_STATE_BYTES}-byte request state limit"
                ),
            ));
        }
        Ok(state)
    }

    /// Opens a `requestState` the client returned: the answers it carries,
    /// if it was sealed here, for this request and principal, and has not
    /// expired at `now`.
    pub(crate) async fn open(
        &self,
        handles: &Handles,
        state: &str,
        binding: Binding<'_>,
        now: Timestamp,
    ) -> Result<Map<String, Value>, ErrorObject> {
        if state.len() > MAX_STATE_BYTES {
            return Err(invalid("it is too large"));
        }
        let (body, tag) = state
            .rsplit_once('.')
            .ok_or_else(|| invalid("it was not issued by this server"))?;
        let tag = B64
            .decode(tag)
            .map_err(|_| invalid("it was not issued by this server"))?;
        let key = self.key(handles).await?;
        let mut check = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        check.update(b"mcp-request-state.");
        check.update(body.as_bytes());
        check
            .verify_slice(&tag)
            .map_err(|_| invalid("it was altered or not issued by this server"))?;
        let payload: Payload = B64
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| invalid("it cannot be read"))?;
        if payload.v != 1 {
            return Err(invalid("its format is not known"));
        }
        if payload.m != binding.method || payload.t != binding.target {
            return Err(invalid("it was issued for another request"));
        }
        if payload.p.as_deref() != binding.principal {
            return Err(invalid("it was issued to another principal"));
        }
        if now.as_millis() >= payload.x {
            return Err(invalid("it expired"));
        }
        Ok(payload.a)
    }
}

fn mac(key: &[u8; 32], body: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"mcp-request-state.");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The key record: created with a fresh random key unless a replica (or an
/// earlier run) made it first.
async fn load_or_create(handles: &Handles) -> Result<[u8; 32], session_core::Error> {
    let id = SessionId::parse(KEY_RECORD).expect("a valid id");
    let manager = handles.manager();
    if let Some(record) = manager.store().load(&id).await? {
        return decode(&record.state().clone());
    }
    let key: [u8; 32] = rand::random();
    let mut state = SessionState::new();
    state.insert("key".into(), json!(B64.encode(key)));
    // Practically forever: the key outlives every state it sealed.
    let new = NewSession::new()
        .state(state)
        .idle_timeout(std::time::Duration::from_secs(100 * 365 * 24 * 3600));
    match manager.create_with(new, || id.clone()).await {
        Ok(_) => Ok(key),
        Err(session_core::Error::AlreadyExists) => {
            let record = manager
                .store()
                .load(&id)
                .await?
                .ok_or(session_core::Error::NotFound)?;
            decode(record.state())
        }
        Err(e) => Err(e),
    }
}

fn decode(state: &SessionState) -> Result<[u8; 32], session_core::Error> {
    state
        .get("key")
        .and_then(Value::as_str)
        .and_then(|text| B64.decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        // Damage, not unavailability: retrying would not help.
        .ok_or_else(|| session_core::Error::Corrupt {
            id: SessionId::parse(KEY_RECORD).expect("a valid id"),
            detail: "the stored request-state key is damaged".into(),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use session_core::{ManagerConfig, ManualClock};
    use session_store::MemoryStore;

    use super::*;

    fn handles() -> Handles {
        Handles::new(
            Arc::new(MemoryStore::new()),
            Arc::new(ManualClock::default()),
            ManagerConfig::default(),
        )
    }

    const BINDING: Binding<'static> = Binding {
        method: "tools/call",
        target: "confirm",
        principal: Some("alice"),
    };

    #[tokio::test]
    async fn a_sealed_state_opens_only_for_its_request_principal_and_time() {
        let handles = handles();
        let key = StateKey::default();
        let mut answers = Map::new();
        answers.insert("ok".into(), json!({"action": "accept"}));
        let expires = Timestamp::from_millis(10_000);
        let state = key
            .seal(&handles, BINDING, expires, answers.clone())
            .await
            .unwrap();
        let now = Timestamp::from_millis(5_000);
        assert_eq!(key.open(&handles, &state, BINDING, now).await, Ok(answers));
        let refused = |b: Binding<'static>, at: u64| {
            let (key, handles, state) = (&key, &handles, &state);
            async move {
                key.open(handles, state, b, Timestamp::from_millis(at))
                    .await
                    .unwrap_err()
            }
        };
        let other_tool = Binding {
            target: "other",
            ..BINDING
        };
        let other_method = Binding {
            method: "prompts/get",
            ..BINDING
        };
        let other_principal = Binding {
            principal: Some("bob"),
            ..BINDING
        };
        let nobody = Binding {
            principal: None,
            ..BINDING
        };
        for binding in [other_tool, other_method, other_principal, nobody] {
            assert_eq!(refused(binding, 5_000).await.code, code::INVALID_PARAMS);
        }
        assert!(refused(BINDING, 10_000).await.message.contains("expired"));
        // A replica sharing the store opens it too; one with its own does not.
        let again = StateKey::default();
        assert!(again.open(&handles, &state, BINDING, now).await.is_ok());
        let elsewhere = StateKey::default();
        let other_store = self::handles();
        assert!(
            elsewhere
                .open(&other_store, &state, BINDING, now)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn tampering_anywhere_is_refused() {
        let handles = handles();
        let key = StateKey::default();
        let state = key
            .seal(
                &handles,
                BINDING,
                Timestamp::from_millis(10_000),
                Map::new(),
            )
            .await
            .unwrap();
        let now = Timestamp::from_millis(1);
        let mut bytes = state.clone().into_bytes();
        for i in [0, bytes.len() / 2, bytes.len() - 1] {
            let original = bytes[i];
            bytes[i] = if original == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes.clone()).unwrap();
            let error = key
                .open(&handles, &tampered, BINDING, now)
                .await
                .unwrap_err();
            assert_eq!(error.data.unwrap()["reason"], "invalid_request_state");
            bytes[i] = original;
        }
        for junk in ["", ".", "abc", "abc.def", &"x".repeat(MAX_STATE_BYTES + 1)] {
            assert!(
                key.open(&handles, junk, BINDING, now).await.is_err(),
                "{junk:.10}"
            );
        }
    }
}
