//! Shared by the HTTP tests: a real server on a loopback port, and a small
//! HTTP client that speaks just enough MCP to test it.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use mcp_server::{
    HttpConfig, InputRequest, McpServer, McpServerBuilder, Principal, RequestContext, ServerConfig,
    demo, tool,
};
use serde_json::{Map, Value, json};
use session_core::wire::CallToolResult;

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// A server running on 127.0.0.1 with an OS-chosen port.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    pub server: McpServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// The demo server with `config`.
    pub async fn start(config: ServerConfig) -> Self {
        Self::start_with(
            demo::register(McpServer::builder()),
            config,
            HttpConfig::default(),
        )
        .await
    }

    pub async fn start_with(
        builder: McpServerBuilder,
        config: ServerConfig,
        http: HttpConfig,
    ) -> Self {
        let server = builder.config(config).build();
        Self::serve(server, http).await
    }

    pub async fn serve(server: McpServer, http: HttpConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(server, http, listener).await
    }

    /// Serves `server` on `listener`.
    pub async fn serve_on(
        server: McpServer,
        http: HttpConfig,
        listener: tokio::net::TcpListener,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = server.clone();
        let task = tokio::spawn(async move {
            running
                .serve_http(listener, http, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            url: format!("http://{addr}/mcp"),
            addr,
            server,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

/// A bare MCP-over-HTTP client for tests.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    next_id: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Client {
    pub fn new(url: &str) -> Self {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            url: url.to_string(),
            session: None,
            version: "2025-11-25".into(),
            next_id: Default::default(),
        }
    }

    /// A client whose every request carries `Authorization: Bearer token`.
    pub fn with_token(url: &str, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .default_headers(headers)
                .build()
                .unwrap(),
            ..Client::new(url)
        }
    }

    pub fn id(&self) -> i64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// A POST with the usual headers and the session, if any.
    pub fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(session) = &self.session {
            req = req
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", &self.version);
        }
        req
    }

    /// `initialize` + `notifications/initialized`; keeps the session id.
    pub async fn connect(&mut self) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.version,
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1.0"}
        }});
        let response = self.post(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "initialize failed");
        let session = response
            .headers()
            .get("mcp-session-id")
            .expect("initialize issues a session id")
            .to_str()
            .unwrap()
            .to_string();
        let result: Value = response.json().await.unwrap();
        self.session = Some(session);
        if let Some(version) = result["result"]["protocolVersion"].as_str() {
            self.version = version.to_string();
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = self.post(&note).send().await.unwrap();
        assert_eq!(response.status(), 202);
        result
    }

    /// A request answered as JSON; returns the whole JSON-RPC response.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": method, "params": params});
        let response = self.post(&body).send().await.unwrap();
        let status = response.status();
        let kind = content_type(&response);
        if kind.starts_with("text/event-stream") {
            let events = read_sse(response, usize::MAX).await;
            return events
                .into_iter()
                .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                .find(|m| m.get("id").is_some())
                .expect("an SSE response carries the response");
        }
        assert_eq!(status, 200, "{method}: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// `tools/call`, returning the result (panics on a JSON-RPC error).
    pub async fn tool(&self, name: &str, args: Value) -> Value {
        let response = self
            .call("tools/call", json!({"name": name, "arguments": args}))
            .await;
        response
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{name} failed: {response}"))
    }
}

pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// Reads up to `max` events (or to the end of the stream).
pub async fn read_sse(response: reqwest::Response, max: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while events.len() < max {
        let Some(chunk) = body.next().await else {
            break;
        };
        let Ok(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: None,
                data: String::new(),
                retry: None,
            };
            let mut has_field = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    event.id = Some(v.to_string());
                    has_field = true;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    event.data.push_str(v);
                    has_field = true;
                } else if line == "data:" {
                    has_field = true;
                } else if let Some(v) = line.strip_prefix("retry: ") {
                    event.retry = v.parse().ok();
                }
            }
            if has_field {
                events.push(event);
                if events.len() >= max {
                    break;
                }
            }
        }
    }
    events
}

/// Polls `check` every 10 ms for up to 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-server");

/// A server process, killed with SIGKILL when dropped.
pub struct Process {
    pub child: Child,
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on an OS-chosen port and reads the address it logs.
pub fn start(args: &[&str]) -> Process {
    let mut command = Command::new(BIN);
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    start_command(command)
}

/// Starts `command` (the binary, perhaps through a wrapper) and reads the
/// address it logs.
pub fn start_command(mut command: Command) -> Process {
    let mut child = command
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on ") {
                let url = line[at + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server logs its address");
    Process { child, url }
}

/// A 2026-07-28 client: every request carries the `_meta` envelope and the
/// headers that mirror the body; no session.
#[derive(Clone)]
pub struct Modern {
    pub http: reqwest::Client,
    pub url: String,
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub capabilities: Value,
    /// Extra headers on every request (a stand-in principal, …).
    pub headers: Vec<(&'static str, String)>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// What a modern request got: the status, the content type, and the
/// messages (the JSON body, or every SSE event in order).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub messages: Vec<Value>,
}

impl Answer {
    /// The JSON-RPC response among the messages.
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("id").is_some() && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response in {self:?}"))
    }

    /// The result (panics on a JSON-RPC error).
    pub fn result(&self) -> &Value {
        self.response()
            .get("result")
            .unwrap_or_else(|| panic!("an error: {self:?}"))
    }

    /// The error code (panics on a result).
    pub fn code(&self) -> i64 {
        self.response()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {self:?}"))
    }

    /// The notifications before the response.
    pub fn notifications(&self) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m.get("method").is_some())
            .collect()
    }
}

impl Modern {
    pub fn new(url: &str) -> Self {
        Modern {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            url: url.to_string(),
            capabilities: json!({}),
            headers: Vec::new(),
            next_id: Default::default(),
        }
    }

    pub fn id(&self) -> i64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// The envelope every request carries.
    pub fn envelope(&self) -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1.0"}
        })
    }

    /// A POST of `method` with `params`, the envelope merged into
    /// `params._meta`, and the mirrored headers.
    pub fn request(&self, method: &str, mut params: Value) -> reqwest::RequestBuilder {
        let mut meta = self.envelope();
        if let Some(own) = params.get("_meta").and_then(Value::as_object) {
            for (k, v) in own {
                meta[k] = v.clone();
            }
        }
        params["_meta"] = meta;
        // `tasks/*` name their task (the tasks extension).
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .or_else(|| params.get("taskId"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": method, "params": params});
        self.raw(method, name.as_deref(), &body)
    }

    /// A POST of `body` as it is, with the standard headers for `method`
    /// and `name`.
    pub fn raw(&self, method: &str, name: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .body(body.to_string());
        if let Some(name) = name {
            req = req.header("mcp-name", name);
        }
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        req
    }

    /// Sends a request and reads its whole answer.
    pub async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let kind = content_type(&response);
        let messages = if kind.starts_with("text/event-stream") {
            read_sse(response, usize::MAX)
                .await
                .into_iter()
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect()
        } else {
            let text = response.text().await.unwrap();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))]
            }
        };
        Answer {
            status,
            content_type: kind,
            messages,
        }
    }

    pub async fn call(&self, method: &str, params: Value) -> Answer {
        Self::send(self.request(method, params)).await
    }

    /// `tools/call`, returning the result (panics on a JSON-RPC error).
    pub async fn tool(&self, name: &str, args: Value) -> Value {
        let answer = self
            .call("tools/call", json!({"name": name, "arguments": args}))
            .await;
        answer.result().clone()
    }
}

/// Stand-in authentication for tests: the principal is whatever `x-user`
/// says (none without it).
pub async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(user) = request
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
    {
        let principal = Principal(user.to_string());
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

/// Adds `confirm`: a tool that asks the user to confirm (input key `ok`)
/// and says what they answered.
pub fn with_confirm(builder: McpServerBuilder) -> McpServerBuilder {
    builder.tool(
        tool(
            "confirm",
            "Asks the user to confirm",
            json!({"type": "object"}),
        ),
        |ctx: RequestContext, _: Map<String, Value>| async move {
            let answer = ctx
                .input(
                    "ok",
                    InputRequest::elicit(
                        "Proceed?",
                        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}}),
                    ),
                )
                .await?;
            Ok(CallToolResult::text(format!(
                "answered {}",
                answer["action"].as_str().unwrap_or("?")
            )))
        },
    )
}
