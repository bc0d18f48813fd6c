//! The probes beside the MCP endpoint: liveness (`health_path`, 200 while
//! the process serves HTTP) and readiness (`ready_path`, 200 when every
//! store reports ready, 503 with the reason otherwise).
//!
//! Both pass the endpoint's Origin and Host checks and need no session.
//! Readiness is settled by [`Dispatcher::readiness`](crate::dispatch::Dispatcher::readiness),
//! which bounds the probe in time and keeps its verdict for a second, so
//! probes in numbers cost the stores nothing more.

use std::sync::Arc;

use axum::body::Body;
use axum::http;
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::headers::Head;
use super::{App, EndpointFuture, later, now, reject};
use crate::config::HttpConfig;
use crate::error::Error;

/// Which probe a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Health,
    Ready,
    Metrics,
}

/// The probe `path` names under `config`, if any.
fn probe(config: &HttpConfig, path: &str) -> Option<Probe> {
    if config.health_path.as_deref() == Some(path) {
        Some(Probe::Health)
    } else if config.ready_path.as_deref() == Some(path) {
        Some(Probe::Ready)
    } else if config.metrics_path.as_deref() == Some(path) {
        Some(Probe::Metrics)
    } else {
        None
    }
}

/// Checks the probe paths: each starts with `/`, and none is the MCP
/// endpoint's path or the other probe's.
pub(super) fn check_paths(config: &HttpConfig) -> Result<(), Error> {
    let probes = [
        ("health_path", config.health_path.as_deref()),
        ("ready_path", config.ready_path.as_deref()),
        ("metrics_path", config.metrics_path.as_deref()),
    ];
    for (name, path) in probes {
        let Some(path) = path else { continue };
        if !path.starts_with('/') {
            return Err(Error::Config(format!(
                "{name} {path:?} must start with '/'"
            )));
        }
        if path == config.path {
            return Err(Error::Config(format!(
                "{name} {path:?} is the MCP endpoint's path"
            )));
        }
    }
    for (i, (name, path)) in probes.iter().enumerate() {
        if let Some(path) = path
            && let Some((other, _)) = probes[i + 1..].iter().find(|(_, p)| p == &Some(*path))
        {
            return Err(Error::Config(format!(
                "{name} and {other} are both {path:?}"
            )));
        }
    }
    Ok(())
}

/// The probe paths that are served.
pub(super) fn paths(config: &HttpConfig) -> impl Iterator<Item = &str> {
    [
        config.health_path.as_deref(),
        config.ready_path.as_deref(),
        config.metrics_path.as_deref(),
    ]
    .into_iter()
    .flatten()
}

/// Answers a request for a path other than the MCP endpoint's: a probe, or
/// 404.
pub(super) fn answer<B>(app: &Arc<App>, request: &http::Request<B>) -> EndpointFuture {
    // Protected Resource Metadata: public, for clients to find the issuer.
    if let Some(auth) = &app.config.auth
        && auth.is_metadata_path(request.uri().path())
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        let mut response = status(StatusCode::OK, &auth.metadata());
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        return now(response);
    }
    let Some(probe) = probe(&app.config, request.uri().path())
        .filter(|p| *p != Probe::Metrics || app.dispatcher.metrics().is_some())
    else {
        return now(StatusCode::NOT_FOUND.into_response());
    };
    if let Err(rejection) = app.guard.check(&Head::scan(request.headers())) {
        return now(reject(&rejection));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return now(response);
    }
    match probe {
        Probe::Health => now(status(StatusCode::OK, &json!({"status": "ok"}))),
        Probe::Ready => {
            let app = app.clone();
            later(async move {
                match app.dispatcher.readiness().await {
                    Ok(()) => status(StatusCode::OK, &json!({"status": "ready"})),
                    Err(reason) => status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "unavailable", "reason": &*reason}),
                    ),
                }
            })
        }
        Probe::Metrics => {
            let app = app.clone();
            later(async move { metrics_text(app.dispatcher.scrape().await) })
        }
    }
}

/// The answer of a metrics path: the text, or 404 when metrics are off.
pub(crate) fn metrics_text(text: Option<String>) -> Response {
    let Some(text) = text else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = Response::new(Body::from(text));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A probe's answer: `status`, `body` as JSON, never cached.
fn status(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_paths_must_not_collide() {
        let with = |health: Option<&str>, ready: Option<&str>| HttpConfig {
            health_path: health.map(str::to_string),
            ready_path: ready.map(str::to_string),
            ..HttpConfig::default()
        };
        assert!(check_paths(&HttpConfig::default()).is_ok());
        assert!(check_paths(&with(Some("/healthz"), Some("/mcp"))).is_err());
        assert!(check_paths(&with(Some("/probe"), Some("/probe"))).is_err());
        assert!(check_paths(&with(Some("healthz"), None)).is_err());
        assert!(check_paths(&with(Some("/metrics"), None)).is_err());
        let none = HttpConfig {
            metrics_path: None,
            ..with(None, None)
        };
        assert!(check_paths(&none).is_ok());
        assert_eq!(paths(&none).count(), 0);
    }
}
