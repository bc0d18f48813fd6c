//! Authorization as an OAuth 2.1 resource server (the MCP specification's
//! `basic/authorization`): bearer access tokens of one issuer, checked as
//! JWTs against its keys ([`BearerAuth::jwt`]) or by asking the issuer
//! (token introspection, RFC 7662: [`BearerAuth::introspection`], for
//! opaque tokens); Protected Resource Metadata (RFC 9728);
//! `WWW-Authenticate` challenges (RFC 6750).
//!
//! A JWT is accepted when its signature verifies with a key of the
//! issuer's JWKS (found through the issuer's metadata, RFC 8414 or OpenID
//! Connect discovery), with an algorithm allowed here (never `none`), its
//! `iss` is the issuer, its `aud` names this server's canonical URI
//! (RFC 8707), it is not expired nor not yet valid (with a small skew), it
//! has a subject, and its scopes (`scope`, space-separated, or `scp`)
//! include every scope required. The request's principal is then the
//! issuer and the subject: sessions, handles and tasks created under it
//! are invisible to any other.
//!
//! Keys are fetched once and kept; a token naming a key id the set lacks
//! makes the server fetch the set again (a key rotation), at most once per
//! [`BearerAuth::refresh_interval`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use jsonwebtoken::Algorithm;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::error::Error;

mod introspection;
mod jwt;

use introspection::Introspection;
use jwt::Keys;

/// The well-known path of Protected Resource Metadata (RFC 9728).
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Checks JWT bearer tokens for one issuer and audience; see the module
/// documentation. Cheap to clone (shared state).
#[derive(Clone)]
pub struct BearerAuth(Arc<Inner>);

struct Inner {
    issuer: String,
    audience: String,
    scopes: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    refresh_interval: Duration,
    /// The absolute URL of this server's Protected Resource Metadata.
    metadata_url: String,
    /// The paths it is served at: the root form and the one suffixed with
    /// the resource's path.
    metadata_paths: Vec<String>,
    http: reqwest::Client,
    keys: Mutex<Keys>,
    /// Serializes fetches of the key set.
    fetching: tokio::sync::Mutex<()>,
    /// Set for tokens checked by introspection rather than as JWTs.
    introspection: Option<Introspection>,
}

/// The bound on one fetch of the issuer's metadata and keys, all requests
/// included.
const FETCH_BUDGET: Duration = Duration::from_secs(5);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("issuer", &self.0.issuer)
            .field("audience", &self.0.audience)
            .field("scopes", &self.0.scopes)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No bearer token (401, no error code).
    Missing,
    /// A token that is not valid here (401, `invalid_token`).
    Invalid(String),
    /// A valid token without a required scope (403, `insufficient_scope`).
    InsufficientScope(Vec<String>),
    /// The issuer's keys cannot be fetched (503).
    Unavailable(String),
}

/// A request's token, once accepted.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    /// The issuer and the subject.
    pub(crate) principal: String,
    /// The scopes the token carries.
    pub(crate) scopes: Vec<String>,
}

/// The scopes of a request's accepted token, in its extensions.
#[derive(Debug, Clone)]
pub(crate) struct GrantedScopes(pub(crate) Arc<[String]>);

impl GrantedScopes {
    /// Whether any scope of `needed` is not granted.
    pub(crate) fn missing(&self, needed: &[String]) -> bool {
        needed.iter().any(|scope| !self.0.contains(scope))
    }
}

impl BearerAuth {
    /// Tokens from `issuer` (its URL, as in the tokens' `iss`) for the
    /// server whose canonical URI is `audience` (e.g.
    /// `https://mcp.example.com/mcp`), with no scope required, the
    /// asymmetric algorithms allowed (RS*, PS*, ES256, ES384, EdDSA), a
    /// skew of 60 s and key sets fetched again at most every 10 s.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `issuer` or `audience` is not an absolute
    /// `http`/`https` URL.
    pub fn jwt(issuer: &str, audience: &str) -> Result<Self, Error> {
        let parse = |what: &str, url: &str| {
            reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    Error::Config(format!("{what} {url:?} is not an absolute http(s) URL"))
                })
        };
        let issuer_url = parse("issuer", issuer)?;
        // Keys fetched in plain text could be anyone's: https, except on
        // loopback (a local issuer, tests).
        let loopback = match issuer_url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        if issuer_url.scheme() != "https" && !loopback {
            return Err(Error::Config(format!(
                "issuer {issuer:?} must be https (its keys decide who is who)"
            )));
        }
        let resource = parse("audience", audience)?;
        let origin = resource.origin().ascii_serialization();
        let path = resource.path().trim_end_matches('/');
        let mut metadata_paths = vec![METADATA_PATH.to_string()];
        if !path.is_empty() {
            metadata_paths.push(format!("{METADATA_PATH}{path}"));
        }
        let metadata_url = format!(
            "{origin}{}",
            metadata_paths.last().map_or(METADATA_PATH, String::as_str)
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                Error::Config(format!("cannot build the HTTP client for the issuer: {e}"))
            })?;
        Ok(BearerAuth(Arc::new(Inner {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            scopes: Vec::new(),
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
            leeway: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(10),
            metadata_url,
            metadata_paths,
            http,
            keys: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
            introspection: None,
        })))
    }

    fn edit(self, change: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                change(&mut inner);
                BearerAuth(Arc::new(inner))
            }
            // Already shared (cloned before being configured): left as it
            // is, as configuring a copy would split its caches.
            Err(shared) => {
                tracing::warn!("BearerAuth configured after being cloned: the change is ignored");
                BearerAuth(shared)
            }
        }
    }

    /// Requires these scopes of every request (403 `insufficient_scope`
    /// otherwise); they are also the metadata's `scopes_supported`.
    pub fn required_scopes(self, scopes: &[&str]) -> Self {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.edit(|inner| inner.scopes = scopes)
    }

    /// The clock skew allowed on `exp` and `nbf` (60 s).
    pub fn leeway(self, leeway: Duration) -> Self {
        self.edit(|inner| inner.leeway = leeway)
    }

    /// The algorithms accepted among the asymmetric ones (`none` and the
    /// HMAC ones never are: a key published in a key set must not verify
    /// tokens anyone could sign with it).
    pub fn algorithms(self, algorithms: &[Algorithm]) -> Self {
        let algorithms = algorithms
            .iter()
            .copied()
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        self.edit(|inner| inner.algorithms = algorithms)
    }

    /// The shortest time between two fetches of the issuer's keys (10 s):
    /// tokens naming unknown key ids cannot make the server hammer the
    /// issuer.
    pub fn refresh_interval(self, interval: Duration) -> Self {
        self.edit(|inner| inner.refresh_interval = interval)
    }

    /// The scopes every request needs.
    pub(crate) fn required_scope_list(&self) -> &[String] {
        &self.0.scopes
    }

    /// The URL of this server's Protected Resource Metadata, as challenges
    /// name it.
    pub fn metadata_url(&self) -> &str {
        &self.0.metadata_url
    }

    /// The paths the metadata is served at.
    pub(crate) fn metadata_paths(&self) -> &[String] {
        &self.0.metadata_paths
    }

    /// Whether `path` is one of the metadata's paths.
    pub(crate) fn is_metadata_path(&self, path: &str) -> bool {
        self.0.metadata_paths.iter().any(|p| p == path)
    }

    /// The Protected Resource Metadata document (RFC 9728).
    pub(crate) fn metadata(&self) -> Value {
        json!({
            "resource": self.0.audience,
            "authorization_servers": [self.0.issuer],
            "scopes_supported": self.0.scopes,
            "bearer_methods_supported": ["header"],
        })
    }

    /// Checks a request's `Authorization` header.
    pub(crate) async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Authenticated, Refusal> {
        let Some(header) = authorization else {
            return Err(Refusal::Missing);
        };
        let text = header.to_str().unwrap_or_default();
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Another scheme is no bearer token at all (RFC 6750 3.1: no
            // error code then).
            return Err(Refusal::Missing);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(Refusal::Invalid("the bearer token is empty".into()));
        }
        if let Some(introspection) = &self.0.introspection {
            return self.introspect(introspection, token).await;
        }
        self.verify_jwt(token).await
    }

    /// The issuer's metadata: RFC 8414, else OpenID Connect discovery; it
    /// must name this issuer.
    async fn issuer_metadata(&self) -> Result<Value, String> {
        let issuer = reqwest::Url::parse(&self.0.issuer).map_err(|e| e.to_string())?;
        let path = issuer.path().trim_end_matches('/');
        let origin = issuer.origin().ascii_serialization();
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ];
        let mut failures = Vec::new();
        for url in &candidates {
            match self.get_json(url).await {
                Ok(metadata) if metadata["issuer"].as_str() == Some(self.0.issuer.as_str()) => {
                    return Ok(metadata);
                }
                Ok(_) => failures.push(format!("{url} names another issuer")),
                Err(e) => failures.push(e),
            }
        }
        Err(format!(
            "cannot read the issuer's metadata: {}",
            failures.join("; ")
        ))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .0
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// The answer to a refused request: 401 or 403 with its
    /// `WWW-Authenticate` challenge and a JSON-RPC error body, or 503 when
    /// the issuer's keys cannot be had.
    pub(crate) fn challenge(&self, refusal: &Refusal) -> Response {
        let metadata = &self.0.metadata_url;
        let scope = self.0.scopes.join(" ");
        let with_scope = |mut v: String| {
            if !scope.is_empty() {
                v.push_str(&format!(", scope=\"{scope}\""));
            }
            v
        };
        let (status, challenge, message) = match refusal {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                Some(with_scope(format!(
                    "Bearer resource_metadata=\"{metadata}\""
                ))),
                "Unauthorized: a bearer access token is required".to_string(),
            ),
            Refusal::Invalid(reason) => (
                StatusCode::UNAUTHORIZED,
                Some(with_scope(format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"{metadata}\"",
                    quoted(reason)
                ))),
                format!("Unauthorized: {reason}"),
            ),
            Refusal::InsufficientScope(needed) => (
                StatusCode::FORBIDDEN,
                Some(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{metadata}\", error_description=\"the token lacks a required scope\"",
                    needed.join(" ")
                )),
                format!(
                    "Forbidden: the token lacks a required scope ({})",
                    needed.join(" ")
                ),
            ),
            Refusal::Unavailable(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                format!("Service unavailable: cannot check the token: {reason}"),
            ),
        };
        // The OAuth error body (RFC 6750), as resource servers answer.
        let error = match refusal {
            Refusal::Missing => "unauthorized",
            Refusal::Invalid(_) => "invalid_token",
            Refusal::InsufficientScope(_) => "insufficient_scope",
            Refusal::Unavailable(_) => "temporarily_unavailable",
        };
        let body = json!({"error": error, "error_description": message});
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// `text` fit for a quoted-string parameter: no quotes, backslashes or
/// control characters.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .take(200)
        .collect()
}
