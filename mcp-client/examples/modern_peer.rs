//! Our client, as a library, against another implementation's server in
//! the 2026-07-28 era: `auto` must land there; `echo` is called; `greet`
//! asks the user's name through an `input_required` result, answered by the
//! request handler. Exits non-zero with the reason when anything differs.
//!
//! Usage: `modern_peer URL`. Run by `cargo xtask interop` against the
//! official TypeScript SDK 2.4 and Python SDK 2.3 servers.

use std::process::ExitCode;

use mcp_client::{Client, ClientOptions};
use serde_json::{Value, json};

fn text_of(result: &session_core::wire::CallToolResult) -> String {
    serde_json::to_value(&result.content)
        .ok()
        .and_then(|c| c[0]["text"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn run(url: &str) -> Result<(), String> {
    let options = ClientOptions::default()
        .client_info("mcp-client-modern-peer", env!("CARGO_PKG_VERSION"))
        .capabilities(json!({"elicitation": {"form": {}}}))
        .on_request(|method, params: Value| async move {
            eprintln!("asked {method}: {}", params["message"]);
            Ok(json!({"action": "accept", "content": {"name": "Rust"}}))
        });
    let client = Client::connect_http(url, options)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let version = client.protocol_version().unwrap_or_default();
    if version != "2026-07-28" || client.session_id().is_some() {
        return Err(format!(
            "landed in {version} (session {:?})",
            client.session_id()
        ));
    }
    let tools = client
        .list_tools()
        .await
        .map_err(|e| format!("tools/list: {e}"))?;
    eprintln!(
        "tools: {:?}",
        tools.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    let echoed = client
        .call_tool("echo", json!({"text": "modern"}))
        .await
        .map_err(|e| format!("echo: {e}"))?;
    if !text_of(&echoed).contains("modern") {
        return Err(format!("echo answered {echoed:?}"));
    }
    let greeted = client
        .call_tool("greet", json!({}))
        .await
        .map_err(|e| format!("greet: {e}"))?;
    if text_of(&greeted) != "Hello, Rust!" {
        return Err(format!("greet answered {greeted:?}"));
    }
    eprintln!("ok: {version}, echo and an input_required round");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: modern_peer URL");
        return ExitCode::FAILURE;
    };
    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modern_peer: {e}");
            ExitCode::FAILURE
        }
    }
}
