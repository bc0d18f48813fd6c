//! stdio: the server as a child process speaking newline-delimited JSON-RPC.
//!
//! Its stderr goes to the logs (it is not an error channel). Shutdown closes
//! its stdin, then sends SIGTERM, then SIGKILL, each after a bounded wait.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::wire::{ErrorObject, Message, code};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;

use super::Transport;
use crate::router::Router;
use crate::{Error, Result};

/// How long each shutdown step waits for the child to exit.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// The stdio transport.
#[derive(Debug)]
pub(crate) struct StdioTransport {
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<Option<Child>>,
}

impl StdioTransport {
    /// Starts `command` (a program and its arguments, split like a shell
    /// would) with piped stdio.
    pub(crate) fn spawn(command: &str, router: Arc<Router>) -> Result<Self> {
        let words = shell_words::split(command)
            .map_err(|e| Error::transport(format!("cannot parse the command {command:?}"), e))?;
        let Some((program, args)) = words.split_first() else {
            return Err(Error::Transport {
                message: "the stdio command is empty".into(),
                source: None,
            });
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::transport(format!("cannot start {program}"), e))?;
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match Message::parse(line.as_bytes()) {
                        Ok(message) => router.deliver(message),
                        Err(e) => tracing::warn!(
                            "the server wrote a line that is not JSON-RPC: {}",
                            e.error
                        ),
                    }
                }
                router.fail_all(&ErrorObject::new(
                    code::INTERNAL_ERROR,
                    "the server process closed its stdout",
                ));
            });
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "mcp_client::server_stderr", "{line}");
                }
            });
        }
        Ok(StdioTransport {
            stdin: Mutex::new(stdin),
            child: Mutex::new(Some(child)),
        })
    }
}

#[async_trait]
impl Transport for StdioTransport {
    async fn send(&self, message: Message) -> Result<()> {
        let mut stdin = self.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(Error::Closed);
        };
        let mut line = message.to_json();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::transport("writing to the server's stdin failed", e))?;
        stdin
            .flush()
            .await
            .map_err(|e| Error::transport("writing to the server's stdin failed", e))
    }

    fn session_id(&self) -> Option<String> {
        None
    }

    fn reset_session(&self) {}

    async fn established(&self, _protocol_version: &str, _listen: bool) {}

    async fn close(&self, _terminate: bool) -> Result<()> {
        // Closing stdin asks the server to exit.
        self.stdin.lock().await.take();
        let Some(mut child) = self.child.lock().await.take() else {
            return Ok(());
        };
        if let Ok(status) = tokio::time::timeout(SHUTDOWN_STEP, child.wait()).await {
            tracing::debug!(?status, "the server exited after stdin closed");
            return Ok(());
        }
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(SHUTDOWN_STEP, child.wait())
                .await
                .is_ok()
            {
                tracing::debug!("the server exited after SIGTERM");
                return Ok(());
            }
        }
        tracing::warn!("the server ignored stdin EOF and SIGTERM; killing it");
        child
            .kill()
            .await
            .map_err(|e| Error::transport("cannot kill the server process", e))
    }
}
