//! The client under test for the official conformance suite's client
//! scenarios (`@modelcontextprotocol/conformance client --command ...`),
//! built on this library. The suite appends the server URL as the last
//! argument, names the scenario in `MCP_CONFORMANCE_SCENARIO` and (from
//! 0.2.0) the revision in `MCP_CONFORMANCE_PROTOCOL_VERSION`: a modern
//! revision pins the client to it; anything else leaves it in `auto`, which
//! probes with `server/discover` and falls back to a legacy session.
//!
//! Run by `cargo xtask interop`.

use std::process::ExitCode;

use mcp_client::{Client, ClientOptions, ProtocolMode};
use serde_json::json;

async fn run(url: &str, scenario: &str) -> Result<(), mcp_client::Error> {
    let protocol = std::env::var("MCP_CONFORMANCE_PROTOCOL_VERSION")
        .ok()
        .and_then(|v| match v.parse() {
            Ok(ProtocolMode::Pinned(v)) => Some(ProtocolMode::Pinned(v)),
            _ => None,
        })
        .unwrap_or_default();
    let options = ClientOptions::default()
        .client_info("mcp-client-conformance", env!("CARGO_PKG_VERSION"))
        .protocol(protocol)
        .listen(false);
    let client = Client::connect_http(url, options).await?;
    let tools = client.list_tools().await?;
    eprintln!(
        "scenario {scenario}: tools {:?}",
        tools.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    match scenario {
        "tools_call" => {
            let result = client
                .call_tool("add_numbers", json!({"a": 3, "b": 4}))
                .await?;
            eprintln!("add_numbers: {result:?}");
        }
        "sse-retry" => {
            let name = tools
                .first()
                .map_or("test_reconnection", |t| t.name.as_str());
            let result = client.call_tool(name, json!({})).await?;
            eprintln!("{name}: {result:?}");
        }
        _ => {}
    }
    // A test server may refuse DELETE in ways that do not matter here.
    if let Err(e) = client.close().await {
        eprintln!("close: {e}");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().next_back() else {
        eprintln!("usage: conformance_client URL");
        return ExitCode::FAILURE;
    };
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    match run(&url, &scenario).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conformance client ({scenario}): {e}");
            ExitCode::FAILURE
        }
    }
}
