//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout.
//!
//! The process is one session, created by `initialize`, that lives until
//! stdin closes. Logs go to stderr, never stdout.

use std::sync::Arc;
use std::time::Duration;

use session_core::wire::{ErrorObject, Message, Response, code};
use session_core::{SessionId, SessionRecord};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::context::Outbox;
use crate::error::Error;
use crate::server::{McpServer, Shared};

/// A stdio session lasts as long as its process, however quiet.
const STDIO_IDLE_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl McpServer {
    /// Serves MCP on this process's stdin and stdout until stdin closes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if reading stdin or writing stdout fails.
    pub async fn serve_stdio(&self) -> Result<(), Error> {
        self.serve_lines(tokio::io::stdin(), tokio::io::stdout())
            .await
    }

    /// Serves MCP as newline-delimited JSON-RPC on any reader and writer
    /// until the reader ends; then the session is closed. Requests run
    /// concurrently, so `notifications/cancelled` can stop one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if reading or writing fails.
    pub async fn serve_lines<R, W>(&self, input: R, output: W) -> Result<(), Error>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel::<Box<Message>>(64);
        let writer = tokio::spawn(write_lines(output, rx));
        let sweeper = self.spawn_sweeper();
        let mut session: Option<SessionId> = None;
        let mut lines = BufReader::new(input).lines();
        let result = loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(()),
                Err(source) => {
                    break Err(Error::Io {
                        action: "read stdin".into(),
                        source,
                    });
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            handle_line(&shared, &tx, &mut session, line.as_bytes()).await;
        };
        if let Some(id) = session {
            let _ = shared.manager.close(&id).await;
        }
        sweeper.abort();
        drop(tx);
        match writer.await {
            Ok(Err(source)) if result.is_ok() => Err(Error::Io {
                action: "write stdout".into(),
                source,
            }),
            _ => result,
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut rx: mpsc::Receiver<Box<Message>>,
) -> std::io::Result<()> {
    while let Some(message) = rx.recv().await {
        let mut line = message.to_json();
        line.push('\n');
        output.write_all(line.as_bytes()).await?;
        output.flush().await?;
    }
    Ok(())
}

fn error(id: Option<session_core::wire::RequestId>, code: i64, message: &str) -> Message {
    Message::Response(Response::error(id, ErrorObject::new(code, message)))
}

async fn handle_line(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Box<Message>>,
    session: &mut Option<SessionId>,
    line: &[u8],
) {
    let message = match Message::parse(line) {
        Ok(message) => message,
        Err(e) => {
            let _ = tx
                .send(Box::new(Message::Response(Response::error(e.id, e.error))))
                .await;
            return;
        }
    };
    let mut ended = None;
    let record = match session.as_ref() {
        Some(id) => match shared.manager.get(id).await {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(session = %id, "the session is unusable: {e}");
                if matches!(
                    e,
                    session_core::Error::Expired
                        | session_core::Error::Closed
                        | session_core::Error::NotFound
                ) {
                    // It is over: a new `initialize` starts another.
                    ended = Some(e.to_string());
                    *session = None;
                }
                None
            }
        },
        None => None,
    };
    match (message, record) {
        (Message::Request(request), _) if request.method == "initialize" => {
            if session.is_some() {
                let reply = error(
                    Some(request.id),
                    code::INVALID_REQUEST,
                    "already initialized",
                );
                let _ = tx.send(Box::new(reply)).await;
                return;
            }
            let reply = match shared
                .initialize(&request, None, Some(STDIO_IDLE_TIMEOUT))
                .await
            {
                Ok((record, response)) => {
                    *session = record.map(|r| r.id().clone());
                    Message::Response(response)
                }
                Err(rejection) => {
                    Message::Response(Response::error(Some(request.id), rejection.error_object()))
                }
            };
            let _ = tx.send(Box::new(reply)).await;
        }
        (Message::Request(request), None) => {
            let reply = if request.method == "ping" {
                Message::Response(Response::ok(
                    request.id,
                    session_core::wire::to_raw(&serde_json::json!({})),
                ))
            } else if let Some(why) = &ended {
                error(
                    Some(request.id),
                    code::INVALID_REQUEST,
                    &format!("The session ended ({why}): send initialize to start a new one"),
                )
            } else {
                error(
                    Some(request.id),
                    code::INVALID_REQUEST,
                    "Server not initialized: send initialize first",
                )
            };
            let _ = tx.send(Box::new(reply)).await;
        }
        (Message::Request(request), Some(record)) => spawn_request(shared, tx, record, request),
        (Message::Notification(note), Some(record)) => shared.notification(&record, &note).await,
        (Message::Response(response), Some(record)) => {
            shared.pending.answer(record.id(), response);
        }
        (Message::Notification(_) | Message::Response(_), _) => {}
    }
}

fn spawn_request(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Box<Message>>,
    record: SessionRecord,
    request: session_core::wire::Request,
) {
    let (shared, tx) = (shared.clone(), tx.clone());
    tokio::spawn(async move {
        let outbox = Outbox(tx.clone());
        if let Some(response) = shared.clone().request(record, request, outbox).await {
            let _ = tx.send(Box::new(Message::Response(response))).await;
        }
    });
}
