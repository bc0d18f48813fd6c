//! The Streamable HTTP transport: one endpoint for POST, GET and DELETE.
//!
//! A thin adapter: it checks headers, hands each message to the
//! [`Dispatcher`] with what the headers say ([`Origin`]), and writes what
//! comes back as JSON or SSE (`post.rs`); GET streams (`get.rs`) and DELETE
//! (`delete.rs`) are the legacy era's. Every refusal goes through
//! [`Rejection`].

mod delete;
mod get;
mod headers;
mod post;
mod probe;
mod serve;
mod sse;

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http;
use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use session_core::wire::{Message, Response as RpcResponse};
use tower_service::Service;

use crate::config::HttpConfig;
use crate::dispatch::Dispatcher;
use crate::error::{Error, Rejection, is_store_unavailable};
use crate::hub::Hub;
use crate::server::McpServer;
use headers::Guard;

/// The authenticated principal of a request, put into the request's
/// extensions by authentication middleware in front of the MCP endpoint.
///
/// A session created by a request with a principal is bound to it: requests
/// (including DELETE) from another principal, or from none, get the same 404
/// as an unknown session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// What the handlers share.
#[derive(Debug)]
struct App {
    dispatcher: Arc<Dispatcher>,
    config: HttpConfig,
    guard: Guard,
    /// Whether the handler checks the path itself (served without a
    /// router); a router checks it before the handler runs.
    check_path: bool,
}

impl App {
    /// An SSE stream's place in the open-streams gauge.
    fn open_stream(&self) -> sse::OpenStream {
        sse::OpenStream::new(self.dispatcher.metrics().map(|m| m.sse_streams()))
    }

    /// Counts a request answered with `response`, if metrics are on
    /// (`started` is when its head arrived).
    fn record(
        &self,
        era: &'static str,
        method: &'static str,
        response: &Response,
        started: Option<std::time::Instant>,
    ) {
        if let (Some(metrics), Some(started)) = (self.dispatcher.metrics(), started) {
            metrics.request(era, method, response.status().as_u16(), started.elapsed());
        }
    }
}

/// The era a request's `MCP-Protocol-Version` names, as a metrics label.
fn era_label(version: Option<&HeaderValue>) -> &'static str {
    match version.map(HeaderValue::as_bytes) {
        Some(v)
            if session_core::wire::MODERN_PROTOCOL_VERSIONS
                .iter()
                .any(|m| m.as_bytes() == v) =>
        {
            "modern"
        }
        _ => "legacy",
    }
}

impl sse::HubRef for Dispatcher {
    fn hub(&self) -> &Hub {
        Dispatcher::hub(self)
    }
}

impl McpServer {
    /// The server's metrics in the Prometheus text format (OpenMetrics),
    /// what `HttpConfig::metrics_path` serves; `None` when metrics are off
    /// ([`ServerConfig::metrics`](crate::ServerConfig::metrics)).
    pub async fn metrics_text(&self) -> Option<String> {
        self.dispatcher.scrape().await
    }

    /// Serves the metrics alone at `GET /metrics` on `listener` (a port of
    /// their own, e.g. for a scraper inside the cluster only) until
    /// `shutdown` completes. Every other path is 404.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if serving fails.
    pub async fn serve_metrics(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let server = self.clone();
        let router = Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let server = server.clone();
                async move { probe::metrics_text(server.metrics_text().await) }
            }),
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Io {
                action: "serve the metrics".into(),
                source,
            })
    }

    /// An axum router serving the MCP endpoint at `config.path`, and the
    /// probes at `config.health_path` and `config.ready_path` (and the
    /// metrics at `config.metrics_path`). `listen` is
    /// the address the router will be served on: when it is loopback, the
    /// `Host` header is checked against loopback names (DNS rebinding
    /// defence).
    ///
    /// # Panics
    ///
    /// If a probe path does not start with `/`, or is the endpoint's path
    /// or the other probe's (as axum panics on overlapping routes).
    pub fn router(&self, config: HttpConfig, listen: SocketAddr) -> Router {
        if let Err(e) = probe::check_paths(&config) {
            panic!("{e}");
        }
        let path = config.path.clone();
        let app = self.app(config, listen, false);
        let mut router = Router::new().route_service(&path, Endpoint(app.clone()));
        for probe in probe::paths(&app.config) {
            router = router.route_service(probe, Probes(app.clone()));
        }
        if let Some(auth) = &app.config.auth {
            for path in auth.metadata_paths() {
                router = router.route_service(path, Probes(app.clone()));
            }
        }
        router
    }

    /// Whether the server can serve now: `Ok` when the session store, the
    /// handle store and the event store all report ready
    /// ([`SessionStore::readiness`](session_core::SessionStore::readiness)),
    /// else the reason (a store's failure, a probe that took over a second,
    /// or shutdown). What the readiness probe (`HttpConfig::ready_path`)
    /// answers. The verdict is kept for a second and concurrent callers
    /// share one probe, so calling this often costs the stores nothing.
    ///
    /// # Errors
    ///
    /// Why the server is not ready.
    pub async fn readiness(&self) -> Result<(), String> {
        self.dispatcher
            .readiness()
            .await
            .map_err(|reason| reason.to_string())
    }

    fn app(&self, config: HttpConfig, listen: SocketAddr, check_path: bool) -> Arc<App> {
        let guard = Guard {
            origins: config.allowed_origins.clone(),
            hosts: config.allowed_hosts.clone(),
            check_host: listen.ip().is_loopback() || !config.allowed_hosts.is_empty(),
        };
        Arc::new(App {
            dispatcher: self.dispatcher.clone(),
            config,
            guard,
            check_path,
        })
    }

    /// Serves the MCP endpoint on `listener` until `shutdown` resolves, then
    /// shuts down gracefully: stops accepting, ends open streams, lets
    /// requests in flight finish (cancelling them after 10 s).
    ///
    /// Beside the endpoint it serves the probes at `config.health_path` and
    /// `config.ready_path` (see [`readiness`](Self::readiness)).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a probe path does not start with `/`, or is the
    /// endpoint's path or the other probe's; [`Error::Io`] if the listener
    /// cannot tell its address. Failures to accept a connection are logged
    /// and retried, not returned.
    pub async fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        config: HttpConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        probe::check_paths(&config)?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            action: "read the listening address".into(),
            source,
        })?;
        // One endpoint needs no path router: the path is checked in the
        // handler, which saves the router's work on every request.
        let endpoint = Endpoint(self.app(config, addr, true));
        let sweeper = self.spawn_sweeper();
        let connections = serve::accept_until(listener, endpoint, shutdown).await;
        // The listener is closed: refuse what still arrives on open
        // connections (503), end idle streams, and give the requests in
        // flight the grace to finish while the connections close.
        self.begin_shutdown();
        let server = self.clone();
        let drain = tokio::spawn(async move { server.drain(SHUTDOWN_GRACE).await });
        connections.close(SHUTDOWN_GRACE + CLOSE_MARGIN).await;
        // Requests whose client went away still finish (their events are
        // stored for a resume), within the grace.
        let _ = drain.await;
        sweeper.abort();
        Ok(())
    }
}

/// How long connections may stay open after the grace of their requests
/// (a response still being written to a slow client).
const CLOSE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long requests in flight may run on after shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The MCP endpoint as a tower service.
///
/// What the request head can settle is settled at once in
/// [`answer`](Endpoint::answer); only what has to wait (the body, the store,
/// the handler) goes into the returned future, which owns just the headers
/// and body it needs. Each request's
/// future is allocated and moved about by the HTTP stack, so its size costs
/// on every request: cold paths (GET, DELETE, batches, SSE) are boxed
/// inside it rather than held inline.
#[derive(Debug, Clone)]
struct Endpoint(Arc<App>);

type Answer = Result<Response, Infallible>;
type EndpointFuture = Either<Ready<Answer>, Pin<Box<dyn Future<Output = Answer> + Send>>>;

fn now(response: Response) -> EndpointFuture {
    Either::Left(std::future::ready(Ok(response)))
}

fn later(answer: impl Future<Output = Response> + Send + 'static) -> EndpointFuture {
    Either::Right(Box::pin(answer.map(Ok)))
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> EndpointFuture {
        self.answer(request)
    }
}

impl Endpoint {
    /// Answers one request (what [`Service::call`] does, without `&mut`),
    /// whatever its body type: `serve_http` passes hyper's own body, not
    /// boxed as axum's [`Body`] would be.
    fn answer<B: RequestBody>(&self, mut request: http::Request<B>) -> EndpointFuture {
        let app = &self.0;
        if app.check_path && request.uri().path() != app.config.path {
            // A probe (served even while shutting down), or 404.
            return probe::answer(app, &request);
        }
        if let Some(auth) = app.config.auth.clone() {
            // The token first: what it names is the request's principal.
            let endpoint = self.clone();
            return later(async move {
                let checked = auth
                    .authenticate(request.headers().get(http::header::AUTHORIZATION))
                    .await;
                match checked {
                    Ok(who) => {
                        request.extensions_mut().insert(Principal(who.principal));
                        request
                            .extensions_mut()
                            .insert(crate::auth::GrantedScopes(who.scopes.into()));
                        match endpoint.authorized(request) {
                            Either::Left(ready) => ready.await,
                            Either::Right(later) => later.await,
                        }
                        .unwrap_or_else(|never| match never {})
                    }
                    Err(refusal) => {
                        let started = endpoint
                            .0
                            .dispatcher
                            .metrics()
                            .map(|_| std::time::Instant::now());
                        let response = auth.challenge(&refusal);
                        let era = era_label(request.headers().get(headers::PROTOCOL_VERSION));
                        endpoint.0.record(era, "unread", &response, started);
                        response
                    }
                }
            });
        }
        self.authorized(request)
    }

    /// [`answer`](Self::answer) once the request is authorized (or no
    /// authorization is configured).
    fn authorized<B: RequestBody>(&self, request: http::Request<B>) -> EndpointFuture {
        let app = &self.0;
        let started = app.dispatcher.metrics().map(|_| std::time::Instant::now());
        // An answer given at once, counted.
        let at_once = |app: &App, method: &'static str, response: Response, era: &'static str| {
            app.record(era, method, &response, started);
            now(response)
        };
        let era = || era_label(request.headers().get(headers::PROTOCOL_VERSION));
        if app.dispatcher.is_shutting_down() {
            let refused = reject(&Rejection::Unavailable(
                "the server is shutting down".into(),
            ));
            return at_once(app, "unread", refused, era());
        }
        let app = app.clone();
        match *request.method() {
            Method::POST => {
                let era = era();
                match post::head(&app, request, started) {
                    Ok((head, principal, body)) => later(post::post(app, head, principal, body)),
                    Err(rejection) => at_once(&app, "unread", reject(&rejection), era),
                }
            }
            Method::GET => {
                let era = era();
                let (parts, _) = request.into_parts();
                later(async move {
                    let response = get::get(&app, parts)
                        .await
                        .unwrap_or_else(|rejection| reject(&rejection));
                    app.record(era, "GET", &response, started);
                    response
                })
            }
            Method::DELETE => {
                let era = era();
                match delete::head(&app, request.headers(), request.extensions()) {
                    Ok((id, principal)) => later(delete::delete(app.clone(), id, principal).map(
                        move |answer| {
                            let response = answer.unwrap_or_else(|rejection| reject(&rejection));
                            app.record(era, "DELETE", &response, started);
                            response
                        },
                    )),
                    Err(rejection) => at_once(&app, "DELETE", reject(&rejection), era),
                }
            }
            _ => at_once(&app, "other", reject(&Rejection::MethodNotAllowed), era()),
        }
    }
}

/// The probes, as a tower service (for [`McpServer::router`]; `serve_http`
/// reaches them through [`Endpoint`]).
#[derive(Debug, Clone)]
struct Probes(Arc<App>);

impl Service<Request> for Probes {
    type Response = Response;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> EndpointFuture {
        probe::answer(&self.0, &request)
    }
}

/// The answer to a refused message: its status and a JSON-RPC error body.
fn reject(rejection: &Rejection) -> Response {
    reject_with_id(rejection, None)
}

/// [`reject`] for a request whose id could be read.
fn reject_with_id(rejection: &Rejection, id: Option<session_core::wire::RequestId>) -> Response {
    let body = RpcResponse::error(id, rejection.error_object());
    let mut response = json(rejection.status(), Message::Response(body).to_json());
    if *rejection == Rejection::MethodNotAllowed {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    retry_after(&mut response);
    response
}

/// Adds `Retry-After` to a 503: every "not now" the endpoint answers
/// (a store unavailable, the session cap, shutting down) says when to try
/// again.
fn retry_after(response: &mut Response) {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(Rejection::RETRY_AFTER_SECS));
    }
}

/// The answer to a request whose handler ended with `response`, as one
/// JSON body: 503 (with `Retry-After`) for a store failure, else `ok`.
fn answered(ok: StatusCode, response: RpcResponse) -> Response {
    let status = match &response.outcome {
        Err(error) if is_store_unavailable(error) => StatusCode::SERVICE_UNAVAILABLE,
        _ => ok,
    };
    let mut answer = json(status, Message::Response(response).to_json());
    retry_after(&mut answer);
    answer
}

/// A JSON body with `status`.
fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A request body the endpoint can read.
pub(crate) trait RequestBody:
    HttpBody<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: HttpBody<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

fn principal(extensions: &http::Extensions) -> Option<String> {
    extensions.get::<Principal>().map(|p| p.0.clone())
}
