//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout.
//!
//! Framing only: each line goes to the [`Dispatcher`], and what comes back
//! is written as lines. A legacy client's session (begun by `initialize`)
//! lives until stdin closes; a 2026-07-28 client needs none. Logs go to
//! stderr, never stdout.

use std::sync::Arc;

use session_core::SessionId;
use session_core::wire::{ErrorObject, Message, Response, code};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::dispatch::{Dispatcher, Origin, Outcome, Running, Transport};
use crate::error::{Error, Rejection};
use crate::server::McpServer;

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
        let dispatcher = self.dispatcher.clone();
        let (tx, rx) = mpsc::channel::<Box<Message>>(64);
        let writer = tokio::spawn(write_lines(output, rx));
        let sweeper = self.spawn_sweeper();
        let mut session: Option<SessionId> = None;
        // Modern requests of this connection, cancelled by id.
        let scope = dispatcher.new_scope();
        // Ends what this connection still runs when it closes.
        let closed = tokio_util::sync::CancellationToken::new();
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
            handle_line(
                &dispatcher,
                &tx,
                &mut session,
                scope,
                &closed,
                line.as_bytes(),
            )
            .await;
        };
        closed.cancel();
        if let Some(id) = session {
            dispatcher.end_session_by_id(&id).await;
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

async fn handle_line(
    dispatcher: &Arc<Dispatcher>,
    tx: &mpsc::Sender<Box<Message>>,
    session: &mut Option<SessionId>,
    scope: u64,
    closed: &tokio_util::sync::CancellationToken,
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
    let origin = Origin {
        transport: Transport::Stdio,
        principal: None,
        session: session.as_ref().map(SessionId::as_str),
        protocol_version: None,
        mirrored: None,
        scope: Some(scope),
        acceptable: true,
        traceparent: None,
    };
    let reply = match dispatcher.handle(message, &origin).await {
        Outcome::Accepted | Outcome::Batch(_) => return,
        Outcome::Started(started) => {
            *session = started.session.map(|record| record.id().clone());
            Message::Response(started.response)
        }
        Outcome::Reply(response) => Message::Response(response),
        Outcome::Running(running) => return spawn_request(tx, running, closed.clone()),
        Outcome::Rejected { rejection, id } => {
            let error = match rejection {
                // It is over: a new `initialize` starts another.
                Rejection::SessionNotFound(why) => {
                    *session = None;
                    ErrorObject::new(
                        code::INVALID_REQUEST,
                        format!("The session ended ({why}): send initialize to start a new one"),
                    )
                }
                rejection => rejection.error_object(),
            };
            // A refused notification gets no answer.
            let Some(id) = id else {
                tracing::debug!("a notification was refused: {}", error.message);
                return;
            };
            Message::Response(Response::error(Some(id), error))
        }
    };
    let _ = tx.send(Box::new(reply)).await;
}

/// Runs a request concurrently (so `notifications/cancelled` can stop it),
/// writing what it sends and then its response. A modern request still
/// running when the connection closes is cancelled (a legacy one runs on:
/// its session is closed, which cancels it).
fn spawn_request(
    tx: &mpsc::Sender<Box<Message>>,
    running: Running,
    closed: tokio_util::sync::CancellationToken,
) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let Running {
            mut handling,
            mut messages,
            cancel,
            ..
        } = running;
        let response = loop {
            tokio::select! {
                biased;
                Some(message) = messages.recv() => {
                    let _ = tx.send(message).await;
                }
                response = &mut handling => break response,
                () = closed.cancelled(), if cancel.is_some() => {
                    if let Some(cancel) = &cancel {
                        cancel.cancel();
                    }
                    return;
                }
            }
        };
        while let Ok(message) = messages.try_recv() {
            let _ = tx.send(message).await;
        }
        if let Some(response) = response {
            let _ = tx.send(Box::new(Message::Response(response))).await;
        }
    });
}
