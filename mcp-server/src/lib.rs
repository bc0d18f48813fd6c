//! An MCP server whose sessions survive restarts, expire on time and never
//! leak.
//!
//! This crate provides:
//! - [`McpServer`]: tools, resources and prompts with typed handlers, over a
//!   [`SessionManager`](session_core::SessionManager) and any
//!   [`SessionStore`](session_core::SessionStore): in memory, in a directory
//!   (durable), or your own;
//! - the Streamable HTTP transport ([`McpServer::serve_http`],
//!   [`McpServer::router`]) for the legacy revisions 2025-03-26, 2025-06-18
//!   and 2025-11-25, with resumable SSE streams;
//! - the stdio transport ([`McpServer::serve_stdio`]);
//! - [`RequestContext`]: what a handler gets (its session's state, progress,
//!   cancellation, notifications);
//! - the session-state extension: `session/get` and `session/update`;
//! - [`demo`]: the tools of the `mcp-server` binary.
//!
//! Every legacy session is a record in the store, holding what the handshake
//! negotiated: any process sharing the store, or this one after a restart,
//! continues it at once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mcp_server::{HttpConfig, McpServer, ServerConfig, demo};
//! use session_store::FileStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(FileStore::open("./sessions")?);
//! let server = demo::register(McpServer::builder().store(store))
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

mod config;
mod context;
pub mod demo;
mod dispatch;
mod error;
mod http;
mod hub;
mod registry;
mod server;
mod stdio;

#[doc(inline)]
pub use self::{
    config::{CacheHint, CacheScope, DEFAULT_LISTEN, HttpConfig, ResponseMode, ServerConfig},
    context::{INPUT_TIMEOUT, InputRequest, RequestContext, ScopedHandles, SessionHandle},
    error::{Error, Rejection, Result},
    http::Principal,
    registry::HandlerResult,
    server::{McpServer, McpServerBuilder, tool},
};
