//! Settings of the server and of its HTTP transport.

use std::net::SocketAddr;
use std::time::Duration;

use session_core::ManagerConfig;

/// Settings that hold whatever the transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Session rules: idle timeout (30 min), cap (100,000), handshake timeout
    /// (10 s), state size limit, no retention of ended sessions, …
    pub sessions: ManagerConfig,
    /// How often expired sessions are swept (30 s, and at most a quarter of
    /// the idle timeout).
    pub sweep_interval: Duration,
    /// Events kept per stream for resumption (256).
    pub events_per_stream: usize,
    /// Streams kept per session for resumption (64).
    pub streams_per_session: usize,
    /// Whether to offer the session-state extension (`session/get`,
    /// `session/update`) (yes).
    pub session_state_extension: bool,
    /// Handle rules (SEP-2567): idle timeout (24 h), cap on live handles
    /// (1,000,000), state size limit; ended handles are deleted at once.
    pub handles: ManagerConfig,
    /// Task rules (the `io.modelcontextprotocol/tasks` extension): a task
    /// lives for its TTL from creation (`expiry.max_lifetime`, 1 h: the
    /// `ttlMs` clients see), at most 100,000 live tasks, results bounded by
    /// the state size limit; ended tasks are deleted at their TTL.
    pub tasks: ManagerConfig,
    /// The `pollIntervalMs` suggested to clients polling a task (1 s); a
    /// task's worker also looks at its task in the store this often (and
    /// stops when it ended elsewhere).
    pub task_poll_interval: Duration,
    /// How long a running task's worker may go without renewing its lease
    /// (10 s). The worker renews it every third of this; when it lapses
    /// (the process died), a live replica fails the task (or runs a tool
    /// declared safe to re-run again) within this plus a third of it, the
    /// period at which the task store is swept.
    pub task_lease: Duration,
    /// How long a `requestState` minted for a multi round-trip request
    /// stays valid (15 min): the time a user has to answer.
    pub request_state_ttl: Duration,
    /// Caching hints (2026-07-28) on `tools/list`, `prompts/list`,
    /// `resources/list` and `resources/templates/list` (5 min, public: the
    /// lists are the same for every client).
    pub list_cache: CacheHint,
    /// Caching hints on `resources/read` (0 ms, private: a resource's
    /// content may change at any time and depend on who reads it).
    pub read_cache: CacheHint,
    /// Caching hints on `server/discover` (1 h, public).
    pub discover_cache: CacheHint,
    /// Whether to keep Prometheus metrics (yes): requests, store
    /// operations, sessions, tasks, connections. Off, nothing is recorded
    /// and no metrics path is served.
    pub metrics: bool,
    /// Whether each request is handled in a `tracing` span naming its era,
    /// method, legacy session and W3C trace context (no): every log line of
    /// the request then carries them. Costs a span per request.
    pub request_spans: bool,
}

/// A caching hint on a 2026-07-28 result: how long the client may treat it
/// as fresh (`ttlMs`), and who may share a cached copy (`cacheScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHint {
    /// Freshness (`ttlMs`); zero: stale at once.
    pub ttl: Duration,
    /// Who may share a cached copy.
    pub scope: CacheScope,
}

impl CacheHint {
    /// A hint of `ttl` and `scope`.
    pub const fn new(ttl: Duration, scope: CacheScope) -> Self {
        CacheHint { ttl, scope }
    }
}

/// `cacheScope`: who may share a cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Any client or shared cache (the result is the same for every user).
    Public,
    /// Only the same authorization context.
    Private,
}

impl CacheScope {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            // Closed and expired sessions are deleted at once: the protocol
            // answers 404 for them either way.
            sessions: ManagerConfig::default().retention(Duration::ZERO),
            sweep_interval: Duration::from_secs(30),
            events_per_stream: 256,
            streams_per_session: 64,
            session_state_extension: true,
            handles: ManagerConfig::default()
                .idle_timeout(Duration::from_secs(24 * 3600))
                .max_sessions(Some(1_000_000))
                .retention(Duration::ZERO),
            tasks: ManagerConfig::default()
                .idle_timeout(Duration::from_secs(3600))
                .max_lifetime(Some(Duration::from_secs(3600)))
                .max_sessions(Some(100_000))
                .retention(Duration::ZERO),
            task_poll_interval: Duration::from_secs(1),
            task_lease: Duration::from_secs(10),
            request_state_ttl: Duration::from_secs(15 * 60),
            list_cache: CacheHint::new(Duration::from_secs(300), CacheScope::Public),
            read_cache: CacheHint::new(Duration::ZERO, CacheScope::Private),
            discover_cache: CacheHint::new(Duration::from_secs(3600), CacheScope::Public),
            metrics: true,
            request_spans: false,
        }
    }
}

impl ServerConfig {
    /// Sets the idle timeout, and keeps the sweep interval at most a quarter
    /// of it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.sessions = self.sessions.idle_timeout(timeout);
        self.sweep_interval = self
            .sweep_interval
            .min(timeout / 4)
            .max(Duration::from_millis(10));
        self
    }

    /// Sets the cap on live sessions.
    pub fn max_sessions(mut self, max: Option<usize>) -> Self {
        self.sessions = self.sessions.max_sessions(max);
        self
    }

    /// Sets how long a session may stay initializing.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.sessions = self.sessions.handshake_timeout(timeout);
        self
    }

    /// Sets the idle timeout of handles.
    pub fn handle_idle_timeout(mut self, timeout: Duration) -> Self {
        self.handles = self.handles.idle_timeout(timeout);
        self
    }

    /// Sets how long a `requestState` stays valid.
    pub fn request_state_ttl(mut self, ttl: Duration) -> Self {
        self.request_state_ttl = ttl;
        self
    }

    /// Sets the lease of running tasks (at least 30 ms).
    pub fn task_lease(mut self, lease: Duration) -> Self {
        self.task_lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Sets the sweep interval.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.max(Duration::from_millis(10));
        self
    }
}

/// How requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResponseMode {
    /// One JSON body when the handler sends nothing before its result; an
    /// SSE stream as soon as it sends a notification first (progress, logs).
    #[default]
    Auto,
    /// Always one JSON body; notifications go to the session's GET stream.
    Json,
    /// Always an SSE stream.
    Sse,
}

/// Settings of the Streamable HTTP transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The MCP endpoint's path (`/mcp`).
    pub path: String,
    /// Largest request body (4 MiB); larger gets 413.
    pub max_body_bytes: usize,
    /// How requests are answered ([`ResponseMode::Auto`]).
    pub response_mode: ResponseMode,
    /// Origins allowed besides loopback ones (`http://localhost:*`,
    /// `http://127.0.0.1:*`, `http://[::1]:*`); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Host names allowed in `Host` besides loopback ones, checked only when
    /// listening on loopback or when the list is not empty; `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// The `retry` the server asks SSE clients to wait before reconnecting (1 s).
    pub sse_retry: Duration,
    /// Interval of SSE keep-alive comments (15 s).
    pub keep_alive: Duration,
    /// Whether clients may end sessions with DELETE (yes; no answers 405).
    pub allow_delete: bool,
    /// A resumed request stream that is followed in a shared store (its
    /// request runs on another replica) ends after this long without an
    /// event (5 min), so a stream whose replica died does not stay open
    /// forever; the client may resume it again with `Last-Event-ID`.
    pub follow_idle_timeout: Duration,
    /// A connection must send a whole request head within this long of
    /// opening or of starting the head (10 s), or it is closed; a request's
    /// body must arrive within this long of its head (408 otherwise).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after
    /// this long (60 s). SSE streams are requests in progress: they keep
    /// their own rules (keep-alive comments, their lifetime).
    pub idle_connection_timeout: Duration,
    /// Cap on open connections. `None` (the default): just below the
    /// process's open-file limit, keeping a reserve for the stores and for
    /// accepting. At the cap a new connection is admitted by closing the
    /// oldest idle one; it is refused only when every connection is busy.
    pub max_connections: Option<usize>,
    /// Liveness probe path (`/healthz`): 200 while the process serves HTTP.
    /// `None` serves none.
    pub health_path: Option<String>,
    /// Readiness probe path (`/readyz`): 200 when the stores accept writes,
    /// 503 with the reason otherwise. `None` serves none.
    pub ready_path: Option<String>,
    /// Metrics path (`/metrics`): the server's metrics in the Prometheus
    /// text format, when [`ServerConfig::metrics`] is on. `None` serves them
    /// not here (see [`McpServer::serve_metrics`](crate::McpServer::serve_metrics)
    /// for a port of their own).
    pub metrics_path: Option<String>,
    /// Authorization (an OAuth resource server): every request to the MCP
    /// endpoint needs a bearer token this accepts, and the Protected
    /// Resource Metadata is served at its well-known paths. `None` (the
    /// default): nobody is authenticated, and the principal is whatever an
    /// embedding application puts in the request's extensions
    /// ([`Principal`](crate::Principal)).
    pub auth: Option<crate::BearerAuth>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            path: "/mcp".into(),
            max_body_bytes: 4 << 20,
            response_mode: ResponseMode::Auto,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            sse_retry: Duration::from_secs(1),
            keep_alive: Duration::from_secs(15),
            allow_delete: true,
            follow_idle_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(60),
            max_connections: None,
            health_path: Some("/healthz".into()),
            ready_path: Some("/readyz".into()),
            metrics_path: Some("/metrics".into()),
            auth: None,
        }
    }
}

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
