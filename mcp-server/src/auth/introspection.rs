//! Opaque bearer tokens checked by asking the issuer (token introspection,
//! RFC 7662), its answers kept a short while.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::{Authenticated, BearerAuth, FETCH_BUDGET, Refusal};
use crate::error::Error;

/// Token introspection (RFC 7662): the issuer says whether a token is
/// active, and for whom.
pub(super) struct Introspection {
    client_id: String,
    client_secret: String,
    /// The endpoint, once known (configured, or from the issuer's
    /// metadata).
    endpoint: Mutex<Option<String>>,
    /// When looking the endpoint up last failed: not again before
    /// `refresh_interval`, whatever requests arrive.
    discovery_failed: Mutex<Option<Instant>>,
    /// Answers by the token's SHA-256, each until its time.
    cache: Mutex<foldhash::HashMap<[u8; 32], Answer>>,
}

/// An introspection answer kept: until when, and what it said.
type Answer = (Instant, Result<Authenticated, Refusal>);

/// How long an introspection answer is reused (never past the token's
/// expiry).
const INTROSPECTION_CACHE: Duration = Duration::from_secs(30);

/// The most introspection answers kept; beyond, the cache starts over.
const INTROSPECTION_CACHE_ENTRIES: usize = 10_000;

impl BearerAuth {
    /// Opaque tokens from `issuer`, checked at its introspection endpoint
    /// (RFC 7662; from its metadata's `introspection_endpoint`, or
    /// [`introspection_endpoint`](Self::introspection_endpoint)) with this
    /// server's client credentials, for the server whose canonical URI is
    /// `audience`. An answer is reused for 30 s (never past the token's
    /// expiry). The token must be `active`, name `audience` in its `aud`,
    /// have a `sub`, not be expired, and carry the required scopes.
    ///
    /// # Errors
    ///
    /// As [`jwt`](Self::jwt).
    pub fn introspection(
        issuer: &str,
        audience: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, Error> {
        let auth = BearerAuth::jwt(issuer, audience)?;
        let introspection = Introspection {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            endpoint: Mutex::new(None),
            discovery_failed: Mutex::new(None),
            cache: Mutex::default(),
        };
        Ok(auth.edit(|inner| inner.introspection = Some(introspection)))
    }

    /// Sets the introspection endpoint rather than reading it from the
    /// issuer's metadata (introspection only).
    pub fn introspection_endpoint(self, url: &str) -> Self {
        if let Some(introspection) = &self.0.introspection {
            *introspection.endpoint.lock() = Some(url.to_string());
        }
        self
    }

    /// Asks the issuer about `token` (or reuses a recent answer).
    pub(super) async fn introspect(
        &self,
        introspection: &Introspection,
        token: &str,
    ) -> Result<Authenticated, Refusal> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some((until, answer)) = introspection.cache.lock().get(&digest)
            && Instant::now() < *until
        {
            return answer.clone();
        }
        let endpoint = self.introspection_endpoint_url(introspection).await?;
        let asked = self
            .0
            .http
            .post(&endpoint)
            // RFC 6749 2.3.1: each form-urlencoded before the Basic scheme.
            .basic_auth(
                form_encoded(&introspection.client_id),
                Some(form_encoded(&introspection.client_secret)),
            )
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send();
        let answer: Value = match tokio::time::timeout(FETCH_BUDGET, asked).await {
            Ok(Ok(response)) if response.status().is_success() => {
                response.json().await.map_err(|e| {
                    tracing::warn!("the issuer's introspection answer is not JSON: {e}");
                    Refusal::Unavailable("the issuer cannot be asked about the token".into())
                })?
            }
            Ok(Ok(response)) => {
                tracing::warn!(status = %response.status(), "the issuer refused to introspect a token");
                return Err(Refusal::Unavailable(
                    "the issuer cannot be asked about the token".into(),
                ));
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot reach the issuer's introspection endpoint: {e}");
                return Err(Refusal::Unavailable(
                    "the issuer cannot be asked about the token".into(),
                ));
            }
            Err(_) => {
                tracing::warn!("the issuer's introspection endpoint took over {FETCH_BUDGET:?}");
                return Err(Refusal::Unavailable(
                    "the issuer cannot be asked about the token".into(),
                ));
            }
        };
        let (verdict, expires) = self.judge(&answer);
        let until = expires.map_or(Instant::now() + INTROSPECTION_CACHE, |at| {
            (Instant::now() + INTROSPECTION_CACHE).min(at)
        });
        let mut cache = introspection.cache.lock();
        if cache.len() >= INTROSPECTION_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, (until, verdict.clone()));
        verdict
    }

    /// What an introspection answer says of the token, and when the token
    /// expires (as an instant here), if it says.
    pub(super) fn judge(
        &self,
        answer: &Value,
    ) -> (Result<Authenticated, Refusal>, Option<Instant>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let leeway = self.0.leeway.as_secs();
        let exp = answer["exp"].as_u64();
        let expires = exp.and_then(|exp| {
            Instant::now().checked_add(Duration::from_secs(
                exp.saturating_add(leeway).saturating_sub(now),
            ))
        });
        let refuse = |why: &str| (Err(Refusal::Invalid(why.to_string())), expires);
        if answer["active"] != Value::Bool(true) {
            return refuse("the token is not active");
        }
        if exp.is_some_and(|exp| exp.saturating_add(leeway) <= now) {
            return refuse("the token has expired");
        }
        if answer["nbf"]
            .as_u64()
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return refuse("the token is not valid yet");
        }
        if let Some(iss) = answer["iss"].as_str()
            && iss != self.0.issuer
        {
            return refuse("the token is of another issuer");
        }
        let audience = &self.0.audience;
        let for_us = match &answer["aud"] {
            Value::String(aud) => aud == audience,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !for_us {
            return refuse("the token is not for this server (its audience)");
        }
        let Some(sub) = answer["sub"].as_str().filter(|s| !s.is_empty()) else {
            return refuse("the token has no subject");
        };
        let granted: Vec<String> = answer["scope"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if self.0.scopes.iter().any(|needed| !granted.contains(needed)) {
            return (
                Err(Refusal::InsufficientScope(self.0.scopes.clone())),
                expires,
            );
        }
        (
            Ok(Authenticated {
                principal: format!("{} {sub}", self.0.issuer),
                scopes: granted,
            }),
            expires,
        )
    }

    /// The introspection endpoint: configured, or read once from the
    /// issuer's metadata.
    pub(super) async fn introspection_endpoint_url(
        &self,
        introspection: &Introspection,
    ) -> Result<String, Refusal> {
        if let Some(endpoint) = introspection.endpoint.lock().clone() {
            return Ok(endpoint);
        }
        let unknown =
            || Refusal::Unavailable("the issuer's introspection endpoint is unknown".into());
        let cooling = |failed: &Option<Instant>| {
            failed.is_some_and(|at| at.elapsed() < self.0.refresh_interval)
        };
        if cooling(&introspection.discovery_failed.lock()) {
            return Err(unknown());
        }
        let _one = self.0.fetching.lock().await;
        if let Some(endpoint) = introspection.endpoint.lock().clone() {
            return Ok(endpoint);
        }
        // Another request may just have failed to look it up.
        if cooling(&introspection.discovery_failed.lock()) {
            return Err(unknown());
        }
        let found = match tokio::time::timeout(FETCH_BUDGET, self.issuer_metadata()).await {
            Ok(Ok(metadata)) => metadata["introspection_endpoint"]
                .as_str()
                .map(str::to_string),
            Ok(Err(e)) => {
                tracing::warn!("cannot read the issuer's metadata: {e}");
                None
            }
            Err(_) => None,
        };
        let Some(endpoint) = found else {
            *introspection.discovery_failed.lock() = Some(Instant::now());
            return Err(unknown());
        };
        *introspection.endpoint.lock() = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// `text` as `application/x-www-form-urlencoded` writes it.
fn form_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_credentials_are_form_encoded() {
        assert_eq!(super::form_encoded("client-1_a.b*"), "client-1_a.b*");
        assert_eq!(super::form_encoded("s3cr+t:/= x"), "s3cr%2Bt%3A%2F%3D+x");
    }
}
