//! `mcp-client`: talk to an MCP server from the command line.
//!
//! ```text
//! mcp-client --url http://127.0.0.1:8080/mcp call counter --args '{"by":1}'
//! mcp-client --url http://127.0.0.1:8080/mcp --session-id ID state
//! mcp-client --stdio "mcp-server --stdio" tools
//! ```
//!
//! Prints results as JSON on stdout and the session id on stderr; exits
//! non-zero with a message on failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mcp_client::{Client, ClientEvent, ClientOptions};
use serde_json::{Map, Value, json};
use tracing_subscriber::EnvFilter;

/// Talk to an MCP server: list and call tools, read and write session state,
/// and continue a session later with --session-id.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's MCP endpoint (Streamable HTTP).
    #[arg(long, conflicts_with = "stdio", required_unless_present = "stdio")]
    url: Option<String>,
    /// Start this command and speak MCP over its stdin/stdout.
    #[arg(long)]
    stdio: Option<String>,
    /// Continue this session instead of starting a new one (HTTP only).
    #[arg(long, requires = "url")]
    session_id: Option<String>,
    /// Request timeout (e.g. 30s, 2m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the server's tools.
    Tools,
    /// Call a tool.
    Call {
        /// The tool's name.
        name: String,
        /// Its arguments, a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// Check the server answers.
    Ping,
    /// Show the session's state, or change it (`state set JSON`).
    State {
        #[command(subcommand)]
        action: Option<StateAction>,
    },
    /// End the session.
    Close,
}

#[derive(Debug, Subcommand)]
enum StateAction {
    /// Merge a JSON object into the state (`null` removes a key).
    Set {
        /// The keys to merge.
        json: String,
    },
}

fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{what} must be a JSON object")),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

async fn run(args: Args) -> Result<Value, String> {
    let options = ClientOptions::default()
        .client_info("mcp-client-cli", env!("CARGO_PKG_VERSION"))
        .request_timeout(args.timeout)
        .listen(false)
        .on_event(|event| {
            if let ClientEvent::SessionReplaced { old, new } = event {
                eprintln!(
                    "mcp-client: session {} is gone; continuing in new session {}",
                    old.as_deref().unwrap_or("-"),
                    new.as_deref().unwrap_or("-")
                );
            }
        });
    let client = match (&args.url, &args.stdio, &args.session_id) {
        (Some(url), _, Some(session)) => Client::resume_http(url, session, options).await,
        (Some(url), _, None) => Client::connect_http(url, options).await,
        (None, Some(command), _) => Client::connect_stdio(command, options).await,
        (None, None, _) => return Err("give --url or --stdio".into()),
    }
    .map_err(|e| e.to_string())?;
    let output = match args.command {
        Command::Tools => {
            serde_json::to_value(client.list_tools().await.map_err(|e| e.to_string())?)
        }
        Command::Call {
            name,
            args: arguments,
        } => {
            let arguments = parse_object(&arguments, "--args")?;
            serde_json::to_value(
                client
                    .call_tool(&name, Value::Object(arguments))
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        Command::Ping => {
            client.ping().await.map_err(|e| e.to_string())?;
            Ok(json!({"ok": true}))
        }
        Command::State { action: None } => {
            serde_json::to_value(client.session_state().await.map_err(|e| e.to_string())?)
        }
        Command::State {
            action: Some(StateAction::Set { json }),
        } => {
            let patch = parse_object(&json, "the state")?;
            serde_json::to_value(
                client
                    .update_session_state(patch)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        Command::Close => {
            let session = client.session_id();
            if let Some(session) = &session {
                eprintln!("session: {session}");
            }
            client.close().await.map_err(|e| e.to_string())?;
            return Ok(json!({"closed": session}));
        }
    }
    .map_err(|e| e.to_string())?;
    if let Some(session) = client.session_id() {
        eprintln!("session: {session}");
    }
    // Leave the session for the next invocation (stdio servers are stopped).
    client.disconnect().await;
    Ok(output)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mcp-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(output) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&output).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mcp-client: {message}");
            ExitCode::FAILURE
        }
    }
}
