//! `rmcp-echo`: benchmark peer built on the official `rmcp` SDK.
//!
//! Serves one MCP tool, `echo {text}`, over rmcp's Streamable HTTP server with
//! rmcp's defaults (legacy session mode, SSE responses, `LocalSessionManager`)
//! at `/mcp` on `--listen ADDR` (default `127.0.0.1:0`). Prints
//! `listening on http://<addr>/mcp` once bound.

use std::io::Write;
use std::sync::Arc;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_router};

#[derive(Debug, Clone)]
struct Echo;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[tool_router(server_handler)]
impl Echo {
    #[tool(description = "Return the given text unchanged")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }
}

fn listen_addr() -> String {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().expect("--listen needs an address"),
            other => panic!("unknown argument {other:?} (usage: rmcp-echo [--listen ADDR])"),
        }
    }
    addr
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let config = StreamableHttpServerConfig::default().with_legacy_session_mode(true);
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new().nest_service("/mcp", service);

    let listener = tokio::net::TcpListener::bind(listen_addr()).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{}/mcp", listener.local_addr()?)?;
    out.flush()?;
    drop(out);

    axum::serve(listener, app).await
}
