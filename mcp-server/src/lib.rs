//! An MCP server whose sessions survive restarts, expire on time and never
//! leak, speaking both eras of the protocol on one endpoint.
//!
//! This crate provides:
//! - [`McpServer`]: tools, resources and prompts with typed handlers, over a
//!   [`SessionManager`](session_core::SessionManager) and any
//!   [`SessionStore`](session_core::SessionStore): in memory, in a directory
//!   (durable), or your own;
//! - the Streamable HTTP transport ([`McpServer::serve_http`],
//!   [`McpServer::router`]) and the stdio transport
//!   ([`McpServer::serve_stdio`]), each for both eras:
//!   - the legacy revisions 2025-03-26, 2025-06-18 and 2025-11-25, where
//!     `initialize` starts a session (a record in the store, continued by
//!     any process sharing it) and streams resume with `Last-Event-ID`;
//!   - revision 2026-07-28, where every request carries its `_meta`
//!     envelope and needs no session: `server/discover`,
//!     `subscriptions/listen`, caching hints, and multi round-trip input
//!     with a sealed `requestState`;
//! - [`RequestContext`]: what a handler gets: its session (legacy) or
//!   nothing of the kind (modern), the principal's [handles](ScopedHandles)
//!   for state that spans requests in either era, progress, logs,
//!   cancellation, and [`input`](RequestContext::input), which asks the
//!   client for elicitation, sampling or roots the way the era allows;
//! - the session-state extension: `session/get` and `session/update`;
//! - [`demo`]: the tools of the `mcp-server` binary.
//!
//! A tool written once serves both eras:
//!
//! ```
//! use mcp_server::{InputRequest, McpServer, tool};
//! use serde_json::json;
//! use session_core::wire::CallToolResult;
//!
//! let server = McpServer::builder()
//!     .tool(
//!         tool("delete_all", "Deletes everything, once the user agrees", json!({"type": "object"})),
//!         |ctx, _args| async move {
//!             // Legacy: asks over the request's stream and waits.
//!             // 2026-07-28: ends this round with `input_required`; the
//!             // client retries with the answer, and this returns it.
//!             let answer = ctx
//!                 .input("sure", InputRequest::elicit("Delete everything?", json!({"type": "object"})))
//!                 .await?;
//!             Ok(CallToolResult::text(format!("the user chose {}", answer["action"])))
//!         },
//!     )
//!     .build();
//! # let _ = server;
//! ```
//!
//! Serving it over HTTP, with sessions and handles in a directory:
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_server::{HttpConfig, McpServer, ServerConfig, demo};
//! use session_store::FileStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(FileStore::open("./state/sessions")?);
//! let handles = Arc::new(FileStore::open("./state/handles")?);
//! let server = demo::register(McpServer::builder().store(store).handle_store(handles))
//!     .config(ServerConfig::default())
//!     .build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server
//!     .serve_http(listener, HttpConfig::default(), async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod config;
mod context;
pub mod demo;
mod dispatch;
mod error;
mod http;
mod hub;
mod input;
mod limits;
mod metered;
mod metrics;
mod registry;
mod server;
mod stdio;
mod trace;

#[doc(inline)]
pub use self::{
    auth::BearerAuth,
    config::{CacheHint, CacheScope, DEFAULT_LISTEN, HttpConfig, ResponseMode, ServerConfig},
    context::{RequestContext, ScopedHandles, SessionHandle},
    error::{Error, Rejection, Result},
    http::Principal,
    input::{INPUT_TIMEOUT, InputRequest},
    limits::raise_open_file_limit,
    metrics::Metrics,
    registry::{HandlerResult, TaskSupport},
    server::{McpServer, McpServerBuilder, tool},
};
