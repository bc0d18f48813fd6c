//! stdio: the server as a child process speaking newline-delimited JSON-RPC.
//!
//! Its stderr goes to the logs (it is not an error channel). One writer task
//! owns the child's stdin and writes whole lines, so a caller that stops
//! waiting (a timeout) never leaves half a message in the pipe. Shutdown
//! closes its stdin, then sends SIGTERM, then SIGKILL, each after a bounded
//! wait; dropping the transport runs the same sequence in a spawned task.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use session_core::wire::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Sending, Transport};
use crate::router::{Router, Shut};
use crate::{Error, Result};

/// How long each shutdown step waits for the child to exit.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// Lines waiting for the writer; a sender waits when the child reads slowly.
const QUEUE: usize = 64;

/// One line for the writer, and where to say how writing it went.
type Line = (String, oneshot::Sender<Result<()>>);

/// The stdio transport.
#[derive(Debug)]
pub(crate) struct StdioTransport {
    /// `None` once the transport is closed.
    lines: Mutex<Option<mpsc::Sender<Line>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    child: Mutex<Option<Child>>,
    router: Arc<Router>,
}

/// Writes whole lines to the child's stdin until the queue closes (then
/// stdin is dropped, which is the child's signal to exit) or a write fails.
async fn write_lines(mut stdin: ChildStdin, mut queue: mpsc::Receiver<Line>) {
    while let Some((line, done)) = queue.recv().await {
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await
        .map_err(|e| Error::transport("writing to the server's stdin failed", e));
        let failed = written.is_err();
        let _ = done.send(written);
        if failed {
            return;
        }
    }
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
            // The last resort when no runtime is left to shut it down.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::transport(format!("cannot start {program}"), e))?;
        let (lines, queue) = mpsc::channel(QUEUE);
        let writer = child
            .stdin
            .take()
            .map(|stdin| tokio::spawn(write_lines(stdin, queue)));
        if let Some(stdout) = child.stdout.take() {
            let router = router.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let ended = loop {
                    match lines.next_line().await {
                        Ok(Some(line)) if line.trim().is_empty() => {}
                        Ok(Some(line)) => match Message::parse(line.as_bytes()) {
                            Ok(message) => router.deliver(message),
                            Err(e) => tracing::warn!(
                                "the server wrote a line that is not JSON-RPC: {}",
                                e.error
                            ),
                        },
                        Ok(None) => {
                            break "the server process closed its stdout (it exited)".into();
                        }
                        Err(e) => break format!("reading the server's stdout failed: {e}"),
                    }
                };
                // After `close`, the router is already shut as closed.
                router.shut(Shut::Transport(ended));
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
            lines: Mutex::new(Some(lines)),
            writer: Mutex::new(writer),
            child: Mutex::new(Some(child)),
            router,
        })
    }

    /// Takes what shutting down needs; `None` if it already happened. The
    /// queue is dropped here, so the writer ends once it has written what was
    /// queued.
    fn take(&self) -> Option<(Option<JoinHandle<()>>, Child)> {
        self.lines.lock().take();
        let writer = self.writer.lock().take();
        self.child.lock().take().map(|child| (writer, child))
    }
}

/// Closes the child's stdin (after the lines already queued), then SIGTERM,
/// then SIGKILL, each after a bounded wait.
async fn shut_down(writer: Option<JoinHandle<()>>, mut child: Child) -> Result<()> {
    if let Some(mut writer) = writer
        && tokio::time::timeout(SHUTDOWN_STEP, &mut writer)
            .await
            .is_err()
    {
        // The child does not read: drop its stdin without the rest.
        writer.abort();
    }
    if let Ok(status) = tokio::time::timeout(SHUTDOWN_STEP, child.wait()).await {
        tracing::debug!(?status, "the server exited after stdin closed");
        return Ok(());
    }
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let pid = nix::unistd::Pid::from_raw(pid);
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

#[async_trait]
impl Transport for StdioTransport {
    fn send(&self, message: Message, _headers: reqwest::header::HeaderMap) -> Sending {
        let lines = self.lines.lock().clone();
        Box::pin(async move {
            let Some(lines) = lines else {
                return Err(Error::Closed);
            };
            let mut line = message.to_json();
            line.push('\n');
            let (done, written) = oneshot::channel();
            let stopped = || Error::Transport {
                message: "the server's stdin is closed".into(),
                source: None,
            };
            lines.send((line, done)).await.map_err(|_| stopped())?;
            written.await.unwrap_or_else(|_| Err(stopped()))
        })
    }

    fn session_id(&self) -> Option<String> {
        None
    }

    fn reset_session(&self) {}

    async fn established(&self, _protocol_version: &str, _listen: bool) {}

    async fn close(&self, _terminate: bool) -> Result<()> {
        self.router.shut(Shut::Closed);
        match self.take() {
            Some((writer, child)) => shut_down(writer, child).await,
            None => Ok(()),
        }
    }
}

impl Drop for StdioTransport {
    /// Without `close`, the child gets the same sequence (stdin closed,
    /// SIGTERM, SIGKILL) in a task on the current runtime. With no runtime
    /// left, or if the runtime shuts down before the sequence ends, the child
    /// is killed (SIGKILL) when its handle is dropped.
    fn drop(&mut self) {
        self.router.shut(Shut::Closed);
        let Some((writer, child)) = self.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = shut_down(writer, child).await {
                        tracing::warn!("stopping the server process: {e}");
                    }
                });
            }
            Err(_) => drop(child),
        }
    }
}
