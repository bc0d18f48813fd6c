//! `mcp-client`: talk to an MCP server from the command line.
//!
//! ```text
//! mcp-client --url http://127.0.0.1:8080/mcp call counter --args '{"by":1}'
//! mcp-client --url http://127.0.0.1:8080/mcp --session-id ID state
//! mcp-client --stdio "mcp-server --stdio" tools
//! mcp-client --url http://127.0.0.1:8080/mcp --protocol 2026-07-28 call slow --args '{"steps":3,"delay_ms":500}'
//! mcp-client --url http://127.0.0.1:8080/mcp task get task_9c1e…
//! ```
//!
//! Prints results as JSON on stdout; on stderr the protocol revision
//! (`protocol: …`), the session id in the legacy era (`session: …`, also
//! when the command fails after connecting, so the session can be continued
//! or closed) and the id of a task the server made of a call (`task: …`). Exits non-zero with a message on stderr on failure, and when a
//! tool reports an error (`isError: true`: the result is still printed on
//! stdout). Arguments are checked before connecting: bad JSON starts no
//! session.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mcp_client::{Client, ClientEvent, ClientOptions, ProtocolMode, RequestOptions};
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
    /// The protocol revision the continued session negotiated (default: the
    /// latest this client speaks).
    #[arg(long, requires = "session_id")]
    protocol_version: Option<String>,
    /// Request timeout (e.g. 30s, 2m); for a call that became a task, the
    /// bound on the whole task.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Which protocol era to speak: auto (probe with server/discover, fall
    /// back to a legacy session), legacy, or 2026-07-28.
    #[arg(long, default_value = "auto", value_parser = parse_protocol)]
    protocol: ProtocolMode,
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
    /// A task (2026-07-28 era), from any process: `task get ID`, `task
    /// wait ID`, `task cancel ID`.
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
}

#[derive(Debug, Subcommand)]
enum TaskAction {
    /// Show the task as it is now.
    Get {
        /// The task's id.
        id: String,
    },
    /// Wait for the task's end and print its result.
    Wait {
        /// The task's id.
        id: String,
    },
    /// Ask the server to stop the task.
    Cancel {
        /// The task's id.
        id: String,
    },
}

fn parse_protocol(text: &str) -> Result<ProtocolMode, String> {
    text.parse()
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

/// A command with its arguments checked, ready to run.
#[derive(Debug)]
enum Plan {
    Tools,
    Call { name: String, arguments: Value },
    Ping,
    GetState,
    SetState(Map<String, Value>),
    Close,
    Task(TaskAction),
}

impl Plan {
    /// Checks the arguments, before anything is sent.
    fn of(command: Command) -> Result<Plan, String> {
        Ok(match command {
            Command::Tools => Plan::Tools,
            Command::Call { name, args } => Plan::Call {
                name,
                arguments: Value::Object(parse_object(&args, "--args")?),
            },
            Command::Ping => Plan::Ping,
            Command::State { action: None } => Plan::GetState,
            Command::State {
                action: Some(StateAction::Set { json }),
            } => Plan::SetState(parse_object(&json, "the state")?),
            Command::Close => Plan::Close,
            Command::Task { action } => Plan::Task(action),
        })
    }
}

/// What a run printed: the JSON for stdout (if any) and, on failure, the
/// message for stderr.
#[derive(Debug)]
struct Outcome {
    output: Option<Value>,
    failure: Option<String>,
}

impl Outcome {
    fn failed(message: impl Into<String>) -> Self {
        Outcome {
            output: None,
            failure: Some(message.into()),
        }
    }
}

fn json_of(value: impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot print the result: {e}"))
}

/// Runs a checked command on a connected client. `Ok` carries the JSON to
/// print and whether it reports a failure (a tool error).
async fn execute(client: &Client, plan: Plan) -> Result<(Value, bool), String> {
    let text = |e: mcp_client::Error| e.to_string();
    match plan {
        Plan::Tools => Ok((json_of(client.list_tools().await.map_err(text)?)?, false)),
        Plan::Call { name, arguments } => {
            let result = client.call_tool(&name, arguments).await.map_err(text)?;
            let failed = result.is_error == Some(true);
            Ok((json_of(result)?, failed))
        }
        Plan::Ping => {
            client.ping().await.map_err(text)?;
            Ok((json!({"ok": true}), false))
        }
        Plan::GetState => Ok((json_of(client.session_state().await.map_err(text)?)?, false)),
        Plan::SetState(patch) => Ok((
            json_of(client.update_session_state(patch).await.map_err(text)?)?,
            false,
        )),
        Plan::Close => {
            let session = client.session_id();
            client.clone().close().await.map_err(text)?;
            Ok((json!({"closed": session}), false))
        }
        Plan::Task(TaskAction::Get { id }) => {
            Ok((client.task(&id).get().await.map_err(text)?, false))
        }
        Plan::Task(TaskAction::Wait { id }) => {
            let options = RequestOptions::default().timeout(client.request_timeout());
            let result = client.task(&id).result(options).await.map_err(text)?;
            let failed = result["isError"] == json!(true);
            Ok((result, failed))
        }
        Plan::Task(TaskAction::Cancel { id }) => {
            client.task(&id).cancel().await.map_err(text)?;
            Ok((json!({"cancelled": id}), false))
        }
    }
}

async fn run(args: Args) -> Outcome {
    let plan = match Plan::of(args.command) {
        Ok(plan) => plan,
        Err(message) => return Outcome::failed(message),
    };
    let options = ClientOptions::default()
        .client_info("mcp-client-cli", env!("CARGO_PKG_VERSION"))
        .request_timeout(args.timeout)
        .listen(false)
        .protocol(args.protocol.clone())
        .on_event(|event| match event {
            ClientEvent::SessionReplaced { old, new } => eprintln!(
                "mcp-client: session {} is gone; continuing in new session {}",
                old.as_deref().unwrap_or("-"),
                new.as_deref().unwrap_or("-")
            ),
            ClientEvent::TaskCreated { task_id, .. } => eprintln!("task: {task_id}"),
            _ => {}
        });
    let connected = match (&args.url, &args.stdio, &args.session_id) {
        (Some(url), _, Some(session)) => match &args.protocol_version {
            Some(version) => Client::resume_http_as(url, session, version, options).await,
            None => Client::resume_http(url, session, options).await,
        },
        (Some(url), _, None) => Client::connect_http(url, options).await,
        (None, Some(command), _) => Client::connect_stdio(command, options).await,
        (None, None, _) => return Outcome::failed("give --url or --stdio"),
    };
    let client = match connected {
        Ok(client) => client,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    if let Some(version) = client.protocol_version() {
        eprintln!("protocol: {version}");
    }
    let executed = execute(&client, plan).await;
    // Printed whatever happened: the session (perhaps a new one) is left for
    // the next invocation.
    if let Some(session) = client.session_id() {
        eprintln!("session: {session}");
    }
    // Stdio servers are stopped; HTTP sessions are left to be continued
    // (after `close`, this only lets go).
    client.disconnect().await;
    match executed {
        Ok((output, false)) => Outcome {
            output: Some(output),
            failure: None,
        },
        Ok((output, true)) => Outcome {
            output: Some(output),
            failure: Some("the tool reported an error (isError: true)".into()),
        },
        Err(message) => Outcome::failed(message),
    }
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
    let outcome = runtime.block_on(run(args));
    if let Some(output) = &outcome.output {
        println!(
            "{}",
            serde_json::to_string_pretty(output).unwrap_or_default()
        );
    }
    match outcome.failure {
        None => ExitCode::SUCCESS,
        Some(message) => {
            eprintln!("mcp-client: {message}");
            ExitCode::FAILURE
        }
    }
}
