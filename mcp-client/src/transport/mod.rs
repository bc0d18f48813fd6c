//! How messages reach the server and come back: Streamable HTTP or stdio.
//!
//! A transport sends messages and hands everything that comes back
//! (responses, notifications, server requests) to the [`Router`]. The client
//! core above it knows nothing of HTTP or processes.

pub(crate) mod http;
mod sse;
pub(crate) mod stdio;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use session_core::wire::Message;

use crate::Result;

#[cfg(doc)]
use crate::router::Router;

/// A message on its way; see [`Transport::send`].
pub(crate) type Sending = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// A way to reach a server.
#[async_trait]
pub(crate) trait Transport: Send + Sync + 'static {
    /// Sends one message. Whatever comes back is delivered to the router;
    /// an immediate refusal (HTTP 404, a broken pipe) is returned here.
    ///
    /// The session the message goes out in is captured when this is
    /// called, not when the future first runs: the client core calls it
    /// under its recovery gate, so a message never goes out half-way through
    /// a new handshake. Dropping the future never sends part of a message.
    ///
    /// `headers` go with the message where the transport has headers (the
    /// 2026-07-28 era's `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` over HTTP);
    /// stdio has none and ignores them.
    fn send(&self, message: Message, headers: HeaderMap) -> Sending;

    /// The session the transport carries, if the server issued one.
    fn session_id(&self) -> Option<String>;

    /// Forgets the session, before a new `initialize`.
    fn reset_session(&self);

    /// Records the negotiated revision (sent as `MCP-Protocol-Version`) and
    /// starts listening for server-initiated messages if asked to.
    async fn established(&self, protocol_version: &str, listen: bool);

    /// Keeps a `subscriptions/listen` stream open (2026-07-28 era): `params`
    /// are the request's, envelope included; each (re)connection sends it
    /// as a new request. Transports without such streams ignore it.
    async fn listen_modern(&self, _params: serde_json::Value, _headers: HeaderMap) {}

    /// Ends the session (DELETE) and stops. `terminate: false` only stops,
    /// leaving the session for another client to resume.
    async fn close(&self, terminate: bool) -> Result<()>;
}
