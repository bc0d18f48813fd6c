//! Bearer tokens that are JWTs: the issuer's key set, fetched and kept,
//! and the checks of a token against it.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::{Authenticated, BearerAuth, FETCH_BUDGET, Refusal};

/// The issuer's keys as last fetched, and how the last attempt went.
#[derive(Default)]
pub(super) struct Keys {
    set: Vec<Jwk>,
    /// When the set was last fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch was last attempted, and whether it failed.
    attempted: Option<(Instant, bool)>,
}

/// How long a fetched key set is used before it is fetched again (keys the
/// issuer withdrew stop being trusted after this).
const KEYS_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// The claims read from a token.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
}

/// The refusal of a token whose key id the issuer's set lacks.
fn unknown_key(kid: Option<&str>) -> Refusal {
    Refusal::Invalid(format!(
        "the token's key id {kid:?} is not one of the issuer's keys"
    ))
}

impl BearerAuth {
    /// Checks `token` as a JWT of the issuer for this server.
    pub(super) async fn verify_jwt(&self, token: &str) -> Result<Authenticated, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Refusal::Invalid(format!("the token is not a JWT: {e}")))?;
        if !self.0.algorithms.contains(&header.alg) {
            return Err(Refusal::Invalid(format!(
                "the token's algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.0.issuer]);
        validation.set_audience(&[&self.0.audience]);
        validation.leeway = self.0.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| Refusal::Invalid(format!("the token is not valid here: {e}")))?
            .claims;
        if claims.sub.is_empty() {
            return Err(Refusal::Invalid("the token's subject is empty".into()));
        }
        let granted: Vec<String> = match (&claims.scope, &claims.scp) {
            (Some(scope), _) => scope.split_whitespace().map(str::to_string).collect(),
            (None, Some(Value::Array(scp))) => scp
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            (None, Some(Value::String(scp))) => {
                scp.split_whitespace().map(str::to_string).collect()
            }
            _ => Vec::new(),
        };
        if self.0.scopes.iter().any(|needed| !granted.contains(needed)) {
            return Err(Refusal::InsufficientScope(self.0.scopes.clone()));
        }
        Ok(Authenticated {
            // An issuer is a URL, which has no space: unambiguous.
            principal: format!("{} {}", claims.iss, claims.sub),
            scopes: granted,
        })
    }

    /// The key `kid` names (the only key when the token names none),
    /// fetching the set again when it lacks it and the last fetch is old
    /// enough.
    ///
    /// Fetches (successful or not) are at least `refresh_interval` apart,
    /// whoever asks: tokens naming unknown key ids cannot make the server
    /// hammer the issuer, and while the issuer fails, requests needing a
    /// fetch are answered at once (503) rather than queued behind it. A set
    /// older than 15 min is fetched again (and kept if that fails).
    pub(super) async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, Refusal> {
        let fresh = |keys: &Keys| keys.fetched.is_some_and(|at| at.elapsed() < KEYS_MAX_AGE);
        if fresh(&self.0.keys.lock())
            && let Some(key) = self.cached(kid)?
        {
            return Ok(key);
        }
        let _one = self.0.fetching.lock().await;
        // Another request may have fetched meanwhile.
        if fresh(&self.0.keys.lock())
            && let Some(key) = self.cached(kid)?
        {
            return Ok(key);
        }
        let last = self.0.keys.lock().attempted;
        if let Some((at, failed)) = last
            && at.elapsed() < self.0.refresh_interval
        {
            // Not again yet: the set held serves what it has.
            if let Some(key) = self.cached(kid)? {
                return Ok(key);
            }
            return Err(if failed {
                Refusal::Unavailable("the issuer's keys cannot be fetched".into())
            } else {
                unknown_key(kid)
            });
        }
        let fetched = match tokio::time::timeout(FETCH_BUDGET, self.fetch_keys()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(format!("fetching the keys took over {FETCH_BUDGET:?}")),
        };
        let failed = fetched.is_err();
        {
            let mut keys = self.0.keys.lock();
            match fetched {
                Ok(set) => {
                    keys.set = set;
                    keys.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.0.issuer, "cannot fetch the issuer's keys: {e}");
                }
            }
            keys.attempted = Some((Instant::now(), failed));
        }
        match self.cached(kid)? {
            Some(key) => Ok(key),
            None if failed => Err(Refusal::Unavailable(
                "the issuer's keys cannot be fetched".into(),
            )),
            None => Err(unknown_key(kid)),
        }
    }

    /// The cached key `kid` names, if any.
    pub(super) fn cached(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, Refusal> {
        let keys = self.0.keys.lock();
        let jwk = match kid {
            Some(kid) => keys
                .set
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid)),
            None if keys.set.len() == 1 => keys.set.first(),
            None => None,
        };
        jwk.map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map_err(|e| Refusal::Invalid(format!("the issuer's key {kid:?} is unusable: {e}")))
        })
        .transpose()
    }

    /// The issuer's key set: its `jwks_uri` from its metadata (RFC 8414,
    /// then OpenID Connect discovery), then the set.
    pub(super) async fn fetch_keys(&self) -> Result<Vec<Jwk>, String> {
        let metadata = self.issuer_metadata().await?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or("the issuer's metadata has no jwks_uri")?;
        let set: JwkSet = serde_json::from_value(self.get_json(jwks_uri).await?)
            .map_err(|e| format!("{jwks_uri} is not a JWK set: {e}"))?;
        Ok(set.keys)
    }
}
