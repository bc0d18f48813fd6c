//! What a handler gets: its session, a progress reporter, a cancellation
//! signal, and a way to send notifications.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foldhash::HashMap;
use parking_lot::Mutex;
use serde_json::Map;
use serde_json::{Value, json};
use session_core::wire::{
    ErrorObject, LoggingLevel, Message, Notification, ProgressParams, Request, RequestId, Response,
    code, to_raw,
};
use session_core::{Handles, SessionId, SessionManager, SessionRecord, SessionState};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::dispatch::TaskLink;
use crate::error::session_error_object;
use crate::input::{INPUT_TIMEOUT, InputRequest};

mod handles;
mod session;

pub use handles::ScopedHandles;
pub use session::SessionHandle;
pub(crate) use session::{current, untouched};

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

/// The context of one request, handed to its handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: ContextParts,
    last_progress: Mutex<Option<f64>>,
}

/// What a request brings in the modern era that a legacy one keeps in its
/// session.
#[derive(Debug, Default)]
pub(crate) struct ModernParts {
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub(crate) capabilities: Value,
    /// The answers the client gave so far (`inputResponses` of this round
    /// and those sealed in `requestState` from earlier rounds), by key.
    pub(crate) inputs: Map<String, Value>,
    /// Input requests raised in this round, by key, in order.
    pub(crate) asked: Mutex<Asked>,
}

/// Input requests raised in one run, by key, as `inputRequests` entries.
pub(crate) type Asked = Vec<(String, Value)>;

/// What [`RequestContext::new`] is built from.
#[derive(Debug)]
pub(crate) struct ContextParts {
    pub(crate) request_id: RequestId,
    pub(crate) session: Option<SessionHandle>,
    pub(crate) progress_token: Option<Value>,
    pub(crate) cancel: CancellationToken,
    pub(crate) outbox: Outbox,
    /// `None`: the client asked for no log messages.
    pub(crate) log_level: Option<LoggingLevel>,
    pub(crate) pending: Arc<Pending>,
    pub(crate) principal: Option<String>,
    pub(crate) handles: Arc<Handles>,
    pub(crate) modern: Option<Box<ModernParts>>,
    /// The task the request runs as, if it may become one.
    pub(crate) task: Option<Arc<TaskLink>>,
}

/// The code of the error [`RequestContext::input`] returns while the client
/// has yet to answer: the dispatcher turns it into an `input_required`
/// result. Never sent on the wire.
pub(crate) const INPUT_REQUIRED: i64 = i64::MIN + 7;

impl RequestContext {
    pub(crate) fn new(parts: ContextParts) -> Self {
        RequestContext {
            inner: Arc::new(Inner {
                parts,
                last_progress: Mutex::new(None),
            }),
        }
    }

    /// Whether the request is served in the modern era (2026-07-28), without
    /// a session.
    pub fn is_modern(&self) -> bool {
        self.inner.parts.modern.is_some()
    }

    /// The authenticated principal the request runs for, if any (a legacy
    /// session's owner).
    pub fn principal(&self) -> Option<&str> {
        self.inner.parts.principal.as_deref()
    }

    /// The principal's handles.
    pub fn handles(&self) -> ScopedHandles<'_> {
        ScopedHandles {
            handles: &self.inner.parts.handles,
            principal: self.inner.parts.principal.as_deref(),
        }
    }

    /// The capabilities the client declared: per request in the modern
    /// era, at `initialize` in a legacy session.
    pub fn client_capabilities(&self) -> Value {
        match (&self.inner.parts.modern, &self.inner.parts.session) {
            (Some(modern), _) => modern.capabilities.clone(),
            (None, Some(session)) => session.record().meta().capabilities_value(),
            (None, None) => Value::Null,
        }
    }

    /// Asks the client for `request` under `key` (unique within the
    /// request) and returns its answer (an `ElicitResult`,
    /// `CreateMessageResult` or `ListRootsResult`).
    ///
    /// In a legacy session the request goes to the client now, on this
    /// request's stream, and the answer is awaited (up to
    /// [`INPUT_TIMEOUT`]). In the modern era the handler ends here the
    /// first time: propagate the error with `?` and the client gets an
    /// `input_required` result; it retries the request with the answer,
    /// and on that run the same call returns it. A handler therefore asks
    /// the same questions under the same keys, in the same order, on every
    /// run. Answers given in earlier rounds are carried (sealed, in
    /// `requestState`) to later ones.
    ///
    /// In a task (see [`TaskSupport`](crate::TaskSupport)) the task goes
    /// `input_required` with the request under `key`, and the call returns
    /// once the client answered with `tasks/update`; a key asked again
    /// later in the task gets the same answer, never a second question.
    ///
    /// # Errors
    ///
    /// Modern: an error the dispatcher turns into `input_required` (return
    /// it); `-32021` when the client did not declare the capability the
    /// request needs. Legacy: the client's error, or
    /// [`code::REQUEST_CANCELLED`] when no answer comes.
    pub async fn input(&self, key: &str, request: InputRequest) -> Result<Value, ErrorObject> {
        let mut answers = self.inputs(vec![(key.to_string(), request)]).await?;
        Ok(answers.pop().unwrap_or(Value::Null))
    }

    /// [`input`](Self::input) for several requests at once: in the modern
    /// era every unanswered one is asked in the same round; in a legacy
    /// session they are asked one after the other. Returns the answers in
    /// the order asked.
    ///
    /// # Errors
    ///
    /// As [`input`](Self::input).
    pub async fn inputs(
        &self,
        requests: Vec<(String, InputRequest)>,
    ) -> Result<Vec<Value>, ErrorObject> {
        self.ask(requests, false).await
    }

    /// [`input`](Self::input), asked before a task is created: when the
    /// request may run as a task (see
    /// [`TaskSupport`](crate::TaskSupport)), the question is asked on the
    /// request itself (`input_required` and a retry, as in any modern
    /// request), and the task begins once it is answered. Call it before
    /// anything that waits. Anywhere else (legacy, modern without a task,
    /// inside a task already begun) it is [`input`](Self::input).
    ///
    /// # Errors
    ///
    /// As [`input`](Self::input).
    pub async fn input_before_task(
        &self,
        key: &str,
        request: InputRequest,
    ) -> Result<Value, ErrorObject> {
        let mut answers = self.ask(vec![(key.to_string(), request)], true).await?;
        Ok(answers.pop().unwrap_or(Value::Null))
    }

    async fn ask(
        &self,
        requests: Vec<(String, InputRequest)>,
        before_task: bool,
    ) -> Result<Vec<Value>, ErrorObject> {
        let Some(modern) = &self.inner.parts.modern else {
            let mut answers = Vec::with_capacity(requests.len());
            for (_, request) in requests {
                answers.push(
                    self.request_client(request.method(), request.params().clone(), INPUT_TIMEOUT)
                        .await?,
                );
            }
            return Ok(answers);
        };
        let missing: Vec<&'static str> = requests
            .iter()
            .filter(|(key, _)| !modern.inputs.contains_key(key))
            .map(|(_, request)| request.capability())
            .filter(|capability| {
                modern
                    .capabilities
                    .get(capability)
                    .is_none_or(Value::is_null)
            })
            .collect();
        if !missing.is_empty() {
            let mut required = Map::new();
            for capability in missing {
                required.insert(capability.into(), json!({}));
            }
            let names: Vec<&String> = required.keys().collect();
            let message = format!(
                "Missing required client capability: this request needs {}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(ErrorObject::new(code::MISSING_CLIENT_CAPABILITY, message)
                .with_data(json!({"requiredCapabilities": required})));
        }
        if let Some(task) = &self.inner.parts.task
            && (!before_task || task.is_detached())
        {
            return self.ask_task(task, &modern.inputs, requests).await;
        }
        let mut answers = Vec::with_capacity(requests.len());
        let mut asked = modern.asked.lock();
        for (key, request) in requests {
            match modern.inputs.get(&key) {
                Some(answer) => {
                    request.check_answer(&key, answer)?;
                    answers.push(answer.clone());
                }
                None => {
                    if !asked.iter().any(|(k, _)| *k == key) {
                        asked.push((key, request.to_entry()));
                    }
                }
            }
        }
        if asked.is_empty() {
            Ok(answers)
        } else {
            Err(ErrorObject::new(
                INPUT_REQUIRED,
                "input required: return this error so the client is asked",
            ))
        }
    }

    /// Asks through the task: answers given on the request itself (multi
    /// round-trip) count; the rest are the task's `inputRequests`.
    async fn ask_task(
        &self,
        task: &TaskLink,
        known: &Map<String, Value>,
        requests: Vec<(String, InputRequest)>,
    ) -> Result<Vec<Value>, ErrorObject> {
        let entries: Vec<(String, Value)> = requests
            .iter()
            .filter(|(key, _)| !known.contains_key(key))
            .map(|(key, request)| (key.clone(), request.to_entry()))
            .collect();
        let mut answered = if entries.is_empty() {
            Map::new()
        } else {
            task.ask(entries).await?
        };
        let mut answers = Vec::with_capacity(requests.len());
        for (key, request) in requests {
            let answer = match known.get(&key) {
                Some(answer) => answer.clone(),
                None => answered.remove(&key).unwrap_or(Value::Null),
            };
            request.check_answer(&key, &answer)?;
            answers.push(answer);
        }
        Ok(answers)
    }

    /// A context for the same request run as a task: its own cancellation
    /// (the task's, not the request's), no progress or log messages (tasks
    /// carry none), the request's capabilities and answers.
    pub(crate) fn for_task(&self, task: Arc<TaskLink>) -> RequestContext {
        let parts = &self.inner.parts;
        let (capabilities, inputs) = match &parts.modern {
            Some(modern) => (modern.capabilities.clone(), modern.inputs.clone()),
            None => (Value::Null, Map::new()),
        };
        // A closed outbox: whatever the handler sends goes nowhere.
        let (outbox, _) = mpsc::channel(1);
        RequestContext::new(ContextParts {
            request_id: parts.request_id.clone(),
            session: None,
            progress_token: None,
            cancel: task.cancel.clone(),
            outbox: Outbox(outbox),
            log_level: None,
            pending: parts.pending.clone(),
            principal: parts.principal.clone(),
            handles: parts.handles.clone(),
            modern: Some(Box::new(ModernParts {
                capabilities,
                inputs,
                asked: Mutex::default(),
            })),
            task: Some(task),
        })
    }

    /// Takes over the input requests `other` raised (a task's context that
    /// asked before its task began), for this request's `input_required`.
    pub(crate) fn absorb_asked(&self, other: &RequestContext) {
        let (Some(mine), Some(theirs)) = (&self.inner.parts.modern, &other.inner.parts.modern)
        else {
            return;
        };
        let taken = std::mem::take(&mut *theirs.asked.lock());
        mine.asked.lock().extend(taken);
    }

    /// Whether the request runs as a task (the `io.modelcontextprotocol/tasks`
    /// extension): its result goes to the task, polled by the client.
    pub fn is_task(&self) -> bool {
        self.inner
            .parts
            .task
            .as_ref()
            .is_some_and(|task| task.is_detached())
    }

    /// Sets the status message of the task the request runs as (`None`
    /// removes it), a write to the task store; clients see it on
    /// `tasks/get` and in `notifications/tasks`. Returns whether it was
    /// written: `false` outside a task, or when the task has ended.
    pub async fn set_status_message(&self, message: Option<String>) -> bool {
        match &self.inner.parts.task {
            Some(task) if task.is_detached() => task.status_message(message).await,
            _ => false,
        }
    }

    /// The input requests this run raised and the answers known (modern
    /// era), for the dispatcher to answer `input_required`.
    pub(crate) fn take_asked(&self) -> Option<(Asked, &Map<String, Value>)> {
        let modern = self.inner.parts.modern.as_ref()?;
        let asked = std::mem::take(&mut *modern.asked.lock());
        (!asked.is_empty()).then_some((asked, &modern.inputs))
    }

    /// The id of the request being handled.
    pub fn request_id(&self) -> &RequestId {
        &self.inner.parts.request_id
    }

    /// The session the request runs in. Every request of the legacy
    /// revisions has one; a sessionless (2026-07-28) request would not.
    pub fn session(&self) -> Option<&SessionHandle> {
        self.inner.parts.session.as_ref()
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

    /// Whether the client cancelled the request (`notifications/cancelled`,
    /// or `tasks/cancel` for a task) or the session ended. A cancelled
    /// request's result is not sent.
    pub fn is_cancelled(&self) -> bool {
        self.inner.parts.cancel.is_cancelled()
    }

    /// Resolves when the request is cancelled; race it against slow work.
    pub async fn cancelled(&self) {
        self.inner.parts.cancel.cancelled().await;
    }

    /// Whether the client asked for progress (`_meta.progressToken`).
    pub fn wants_progress(&self) -> bool {
        self.inner.parts.progress_token.is_some()
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
        let Some(token) = &self.inner.parts.progress_token else {
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
        self.inner.parts.outbox.send(message).await
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
        if self.is_modern() {
            return Err(ErrorObject::new(
                code::INTERNAL_ERROR,
                format!(
                    "{method}: a 2026-07-28 request cannot send requests to the client; \
                     ask with RequestContext::input"
                ),
            ));
        }
        let session = self.require_session()?.id().clone();
        let n = self
            .inner
            .parts
            .pending
            .next
            .fetch_add(1, Ordering::Relaxed);
        let id = RequestId::String(Arc::from(format!("server-{n}")));
        let (tx, rx) = oneshot::channel();
        let key = (session, id.clone());
        self.inner
            .parts
            .pending
            .waiting
            .lock()
            .insert(key.clone(), tx);
        let message = Message::Request(Request {
            id,
            method: method.to_string(),
            params: Some(to_raw(&params)),
        });
        let gone = || ErrorObject::new(code::REQUEST_CANCELLED, format!("{method}: no answer"));
        let outcome = if self.inner.parts.outbox.send(message).await {
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
        self.inner.parts.pending.waiting.lock().remove(&key);
        outcome
    }

    /// Sends a log message (`notifications/message`) if `level` is at or
    /// above the level the client asked for: with `logging/setLevel` in a
    /// legacy session (everything by default), with
    /// `io.modelcontextprotocol/logLevel` in the request's `_meta` in the
    /// modern era (nothing when absent).
    pub async fn log(&self, level: LoggingLevel, logger: Option<&str>, data: Value) -> bool {
        if self.inner.parts.log_level.is_none_or(|min| level < min) {
            return false;
        }
        let mut params = json!({"level": level, "data": data});
        if let Some(logger) = logger {
            params["logger"] = json!(logger);
        }
        self.notify("notifications/message", params).await
    }
}
