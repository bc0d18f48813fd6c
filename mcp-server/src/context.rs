//! What a handler gets: its session, a progress reporter, a cancellation
//! signal, and a way to send notifications.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foldhash::HashMap;
use parking_lot::Mutex;
use serde_json::{Value, json};
use session_core::wire::{
    ErrorObject, LoggingLevel, Message, Notification, ProgressParams, Request, RequestId, Response,
    code, to_raw,
};
use session_core::{SessionId, SessionManager, SessionRecord, SessionState};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::session_error_object;

/// Where a client's answer to a server request is delivered.
type Answer = oneshot::Sender<Result<Value, ErrorObject>>;

/// Requests this server sent to clients, waiting for their answers.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<(SessionId, RequestId), Answer>>,
}

impl Pending {
    /// Hands a client's answer to the request waiting for it; whether one was.
    pub(crate) fn answer(&self, session: &SessionId, response: Response) -> bool {
        let Some(id) = response.id else {
            return false;
        };
        let Some(waiter) = self.waiting.lock().remove(&(session.clone(), id)) else {
            return false;
        };
        let outcome = response
            .outcome
            .map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null));
        waiter.send(outcome).is_ok()
    }
}

/// Where the messages a handler sends go: to the transport serving the
/// request (an SSE stream, the GET stream, stdout).
///
/// Messages travel boxed: every request gets a channel, and a channel
/// allocates its first block of slots up front, so small slots keep that
/// allocation small; few handlers send anything.
#[derive(Debug, Clone)]
pub(crate) struct Outbox(pub(crate) mpsc::Sender<Box<Message>>);

impl Outbox {
    async fn send(&self, message: Message) -> bool {
        self.0.send(Box::new(message)).await.is_ok()
    }
}

/// The session a request runs in.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    manager: Arc<SessionManager>,
    record: SessionRecord,
}

impl SessionHandle {
    pub(crate) fn new(manager: Arc<SessionManager>, record: SessionRecord) -> Self {
        SessionHandle { manager, record }
    }

    /// The session's id.
    pub fn id(&self) -> &SessionId {
        self.record.id()
    }

    /// The record as it was when the request started.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The state as stored now (other requests may have changed it since this
    /// one started).
    ///
    /// # Errors
    ///
    /// A JSON-RPC error if the session ended or the store failed.
    pub async fn state(&self) -> Result<SessionState, ErrorObject> {
        let record = self
            .manager
            .get(self.id())
            .await
            .map_err(|e| session_error_object(&e))?;
        Ok(record.state().clone())
    }

    /// Changes the state with `change`, which may run more than once when
    /// other requests write concurrently (see
    /// [`SessionManager::update`]); no update is lost.
    ///
    /// # Errors
    ///
    /// A JSON-RPC error if the session ended, the state grew past its limit,
    /// or the store failed.
    pub async fn update<T, F>(&self, change: F) -> Result<(SessionRecord, T), ErrorObject>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        self.manager
            .update(self.id(), change)
            .await
            .map_err(|e| session_error_object(&e))
    }

    /// Merges `patch` into the state one level deep (`null` removes a key).
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub async fn update_state(&self, patch: SessionState) -> Result<SessionRecord, ErrorObject> {
        self.manager
            .update_state(self.id(), patch)
            .await
            .map_err(|e| session_error_object(&e))
    }
}

/// The context of one request, handed to its handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    request_id: RequestId,
    session: Option<SessionHandle>,
    progress_token: Option<Value>,
    last_progress: Mutex<Option<f64>>,
    cancel: CancellationToken,
    outbox: Outbox,
    log_level: LoggingLevel,
    pending: Arc<Pending>,
}

impl RequestContext {
    pub(crate) fn new(
        request_id: RequestId,
        session: Option<SessionHandle>,
        progress_token: Option<Value>,
        cancel: CancellationToken,
        outbox: Outbox,
        log_level: LoggingLevel,
        pending: Arc<Pending>,
    ) -> Self {
        RequestContext {
            inner: Arc::new(Inner {
                request_id,
                session,
                progress_token,
                last_progress: Mutex::new(None),
                cancel,
                outbox,
                log_level,
                pending,
            }),
        }
    }

    /// The id of the request being handled.
    pub fn request_id(&self) -> &RequestId {
        &self.inner.request_id
    }

    /// The session the request runs in. Every request of the legacy
    /// revisions has one; a sessionless (2026-07-28) request would not.
    pub fn session(&self) -> Option<&SessionHandle> {
        self.inner.session.as_ref()
    }

    /// The session, or the JSON-RPC error to answer a handler that needs one
    /// but runs without.
    ///
    /// # Errors
    ///
    /// [`code::INVALID_REQUEST`](session_core::wire::code::INVALID_REQUEST)
    /// when the request has no session.
    pub fn require_session(&self) -> Result<&SessionHandle, ErrorObject> {
        self.session().ok_or_else(|| {
            ErrorObject::new(
                session_core::wire::code::INVALID_REQUEST,
                "this method needs a session (send initialize first)",
            )
        })
    }

    /// Whether the client cancelled the request (`notifications/cancelled`)
    /// or the session ended. A cancelled request's result is not sent.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when the request is cancelled; race it against slow work.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// Whether the client asked for progress (`_meta.progressToken`).
    pub fn wants_progress(&self) -> bool {
        self.inner.progress_token.is_some()
    }

    /// Reports progress, if the client asked for it. `progress` must increase
    /// from one report to the next; a report that does not is skipped, as the
    /// protocol requires. Returns whether a notification was sent.
    pub async fn progress(
        &self,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) -> bool {
        let Some(token) = &self.inner.progress_token else {
            return false;
        };
        {
            let mut last = self.inner.last_progress.lock();
            if last.is_some_and(|l| progress <= l) || !progress.is_finite() {
                return false;
            }
            *last = Some(progress);
        }
        let params = ProgressParams {
            progress_token: token.clone(),
            progress,
            total,
            message,
        };
        self.notify(
            "notifications/progress",
            serde_json::to_value(params).unwrap_or_default(),
        )
        .await
    }

    /// Sends a notification related to this request. Returns whether the
    /// transport took it (a JSON-only response cannot carry notifications).
    pub async fn notify(&self, method: &str, params: Value) -> bool {
        let message = Message::Notification(Notification {
            method: method.to_string(),
            params: Some(to_raw(&params)),
        });
        self.inner.outbox.send(message).await
    }

    /// Sends a request to the client (`sampling/createMessage`,
    /// `elicitation/create`, `roots/list`, …) on this request's stream and
    /// waits up to `timeout` for its answer.
    ///
    /// The answer must reach the process that asked: with several replicas,
    /// route a session's POSTs to one replica while it has such a request
    /// open, or avoid server requests.
    ///
    /// # Errors
    ///
    /// The client's error, or [`code::REQUEST_CANCELLED`] if this request is
    /// cancelled, the transport is gone, or no answer comes in time.
    pub async fn request_client(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorObject> {
        let session = self.require_session()?.id().clone();
        let n = self.inner.pending.next.fetch_add(1, Ordering::Relaxed);
        let id = RequestId::String(Arc::from(format!("server-{n}")));
        let (tx, rx) = oneshot::channel();
        let key = (session, id.clone());
        self.inner.pending.waiting.lock().insert(key.clone(), tx);
        let message = Message::Request(Request {
            id,
            method: method.to_string(),
            params: Some(to_raw(&params)),
        });
        let gone = || ErrorObject::new(code::REQUEST_CANCELLED, format!("{method}: no answer"));
        let outcome = if self.inner.outbox.send(message).await {
            tokio::select! {
                answer = tokio::time::timeout(timeout, rx) => match answer {
                    Ok(Ok(answer)) => answer,
                    _ => Err(gone()),
                },
                () = self.cancelled() => Err(gone()),
            }
        } else {
            Err(gone())
        };
        self.inner.pending.waiting.lock().remove(&key);
        outcome
    }

    /// Sends a log message (`notifications/message`) if `level` is at or
    /// above the level the client set with `logging/setLevel`.
    pub async fn log(&self, level: LoggingLevel, logger: Option<&str>, data: Value) -> bool {
        if level < self.inner.log_level {
            return false;
        }
        let mut params = json!({"level": level, "data": data});
        if let Some(logger) = logger {
            params["logger"] = json!(logger);
        }
        self.notify("notifications/message", params).await
    }
}
