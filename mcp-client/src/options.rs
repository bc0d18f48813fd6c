//! How a client behaves: timeouts, recovery, what it listens for.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use session_core::wire::{ErrorObject, Implementation, code};

/// What the client does when the server answers HTTP 404 to a message that
/// carried the session id, because the session is gone.
///
/// Only that 404 counts: a JSON-RPC error in a response, whatever its code,
/// is the server's answer and is returned as [`Error::Rpc`](crate::Error::Rpc).
/// A 404 on the GET stream starts a new session too (unless `Surface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReinitPolicy {
    /// Start a new session and send the request again, once (default). The
    /// request is sent again only when the server refused it (404 to its
    /// POST), so it never ran; a request whose response stream was lost
    /// with the session (404 while resuming it) may have run, and fails
    /// with `SessionNotFound` after the new session is started.
    #[default]
    RetryOnce,
    /// Start a new session, but fail the request with
    /// [`Error::SessionNotFound`](crate::Error::SessionNotFound).
    Reinitialize,
    /// Do nothing: fail with `SessionNotFound` and keep the dead id.
    Surface,
}

/// Which protocol era the client speaks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProtocolMode {
    /// Probe with `server/discover` (revision 2026-07-28) and fall back to
    /// an `initialize` handshake when the server answers like a legacy one:
    /// an HTTP 4xx or a JSON-RPC error other than the modern ones, or a
    /// connection it closes. A `-32022` naming only legacy revisions falls
    /// back too. The verdict is kept per server URL for the life of the
    /// process (default).
    #[default]
    Auto,
    /// Always the legacy era: `initialize`, then a session.
    Legacy,
    /// Only this modern revision (e.g. `2026-07-28`); a server that does
    /// not speak it is an error.
    Pinned(String),
}

impl std::str::FromStr for ProtocolMode {
    type Err = String;

    /// `auto`, `legacy`, or a modern revision this client speaks.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(ProtocolMode::Auto),
            "legacy" => Ok(ProtocolMode::Legacy),
            v if session_core::wire::MODERN_PROTOCOL_VERSIONS.contains(&v) => {
                Ok(ProtocolMode::Pinned(v.to_string()))
            }
            other => Err(format!(
                "{other:?} is not auto, legacy or one of {:?}",
                session_core::wire::MODERN_PROTOCOL_VERSIONS
            )),
        }
    }
}

/// Something the client did on its own that its user may want to know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The session was replaced after the server lost the old one.
    SessionReplaced {
        /// The session that was gone.
        old: Option<String>,
        /// The new session (`None` if the server issues no ids).
        new: Option<String>,
    },
    /// A broken SSE stream was resumed.
    StreamResumed {
        /// The `Last-Event-ID` sent.
        last_event_id: String,
        /// Reconnection attempts it took.
        attempts: u32,
    },
    /// The GET stream gave up reconnecting.
    ListenFailed {
        /// Why.
        reason: String,
    },
    /// The server made a task of a request (2026-07-28 era, tasks
    /// extension); the client polls it until it ends. Keep the id to
    /// resume with [`Client::task`](crate::Client::task) from another
    /// process.
    TaskCreated {
        /// The task's id.
        task_id: String,
        /// The request that became the task.
        method: String,
    },
    /// A notification from the server.
    Notification {
        /// The method.
        method: String,
        /// Its parameters.
        params: Value,
    },
}

/// Receives [`ClientEvent`]s.
pub type EventHandler = Arc<dyn Fn(&ClientEvent) + Send + Sync>;

/// Answers requests the server sends (`sampling/createMessage`,
/// `elicitation/create`, `roots/list`, …). Without one, the client answers
/// them with "method not found".
pub type RequestHandler = Arc<
    dyn Fn(
            String,
            Value,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Value, ErrorObject>> + Send>,
        > + Send
        + Sync,
>;

/// Settings of a [`Client`](crate::Client).
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Who the client is, in `initialize`.
    pub client_info: Implementation,
    /// Capabilities declared in `initialize`.
    pub capabilities: Value,
    /// Bound on the whole handshake (`initialize` and
    /// `notifications/initialized`), on connecting, and on the headers of a
    /// GET stream (10 s).
    pub connect_timeout: Duration,
    /// Default timeout of a request (60 s); also bounds notifications, the
    /// DELETE that ends a session, and answers to server requests.
    pub request_timeout: Duration,
    /// What to do when the session is gone (retry once in a new session).
    pub reinit: ReinitPolicy,
    /// Listen for server-initiated messages (yes): the GET stream of a
    /// legacy session; in the 2026-07-28 era a `subscriptions/listen`
    /// stream for the list changes the server announces, reopened with
    /// capped, jittered backoff. Either way they reach
    /// [`ClientEvent::Notification`].
    pub listen: bool,
    /// Reconnection attempts of a broken stream before giving up (8).
    pub max_reconnects: u32,
    /// First reconnection delay when the server gave no `retry` (100 ms);
    /// doubles with jitter up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest reconnection delay (10 s).
    pub max_backoff: Duration,
    /// Hears what the client does on its own.
    pub on_event: Option<EventHandler>,
    /// Answers server requests: in the legacy era the ones the server
    /// sends, in the 2026-07-28 era the input requests of `input_required`
    /// results (elicitation, sampling, roots).
    pub on_request: Option<RequestHandler>,
    /// Which era to speak (auto: probe, then fall back).
    pub protocol: ProtocolMode,
    /// Declare the tasks extension in the 2026-07-28 era, so that long
    /// work may come back as a task the client polls (yes).
    pub tasks: bool,
    /// Rounds of `input_required` a request may take before it fails (8).
    pub max_input_rounds: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_info: Implementation {
                name: "mcp-client".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                title: None,
            },
            capabilities: Value::Object(Default::default()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            reinit: ReinitPolicy::RetryOnce,
            listen: true,
            max_reconnects: 8,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            on_event: None,
            on_request: None,
            protocol: ProtocolMode::Auto,
            tasks: true,
            max_input_rounds: 8,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("client_info", &self.client_info)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reinit", &self.reinit)
            .field("listen", &self.listen)
            .field("max_reconnects", &self.max_reconnects)
            .field("protocol", &self.protocol)
            .field("tasks", &self.tasks)
            .field("max_input_rounds", &self.max_input_rounds)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// Sets the name and version sent in `clientInfo`.
    pub fn client_info(mut self, name: &str, version: &str) -> Self {
        self.client_info = Implementation {
            name: name.into(),
            version: version.into(),
            title: None,
        };
        self
    }

    /// Sets the capabilities the client declares (`elicitation`,
    /// `sampling`, `roots`, …): in `initialize` in the legacy era, on every
    /// request in the 2026-07-28 era. Declare only what the request handler
    /// answers.
    pub fn capabilities(mut self, capabilities: Value) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets the default request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the handshake and connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets what happens when the session is gone.
    pub fn reinit(mut self, policy: ReinitPolicy) -> Self {
        self.reinit = policy;
        self
    }

    /// Whether to open the GET stream.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Sets which era to speak.
    pub fn protocol(mut self, mode: ProtocolMode) -> Self {
        self.protocol = mode;
        self
    }

    /// Whether to declare the tasks extension (2026-07-28 era).
    pub fn tasks(mut self, declare: bool) -> Self {
        self.tasks = declare;
        self
    }

    /// Sets how many rounds of `input_required` a request may take.
    pub fn max_input_rounds(mut self, rounds: u32) -> Self {
        self.max_input_rounds = rounds;
        self
    }

    /// Sets the event handler.
    pub fn on_event(mut self, handler: impl Fn(&ClientEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(handler));
        self
    }

    /// Sets the handler of server requests.
    pub fn on_request<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(String, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ErrorObject>> + Send + 'static,
    {
        self.on_request = Some(Arc::new(move |method, params| {
            Box::pin(handler(method, params))
        }));
        self
    }
}

/// Receives progress of one request: `(progress, total, message)`.
pub type ProgressHandler = Arc<dyn Fn(f64, Option<f64>, Option<String>) + Send + Sync>;

/// Settings of one request.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the client's default timeout.
    pub timeout: Option<Duration>,
    /// Restart the timeout whenever progress arrives.
    pub reset_timeout_on_progress: bool,
    /// Bound on the whole request however much progress arrives (with
    /// `reset_timeout_on_progress`; default 10 × the timeout).
    pub max_total_timeout: Option<Duration>,
    /// Asks for progress (sends `_meta.progressToken`) and receives it.
    pub on_progress: Option<ProgressHandler>,
}

impl fmt::Debug for RequestOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestOptions")
            .field("timeout", &self.timeout)
            .field("reset_timeout_on_progress", &self.reset_timeout_on_progress)
            .field("max_total_timeout", &self.max_total_timeout)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl RequestOptions {
    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Restarts the timeout on progress, within `max_total`.
    pub fn reset_on_progress(mut self, max_total: Duration) -> Self {
        self.reset_timeout_on_progress = true;
        self.max_total_timeout = Some(max_total);
        self
    }

    /// Receives progress.
    pub fn on_progress(
        mut self,
        handler: impl Fn(f64, Option<f64>, Option<String>) + Send + Sync + 'static,
    ) -> Self {
        self.on_progress = Some(Arc::new(handler));
        self
    }
}

/// The answer to a server request the client has no handler for.
pub(crate) fn method_not_found(method: &str) -> ErrorObject {
    ErrorObject::new(
        code::METHOD_NOT_FOUND,
        format!("the client does not handle {method}"),
    )
}
