//! An MCP client that creates, resumes and recovers sessions by itself, and
//! speaks the sessionless 2026-07-28 era too.
//!
//! **Eras** ([`ProtocolMode`]): by default the client probes a server with
//! `server/discover` (revision 2026-07-28) and falls back to an
//! `initialize` handshake when the server answers like a legacy one. In the
//! 2026-07-28 era every request carries its `_meta` envelope and, over
//! HTTP, the `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*` headers; results are read
//! by `resultType`: `input_required` rounds go to the request handler,
//! a `task` is polled to its end ([`Task`], [`Client::task`] from any
//! process), and change notifications come on a `subscriptions/listen`
//! stream.
//!
//! This crate provides:
//! - [`Client`]: the handshake (offering revision 2025-11-25, accepting
//!   2025-06-18 and 2025-03-26), tools, resources, prompts, `ping` and any
//!   typed request, each with a timeout (cancelled with
//!   `notifications/cancelled` when it runs out or the caller stops waiting),
//!   progress callbacks;
//! - Streamable HTTP ([`Client::connect_http`]): pooled connections, JSON
//!   and SSE answers, a GET stream for server-initiated messages, broken
//!   streams resumed with `Last-Event-ID` after the server's `retry` or a
//!   capped, jittered backoff;
//! - stdio ([`Client::connect_stdio`]): the server as a child process, shut
//!   down by closing its stdin, then SIGTERM, then SIGKILL (also when the
//!   client is dropped, while a runtime remains);
//! - sessions that survive: [`Client::resume_http`] (or
//!   [`Client::resume_http_as`], naming the session's revision) continues a
//!   session from another process; when the server lost the session (HTTP
//!   404 to a message that carried its id; never a JSON-RPC error, whatever
//!   its code), the client starts a new one, with concurrent requests waiting
//!   for it, and by default retries a request the server refused once
//!   ([`ReinitPolicy`]), reporting the new id ([`ClientEvent`]);
//! - the session-state extension: [`Client::session_state`] and
//!   [`Client::update_session_state`].
//!
//! It depends on `session-core` for the wire types only, not on the server.
//!
//! ```no_run
//! use mcp_client::{Client, ClientOptions};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), mcp_client::Error> {
//! let client = Client::connect_http("http://127.0.0.1:8080/mcp", ClientOptions::default()).await?;
//! let counted = client.call_tool("counter", json!({"by": 1})).await?;
//! println!("{:?} in session {:?}", counted.structured_content, client.session_id());
//!
//! // Later, from another process: the same session, with its state.
//! let id = client.session_id().unwrap();
//! client.disconnect().await;
//! let again = Client::resume_http("http://127.0.0.1:8080/mcp", &id, ClientOptions::default()).await?;
//! again.call_tool("counter", json!({"by": 1})).await?;
//! again.close().await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod modern;
mod options;
mod router;
mod task;
mod transport;

#[doc(inline)]
pub use self::{
    client::{Client, ServerDetails},
    error::{Error, Result},
    modern::TASKS_EXTENSION,
    options::{
        ClientEvent, ClientOptions, EventHandler, ProgressHandler, ProtocolMode, ReinitPolicy,
        RequestHandler, RequestOptions,
    },
    task::Task,
};
