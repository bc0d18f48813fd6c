//! `mcp-server`: an MCP server with durable sessions and demo tools.
//!
//! ```text
//! mcp-server [--listen 127.0.0.1:8080] [--store memory|file:DIR] [--stdio] …
//! ```
//!
//! Run `mcp-server --help` for every option.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mcp_server::{DEFAULT_LISTEN, HttpConfig, McpServer, ResponseMode, ServerConfig, demo};
use session_core::{EventStore, SessionStore};
use session_store::{FileEventStore, FileStore, MemoryStore};

/// An MCP server whose sessions survive restarts, expire on time and never
/// leak. Serves the demo tools `echo`, `counter` and `slow`.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Every option can also be set by the environment variable shown beside it \
                  (MCP_SERVER_ and the option's name); the command line wins."
)]
struct Args {
    /// Address to listen on (HTTP).
    #[arg(long, default_value_t = DEFAULT_LISTEN, env = "MCP_SERVER_LISTEN")]
    listen: SocketAddr,
    /// Where sessions live: `memory`, `file:DIR` (durable, one process), or
    /// `redis://HOST:PORT/DB[?prefix=NAME]` (shared by replicas; keys under
    /// NAME, default `mcp`). Default: a file store in
    /// the user's data directory; with --stdio, memory (a stdio server has
    /// one client, whose session ends with the process, and several may run
    /// at once).
    #[arg(long, env = "MCP_SERVER_STORE")]
    store: Option<String>,
    /// Sessions idle for this long expire (e.g. 30m, 90s, 1h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m", env = "MCP_SERVER_IDLE_TIMEOUT")]
    idle_timeout: Duration,
    /// Handles (such as the demo counter's `counter_id`) unused for this long
    /// expire.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h", env = "MCP_SERVER_HANDLE_IDLE_TIMEOUT")]
    handle_idle_timeout: Duration,
    /// A running task's worker renews its lease every third of this; when
    /// the process dies, a live replica (or this one, restarted) fails the
    /// task (or runs a --rerun-safe tool again) within this plus a third.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", env = "MCP_SERVER_TASK_LEASE")]
    task_lease: Duration,
    /// A tool safe to run again from the start when its task's worker is
    /// lost (repeatable; e.g. `slow`). Other tools' tasks fail then.
    #[arg(
        long = "rerun-safe",
        env = "MCP_SERVER_RERUN_SAFE",
        value_delimiter = ','
    )]
    rerun_safe: Vec<String>,
    /// Sessions must complete the handshake within this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", env = "MCP_SERVER_HANDSHAKE_TIMEOUT")]
    handshake_timeout: Duration,
    /// Cap on live sessions; beyond it `initialize` gets 503. 0: no cap.
    #[arg(long, default_value_t = 100_000, env = "MCP_SERVER_MAX_SESSIONS")]
    max_sessions: usize,
    /// Always answer requests with one JSON body (never SSE).
    #[arg(long, env = "MCP_SERVER_JSON_RESPONSE")]
    json_response: bool,
    /// Serve MCP on stdin/stdout instead of HTTP.
    #[arg(long, env = "MCP_SERVER_STDIO")]
    stdio: bool,
    /// An Origin to allow besides loopback ones (repeatable; `*` for any).
    #[arg(
        long = "allowed-origin",
        env = "MCP_SERVER_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// A Host name to allow besides loopback ones (repeatable; `*` for any).
    #[arg(
        long = "allowed-host",
        env = "MCP_SERVER_ALLOWED_HOST",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// A connection must send a whole request head within this long (of
    /// opening, or of starting the head), or it is closed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s", env = "MCP_SERVER_HEADER_TIMEOUT")]
    header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after
    /// this long (SSE streams keep their own rules).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", env = "MCP_SERVER_IDLE_CONNECTION_TIMEOUT")]
    idle_connection_timeout: Duration,
    /// Cap on open connections. Default: just below the process's open-file
    /// limit (raised to its hard limit at start), keeping a reserve for the
    /// stores. At the cap the oldest idle connection makes room for a new
    /// one; a new one is refused only when every connection is busy.
    #[arg(long, env = "MCP_SERVER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Path of the liveness probe (200 while serving HTTP); `none` serves none.
    #[arg(long, default_value = "/healthz", env = "MCP_SERVER_HEALTH_PATH")]
    health_path: String,
    /// Who may call: `none` (nobody is authenticated: loopback only, unless
    /// --allow-unauthenticated) or `jwt` (an OAuth resource server: every
    /// request needs a bearer JWT from --issuer for --audience).
    #[arg(long, default_value = "none", value_parser = ["none", "jwt", "introspection"], env = "MCP_SERVER_AUTH")]
    auth: String,
    /// With --auth introspection: this server's client id at the issuer.
    #[arg(long, env = "MCP_SERVER_CLIENT_ID")]
    client_id: Option<String>,
    /// With --auth introspection: this server's client secret (better from
    /// the environment than the command line).
    #[arg(long, env = "MCP_SERVER_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// With --auth introspection: the endpoint, if the issuer's metadata
    /// does not name it.
    #[arg(long, env = "MCP_SERVER_INTROSPECTION_URL")]
    introspection_url: Option<String>,
    /// With --auth jwt: the issuer's URL (its metadata at
    /// /.well-known/oauth-authorization-server or openid-configuration
    /// names its keys).
    #[arg(long, env = "MCP_SERVER_ISSUER")]
    issuer: Option<String>,
    /// With --auth jwt: this server's canonical URI, which tokens must name
    /// as their audience (e.g. https://mcp.example.com/mcp).
    #[arg(long, env = "MCP_SERVER_AUDIENCE")]
    audience: Option<String>,
    /// With --auth jwt: a scope every request's token must carry
    /// (repeatable); also the metadata's scopes_supported.
    #[arg(long = "scope", env = "MCP_SERVER_SCOPE", value_delimiter = ',')]
    scopes: Vec<String>,
    /// Serve HTTP on a non-loopback address although this server
    /// authenticates nobody (--auth none): every session id, handle and
    /// task id is then a bearer token for whoever reaches the port.
    #[arg(long, env = "MCP_SERVER_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// How log lines are written: `text`, or `json` (one object per line;
    /// each request's lines carry its era, method, legacy session and W3C
    /// trace id, never a token or a state value).
    #[arg(long, default_value = "text", value_parser = ["text", "json"], env = "MCP_SERVER_LOG_FORMAT")]
    log_format: String,
    /// Path of the Prometheus metrics on the MCP port (default /metrics;
    /// with --auth jwt, none: the MCP port is public then, and the metrics
    /// belong on --metrics-listen); `none` serves them not there. With
    /// `none` and no --metrics-listen, no metrics are kept.
    #[arg(long, env = "MCP_SERVER_METRICS_PATH")]
    metrics_path: Option<String>,
    /// Serve the metrics (at /metrics) on this address too, a port of
    /// their own.
    #[arg(long, env = "MCP_SERVER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Path of the readiness probe (200 when the stores accept writes, 503
    /// with the reason otherwise); `none` serves none.
    #[arg(long, default_value = "/readyz", env = "MCP_SERVER_READY_PATH")]
    ready_path: String,
}

/// A probe path from the command line: `none` turns the probe off.
fn probe_path(path: String) -> Result<Option<String>, String> {
    match path.as_str() {
        "none" => Ok(None),
        p if p.starts_with('/') => Ok(Some(path)),
        _ => Err(format!(
            "probe path {path:?} must start with '/' (or be `none`)"
        )),
    }
}

/// jemalloc, which hands the memory of a spike of connections back to the
/// system within seconds (its settings: `.cargo/config.toml`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match base {
        Some(base) => base.join("mcp-server").join("sessions"),
        None => PathBuf::from("mcp-server-sessions"),
    }
}

/// Where a server keeps its state.
struct Stores {
    sessions: Arc<dyn SessionStore>,
    /// The handles (SEP-2567), in a store of their own beside the sessions.
    handles: Arc<dyn SessionStore>,
    /// The tasks (the tasks extension), in a store of their own too.
    tasks: Arc<dyn SessionStore>,
    /// The events of resumable streams (if not the default).
    events: Option<Arc<dyn EventStore>>,
    /// For the logs.
    name: String,
}

/// Opens the store named by `--store`.
async fn open_store(
    spec: Option<&str>,
    stdio: bool,
    idle_timeout: Duration,
) -> Result<Stores, String> {
    let spec = match spec {
        Some(spec) => spec.to_string(),
        None if stdio => "memory".to_string(),
        None => format!("file:{}", default_data_dir().display()),
    };
    if spec == "memory" {
        return Ok(Stores {
            sessions: Arc::new(MemoryStore::new()),
            handles: Arc::new(MemoryStore::new()),
            tasks: Arc::new(MemoryStore::new()),
            events: None,
            name: spec,
        });
    }
    if let Some(dir) = spec.strip_prefix("file:") {
        if dir.is_empty() {
            return Err("--store file: needs a directory, e.g. file:./sessions".into());
        }
        let store = FileStore::open(dir).map_err(|e| e.to_string())?;
        let report = store.recovery();
        tracing::info!(
            sessions = report.sessions,
            corrupt = report.corrupt.len(),
            torn_bytes = report.torn_bytes,
            elapsed = ?report.elapsed,
            "opened the file store in {dir}"
        );
        // The events of resumable streams live beside the sessions, so a
        // stream resumes after a restart too.
        let defaults = ServerConfig::default();
        let events = FileEventStore::open(
            std::path::Path::new(dir).join("events"),
            defaults.events_per_stream,
            defaults.streams_per_session,
        )
        .map_err(|e| e.to_string())?;
        let recovered = events.recovery();
        tracing::info!(
            events = recovered.events,
            damage = recovered.damage.len(),
            torn_bytes = recovered.torn_bytes,
            "opened the event store in {dir}/events"
        );
        let events: Arc<dyn EventStore> = Arc::new(events);
        // Handles live beside the sessions too, in a store of their own.
        let handles = FileStore::open(std::path::Path::new(dir).join("handles"))
            .map_err(|e| e.to_string())?;
        tracing::info!(
            handles = handles.recovery().sessions,
            "opened the handle store in {dir}/handles"
        );
        let tasks =
            FileStore::open(std::path::Path::new(dir).join("tasks")).map_err(|e| e.to_string())?;
        tracing::info!(
            tasks = tasks.recovery().sessions,
            "opened the task store in {dir}/tasks"
        );
        return Ok(Stores {
            sessions: Arc::new(store),
            handles: Arc::new(handles),
            tasks: Arc::new(tasks),
            events: Some(events),
            name: spec,
        });
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return open_redis(spec, idle_timeout).await;
    }
    Err(format!(
        "--store {spec}: expected `memory`, `file:DIR` or a redis:// URL"
    ))
}

#[cfg(feature = "redis")]
async fn open_redis(spec: String, idle_timeout: Duration) -> Result<Stores, String> {
    // Stream events live as long as an idle session may.
    let options = session_store::RedisOptions::default().session_idle_timeout(idle_timeout);
    let store = session_store::RedisStore::connect(&spec, options).map_err(|e| e.to_string())?;
    match store.ping().await {
        Ok(()) => tracing::info!("connected to Redis at {spec}"),
        // Not fatal: requests fail with 503 until Redis answers.
        Err(e) => tracing::warn!("Redis at {spec} does not answer yet: {e}"),
    }
    let events: Arc<dyn EventStore> = Arc::new(store.event_store());
    // Handles under `<prefix>:h`, shared by the replicas like sessions.
    let handles = store
        .with_prefix(&format!("{}:h", store.prefix()))
        .map_err(|e| e.to_string())?;
    // Tasks under `<prefix>:t`.
    let tasks = store
        .with_prefix(&format!("{}:t", store.prefix()))
        .map_err(|e| e.to_string())?;
    Ok(Stores {
        sessions: Arc::new(store),
        handles: Arc::new(handles),
        tasks: Arc::new(tasks),
        events: Some(events),
        name: spec,
    })
}

#[cfg(not(feature = "redis"))]
async fn open_redis(spec: String, _idle_timeout: Duration) -> Result<Stores, String> {
    Err(format!(
        "--store {spec}: this build has no Redis store (build with the `redis` feature)"
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}

mod telemetry;

use telemetry::init_tracing;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let exporting = init_tracing(&args.log_format);
    let exporting_spans = exporting.is_some();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mcp-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(args, exporting_spans));
    drop(runtime);
    #[cfg(feature = "otel")]
    if let Some(provider) = exporting
        && let Err(e) = provider.shutdown()
    {
        eprintln!("mcp-server: exporting the last spans failed: {e}");
    }
    #[cfg(not(feature = "otel"))]
    let _ = exporting;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mcp-server: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, exporting_spans: bool) -> Result<(), String> {
    if args.auth == "none"
        && (args.issuer.is_some() || args.audience.is_some() || !args.scopes.is_empty())
    {
        return Err(
            "--issuer, --audience and --scope take effect only with --auth jwt or \
             --auth introspection: add one, or drop them (the server would authenticate nobody)"
                .into(),
        );
    }
    if args.auth != "introspection"
        && (args.client_id.is_some()
            || args.client_secret.is_some()
            || args.introspection_url.is_some())
    {
        return Err(
            "--client-id, --client-secret and --introspection-url take effect only with \
             --auth introspection"
                .into(),
        );
    }
    let auth = match args.auth.as_str() {
        "none" => None,
        mode => {
            let (Some(issuer), Some(audience)) = (&args.issuer, &args.audience) else {
                return Err(format!(
                    "--auth {mode} needs --issuer URL and --audience URI"
                ));
            };
            let auth = if mode == "introspection" {
                let (Some(id), Some(secret)) = (&args.client_id, &args.client_secret) else {
                    return Err(
                        "--auth introspection needs --client-id and --client-secret \
                         (MCP_SERVER_CLIENT_SECRET)"
                            .into(),
                    );
                };
                let auth = mcp_server::BearerAuth::introspection(issuer, audience, id, secret)
                    .map_err(|e| e.to_string())?;
                match &args.introspection_url {
                    Some(url) => auth.introspection_endpoint(url),
                    None => auth,
                }
            } else {
                mcp_server::BearerAuth::jwt(issuer, audience).map_err(|e| e.to_string())?
            };
            let scopes: Vec<&str> = args.scopes.iter().map(String::as_str).collect();
            Some(auth.required_scopes(&scopes))
        }
    };
    if auth.is_none()
        && !args.stdio
        && !args.listen.ip().is_loopback()
        && !args.allow_unauthenticated
    {
        return Err(format!(
            "refusing to listen on {}: with --auth none this server authenticates nobody, \
             so on a shared network every session id, handle and task id would be a bearer \
             token for whoever reaches the port. Use --auth jwt --issuer URL --audience URI, \
             listen on a loopback address, or pass --allow-unauthenticated \
             (MCP_SERVER_ALLOW_UNAUTHENTICATED=true) to accept that",
            args.listen
        ));
    }
    let stores = open_store(args.store.as_deref(), args.stdio, args.idle_timeout).await?;
    let store_name = stores.name;
    let config = ServerConfig::default()
        .idle_timeout(args.idle_timeout)
        .handle_idle_timeout(args.handle_idle_timeout)
        .handshake_timeout(args.handshake_timeout)
        .max_sessions((args.max_sessions > 0).then_some(args.max_sessions))
        .task_lease(args.task_lease);
    let metrics_path = match args.metrics_path {
        Some(path) => probe_path(path)?,
        None if args.auth != "none" => None,
        None => Some("/metrics".to_string()),
    };
    let mut config = config;
    config.metrics = metrics_path.is_some() || args.metrics_listen.is_some();
    // Spans per request when their fields are logged, or exported.
    config.request_spans = args.log_format == "json" || exporting_spans;
    let mut builder = McpServer::builder()
        .store(stores.sessions)
        .handle_store(stores.handles)
        .task_store(stores.tasks);
    if let Some(events) = stores.events {
        builder = builder.event_store(events);
    }
    let mut builder = demo::register(builder);
    for tool in &args.rerun_safe {
        builder = builder.rerun_safe(tool);
    }
    let server: McpServer = builder.name("mcp-server").config(config).build();
    if args.stdio {
        tracing::info!(store = %store_name, "serving MCP on stdio");
        return server.serve_stdio().await.map_err(|e| e.to_string());
    }
    let mut http = HttpConfig::default();
    http.allowed_origins = args.allowed_origins;
    http.allowed_hosts = args.allowed_hosts;
    http.header_timeout = args.header_timeout;
    http.idle_connection_timeout = args.idle_connection_timeout;
    http.max_connections = args.max_connections;
    http.health_path = probe_path(args.health_path)?;
    http.ready_path = probe_path(args.ready_path)?;
    http.metrics_path = metrics_path;
    http.auth = auth;
    if args.json_response {
        http.response_mode = ResponseMode::Json;
    }
    // Freed memory goes back to the system from a thread of its own, also
    // when the server is idle after a spike (a build without the workspace's
    // allocator settings has it too).
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("cannot start the allocator's background thread: {e}");
    }
    // As many connections as the system allows (the cap stays below it).
    match mcp_server::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(open_file_limit = limit, "raised the open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(metrics_addr) = args.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| format!("cannot listen on {metrics_addr} for the metrics: {e}"))?;
        let bound = metrics_listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("serving metrics on http://{bound}/metrics");
        let metrics_server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics_server
                .serve_metrics(metrics_listener, shutdown_signal())
                .await
            {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
    }
    tracing::info!(store = %store_name, "listening on http://{addr}{}", http.path);
    server
        .serve_http(listener, http, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
