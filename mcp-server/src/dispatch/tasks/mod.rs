//! The tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28 only):
//! a `tools/call` answered with a durable task that runs in the background,
//! and `tasks/get`, `tasks/update`, `tasks/cancel` on it.
//!
//! ```text
//!  tools/call (declares the extension, the tool allows tasks)
//!    │ the handler is polled once, in the request:
//!    ├─ ready ───────────────► its answer (a result, an error, input_required)
//!    └─ waiting ─► lease, then Tasks::create_with_id (durable) ─► CreateTaskResult
//!                      └─► the handler runs on, in a worker:
//!                          result → complete, JSON-RPC error → fail,
//!                          RequestContext::input → input_required, then
//!                          the answers of tasks/update (take_responses)
//! ```
//!
//! Everything a client can observe goes through the task store: status,
//! input requests, answers, result, error, cancellation. What stays in the
//! process is plumbing: the worker, its cancellation token, and a wake-up
//! for answers that arrive here. A running task's lease, and what happens
//! when its worker is lost, are in [`lease`].
//!
//! # Work that outlives its worker
//!
//! A running task holds a lease: a second record in the task store,
//! `lease_<the task id's hex>` (never a task id, so `Tasks::parse` refuses
//! it and no client can name it), with an idle timeout of
//! [`ServerConfig::task_lease`](crate::ServerConfig::task_lease). It keeps
//! what a re-run needs (the task, the tool, its arguments, the client's
//! capabilities; the principal is the record's owner) and a random
//! `holder` naming this run. It is written before the task itself (whose id
//! is minted first, [`Tasks::mint_id`]): a process that dies between the
//! two leaves a lease that lapses onto no task, which the expiry hook drops,
//! never a task `working` until its TTL with no lease to speak for it. The
//! worker renews it (a touch) every third of
//! the lease and deletes it when it ends, after the task's end is written.
//! A worker that cannot renew it (it lapsed, or another run holds it)
//! stops.
//!
//! When the process dies, the lease lapses; the task store's sweep (every
//! third of the lease, on every replica) removes it and runs the expiry
//! hook exactly once across replicas ([`LeaseHook`]): on that replica the
//! task, unless it is terminal already, is failed with -32603 ("the task's
//! worker was lost"), or, for a tool declared
//! [`rerun_safe`](crate::McpServerBuilder::rerun_safe), run again from the
//! start under a new lease. Should that replica die before it writes the
//! task's end, the next `tasks/get` anywhere finds the task without a lease
//! and gives it one that nobody renews ([`TaskRuntime::watch`]), so the task
//! fails within a lease rather than reading `working` until its TTL.
//!
//! A `tasks/cancel` answered on any replica reaches the worker through the
//! change feed every replica follows ([`TaskRuntime::heard`]), and through
//! the worker's own look at its task every `task_poll_interval`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt as _;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use session_core::wire::RequestId;
use session_core::wire::{CallToolResult, ErrorObject, code, to_raw};
use session_core::{
    EventStore, NewSession, SessionHook, SessionId, SessionRecord, SessionState, TaskError,
    TaskStatus, TaskView, Tasks,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::listen::{Change, Listeners};
use super::modern::Cache;
use super::{Dispatcher, SERVER_INFO_KEY};
use crate::RequestContext;
use crate::context::{ContextParts, INPUT_REQUIRED, ModernParts, Outbox};
use crate::error::Rejection;
use crate::registry::BoxFuture;

mod lease;

pub(crate) use lease::LeaseHook;
use lease::{Lease, rerun_spec};

/// The extension's identifier.
pub(crate) const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Whether per-request client capabilities declare the extension.
pub(crate) fn declares_tasks(capabilities: &Value) -> bool {
    capabilities
        .get("extensions")
        .and_then(|extensions| extensions.get(TASKS_EXTENSION))
        .is_some_and(|declared| !declared.is_null())
}

/// -32021 naming the extension.
pub(crate) fn missing_tasks_capability(why: &str) -> ErrorObject {
    ErrorObject::new(
        code::MISSING_CLIENT_CAPABILITY,
        format!("Missing required client capability: {why} needs the {TASKS_EXTENSION} extension"),
    )
    .with_data(json!({"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}))
}

/// The JSON-RPC error for a task that cannot be named: unknown, expired,
/// malformed, another principal's. All read alike.
fn not_found() -> ErrorObject {
    ErrorObject::new(
        code::INVALID_PARAMS,
        "Failed to retrieve task: Task not found",
    )
}

/// The JSON-RPC error for a failure of the task store or its rules.
fn store_error(error: &session_core::Error) -> ErrorObject {
    use session_core::Error as E;
    match error {
        e if e.is_unavailable() => Rejection::store_unavailable("task", e).error_object(),
        E::NotFound | E::Expired | E::Closed | E::Corrupt { .. } | E::InvalidId(_) => not_found(),
        E::LimitReached { .. } => ErrorObject::new(
            code::INTERNAL_ERROR,
            "Internal error: too many tasks are live; retry later",
        ),
        other => ErrorObject::new(code::INTERNAL_ERROR, format!("task store: {other}")),
    }
}

fn task_error(error: &TaskError) -> ErrorObject {
    match error {
        TaskError::Record(e) => store_error(e),
        other => ErrorObject::new(code::INTERNAL_ERROR, format!("Internal error: {other}")),
    }
}

/// The error a task's work gets when the task ended under it (cancelled).
fn ended() -> ErrorObject {
    ErrorObject::new(code::REQUEST_CANCELLED, "the task was cancelled")
}

/// What the tasks of this process share.
pub(crate) struct TaskRuntime {
    pub(crate) tasks: Arc<Tasks>,
    listeners: Arc<Listeners>,
    events: Arc<dyn EventStore>,
    poll: Duration,
    lease: Duration,
    /// Workers running here, by task id.
    running: Mutex<foldhash::HashMap<String, Worker>>,
    /// The server's metrics, unless they are off.
    metrics: Option<Arc<crate::Metrics>>,
}

impl std::fmt::Debug for TaskRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRuntime")
            .field("running", &self.running.lock().len())
            .finish_non_exhaustive()
    }
}

struct Worker {
    cancel: CancellationToken,
    wake: Arc<Notify>,
}

impl TaskRuntime {
    pub(crate) fn new(
        tasks: Arc<Tasks>,
        listeners: Arc<Listeners>,
        events: Arc<dyn EventStore>,
        poll: Duration,
        lease: Duration,
        metrics: Option<Arc<crate::Metrics>>,
    ) -> Self {
        TaskRuntime {
            tasks,
            listeners,
            events,
            poll,
            lease,
            running: Mutex::default(),
            metrics,
        }
    }

    /// Counts the status `view` reached, if metrics are on.
    fn count(&self, view: &TaskView) {
        if let Some(metrics) = &self.metrics {
            metrics.task_status(view.status().as_str());
        }
    }

    /// How many workers run here.
    pub(crate) fn running(&self) -> usize {
        self.running.lock().len()
    }

    /// A change heard from another replica: a task that ended there (a
    /// `tasks/cancel` answered by it) stops its worker here at once.
    pub(crate) fn heard(&self, change: &Change) {
        let Change::Task { task, .. } = change else {
            return;
        };
        let ended = task
            .get("status")
            .and_then(Value::as_str)
            .and_then(TaskStatus::parse)
            .is_some_and(TaskStatus::is_terminal);
        let Some(id) = task.get("taskId").and_then(Value::as_str) else {
            return;
        };
        if ended && let Some(worker) = self.running.lock().get(id) {
            tracing::debug!(task = %id, "the task ended on another replica: stopping its worker");
            worker.cancel.cancel();
        }
    }

    /// The worker's periodic look at its task in the store: a task that
    /// ended meanwhile (cancelled on a replica whose announcement did not
    /// reach us) or is gone stops the work.
    async fn check(&self, id: &str, link: &TaskLink) {
        match self.tasks.get(id, link.principal.as_deref()).await {
            Ok(view) if view.status().is_terminal() => link.cancel.cancel(),
            Ok(_) => {}
            Err(e) if e.is_gone() => link.cancel.cancel(),
            // The store is down: not a verdict; look again next time.
            Err(e) => tracing::debug!(task = %id, "cannot read a running task: {e}"),
        }
    }

    /// Tells listeners (here and on other replicas) the task changed.
    async fn announce(&self, view: &TaskView) {
        let change = Change::Task {
            owner: view.owner().map(str::to_string),
            task: view.to_wire(),
        };
        self.listeners.announce(&self.events, change).await;
    }

    /// Runs `work` for task `id` to its end, renewing `lease` meanwhile.
    fn spawn(
        self: &Arc<Self>,
        id: String,
        link: Arc<TaskLink>,
        lease: Lease,
        work: impl Future<Output = std::thread::Result<Result<CallToolResult, ErrorObject>>>
        + Send
        + 'static,
    ) {
        self.running.lock().insert(
            id.clone(),
            Worker {
                cancel: link.cancel.clone(),
                wake: link.wake.clone(),
            },
        );
        let runtime = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut work = std::pin::pin!(work);
            let period = runtime.poll.max(Duration::from_millis(10));
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let every = runtime.lease / 3;
            let mut renewal = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break Some(outcome),
                    () = link.cancel.cancelled() => break None,
                    _ = ticker.tick() => runtime.check(&id, &link).await,
                    _ = renewal.tick() => {
                        if !runtime.renew(&lease).await {
                            // Lapsed: another replica failed the task or
                            // runs it again.
                            tracing::warn!(task = %id, "lost the task's lease: stopping its worker");
                            link.cancel.cancel();
                        }
                    }
                }
            };
            let principal = link.principal.as_deref();
            if let Some(outcome) = outcome {
                let outcome = match outcome {
                    Ok(Ok(result)) => Ok(result),
                    Ok(Err(error)) if error.code == INPUT_REQUIRED => Err(ErrorObject::new(
                        code::INTERNAL_ERROR,
                        "Internal error: the tool asked for input before the task, after it began",
                    )),
                    Ok(Err(error)) => Err(error),
                    Err(_) => {
                        tracing::error!(task = %id, "a task's handler panicked");
                        Err(ErrorObject::new(
                            code::INTERNAL_ERROR,
                            "Internal error: the handler failed",
                        ))
                    }
                };
                runtime.finish(&id, principal, outcome).await;
            }
            // After the end is written: a process that dies in between
            // leaves a lease that lapses onto a terminal task (no change).
            runtime.release(&lease).await;
            runtime.running.lock().remove(&id);
        }));
        // (In the request's span, when request spans are on: the task's
        // log lines carry its trace context.)
    }

    /// Records the end of the work: a result (tool errors included) as
    /// `completed`, a JSON-RPC error as `failed`. A task that ended first
    /// (cancelled) is left as it is. A store that fails is retried for a
    /// while.
    async fn finish(
        &self,
        id: &str,
        principal: Option<&str>,
        outcome: Result<CallToolResult, ErrorObject>,
    ) {
        let mut outcome = outcome.map(|result| match serde_json::to_value(result) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        });
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=8 {
            let written = match &outcome {
                Ok(result) => self.tasks.complete(id, principal, result.clone()).await,
                Err(error) => self.tasks.fail(id, principal, error.clone()).await,
            };
            match written {
                Ok(view) => {
                    self.count(&view);
                    return self.announce(&view).await;
                }
                // Cancelled (or expired) meanwhile: nothing to record.
                Err(TaskError::Terminal { .. }) => return,
                Err(TaskError::Record(e)) if e.is_gone() => return,
                Err(TaskError::Record(session_core::Error::StateTooLarge { .. })) => {
                    outcome = Err(ErrorObject::new(
                        code::INTERNAL_ERROR,
                        "Internal error: the task's result is larger than the server keeps",
                    ));
                }
                Err(e) => {
                    tracing::warn!(task = %id, attempt, "cannot record the end of a task: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A task run's tie to its task, held by its [`RequestContext`].
pub(crate) struct TaskLink {
    runtime: Arc<TaskRuntime>,
    principal: Option<String>,
    /// Set when the work went on as a task (it waited on its first poll).
    detached: AtomicBool,
    /// The task's id, once it is created.
    id: watch::Sender<Option<String>>,
    /// Answers received over the task's life, by key.
    answers: Mutex<Map<String, Value>>,
    /// Woken when answers for the task arrive on this process.
    wake: Arc<Notify>,
    /// Cancels the work.
    pub(crate) cancel: CancellationToken,
}

impl std::fmt::Debug for TaskLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLink")
            .field("id", &*self.id.borrow())
            .finish_non_exhaustive()
    }
}

impl TaskLink {
    fn new(runtime: Arc<TaskRuntime>, principal: Option<String>) -> Self {
        TaskLink {
            runtime,
            principal,
            detached: AtomicBool::new(false),
            id: watch::channel(None).0,
            answers: Mutex::default(),
            wake: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
        }
    }

    /// Whether the work goes on as a task already (questions asked before
    /// the task are asked as tasks questions from then on).
    pub(crate) fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    async fn task_id(&self) -> Result<String, ErrorObject> {
        let mut rx = self.id.subscribe();
        let id = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ended())?
            .clone();
        Ok(id.unwrap_or_default())
    }

    /// Sets the task's status message; whether it was written.
    pub(crate) async fn status_message(&self, message: Option<String>) -> bool {
        let Some(id) = self.id.borrow().clone() else {
            return false;
        };
        match self
            .runtime
            .tasks
            .set_status_message(&id, self.principal.as_deref(), message)
            .await
        {
            Ok(view) => {
                self.runtime.announce(&view).await;
                true
            }
            Err(TaskError::Terminal { .. }) => {
                self.cancel.cancel();
                false
            }
            Err(_) => false,
        }
    }

    /// Asks the client `requests` (key → `inputRequests` entry) through the
    /// task: `input_required` until every one is answered by `tasks/update`.
    /// Returns the answers by key. Keys answered earlier in the task's life
    /// are answered from memory, never asked again.
    pub(crate) async fn ask(
        &self,
        requests: Vec<(String, Value)>,
    ) -> Result<Map<String, Value>, ErrorObject> {
        let id = self.task_id().await?;
        let principal = self.principal.as_deref();
        let tasks = &self.runtime.tasks;
        let unanswered: Map<String, Value> = {
            let answers = self.answers.lock();
            requests
                .iter()
                .filter(|(key, _)| !answers.contains_key(key))
                .cloned()
                .collect()
        };
        if !unanswered.is_empty() {
            match tasks.set_input_required(&id, principal, unanswered).await {
                Ok(view) => {
                    self.runtime.count(&view);
                    self.runtime.announce(&view).await;
                }
                Err(TaskError::Terminal { .. }) => {
                    self.cancel.cancel();
                    return Err(ended());
                }
                Err(e) => return Err(task_error(&e)),
            }
        }
        loop {
            {
                let answers = self.answers.lock();
                if requests.iter().all(|(key, _)| answers.contains_key(key)) {
                    return Ok(requests
                        .iter()
                        .filter_map(|(key, _)| Some((key.clone(), answers.get(key)?.clone())))
                        .collect());
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.runtime.poll) => {}
                () = self.cancel.cancelled() => return Err(ended()),
            }
            match tasks.take_responses(&id, principal).await {
                Ok((view, _)) if view.status().is_terminal() => {
                    self.cancel.cancel();
                    return Err(ended());
                }
                Ok((_, taken)) => self.answers.lock().extend(taken),
                Err(e) if e.is_gone() => {
                    self.cancel.cancel();
                    return Err(ended());
                }
                // The store is down: try again next round.
                Err(e) => tracing::debug!(task = %id, "cannot read a task's answers: {e}"),
            }
        }
    }
}

/// `params` of `tasks/get`, `tasks/update`, `tasks/cancel`.
#[derive(Debug, Deserialize)]
struct TaskParams {
    #[serde(rename = "taskId")]
    task_id: String,
    #[serde(rename = "inputResponses", default)]
    input_responses: Option<Value>,
}

impl Dispatcher {
    /// A `tools/call` that may become a task: `tool` is polled once; if it
    /// must wait, a task is created (durably) and answered, and the work
    /// goes on in the background.
    pub(super) async fn call_as_task(
        &self,
        ctx: &RequestContext,
        name: &str,
        tool: &crate::registry::ToolFn,
        arguments: Option<Box<RawValue>>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let runtime = self.task_runtime.clone();
        // Kept in the lease, for a re-run.
        let arguments_value = arguments
            .as_deref()
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            .unwrap_or(Value::Null);
        let link = Arc::new(TaskLink::new(
            runtime.clone(),
            ctx.principal().map(str::to_string),
        ));
        let task_ctx = ctx.for_task(link.clone());
        let work: BoxFuture<CallToolResult> = tool(task_ctx.clone(), arguments);
        let mut work = std::panic::AssertUnwindSafe(work).catch_unwind();
        let first = std::future::poll_fn(|cx| Poll::Ready(work.poll_unpin(cx))).await;
        match first {
            Poll::Ready(Ok(Err(error))) if error.code == INPUT_REQUIRED => {
                // Asked before the task: a multi round-trip answer to this
                // request.
                ctx.absorb_asked(&task_ctx);
                return Err(error);
            }
            // Done at once: the result itself (a task would add nothing).
            Poll::Ready(Ok(result)) => return Ok(self.finish(ctx, &result?, Cache::None)),
            Poll::Ready(Err(_)) => {
                tracing::error!("the handler panicked");
                return Err(ErrorObject::new(
                    code::INTERNAL_ERROR,
                    "Internal error: the handler failed",
                ));
            }
            Poll::Pending => {}
        }
        link.detached.store(true, Ordering::Release);
        // The lease first, then the task: a process that dies in between
        // leaves a lease that lapses onto no task (nothing to fail), never a
        // task `working` with no lease to tell of its lost worker.
        let task_id = Tasks::mint_id();
        let id = task_id.to_string();
        let principal = ctx.principal();
        let spec = rerun_spec(&id, name, arguments_value, ctx.client_capabilities());
        let lease = runtime
            .take_lease(&id, principal, runtime.tasks.default_ttl(), spec)
            .await
            .map_err(|e| store_error(&e))?;
        let view = match runtime
            .tasks
            .create_with_id(
                &task_id,
                principal,
                None,
                Some(self.config.task_poll_interval),
            )
            .await
        {
            Ok(view) => view,
            Err(e) => {
                // No task, no run: the lease goes too.
                runtime.release(&lease).await;
                return Err(store_error(&e));
            }
        };
        runtime.count(&view);
        link.id.send_replace(Some(id.clone()));
        runtime.spawn(id, link, lease, work);
        let mut created = view.to_wire();
        created["resultType"] = json!("task");
        created["_meta"] = json!({ SERVER_INFO_KEY: self.info });
        Ok(to_raw(&created))
    }

    /// `tasks/get`, `tasks/update`, `tasks/cancel` (modern era).
    pub(super) async fn task_method(
        &self,
        ctx: &RequestContext,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        if !declares_tasks(&ctx.client_capabilities()) {
            return Err(missing_tasks_capability(method));
        }
        let params: TaskParams = serde_json::from_str(params.map_or("{}", RawValue::get))
            .map_err(|e| ErrorObject::new(code::INVALID_PARAMS, format!("Invalid params: {e}")))?;
        if Tasks::parse(&params.task_id).is_none() {
            return Err(not_found());
        }
        let runtime = &self.task_runtime;
        let tasks = &runtime.tasks;
        let id = params.task_id.as_str();
        let principal = ctx.principal();
        match method {
            "tasks/get" => {
                let view = tasks
                    .get(id, principal)
                    .await
                    .map_err(|e| store_error(&e))?;
                runtime.watch(&view).await;
                Ok(self.finish_value(ctx, &view.to_wire()))
            }
            "tasks/update" => {
                let responses = match params.input_responses {
                    Some(Value::Object(map)) => map,
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        return Err(ErrorObject::new(
                            code::INVALID_PARAMS,
                            "Invalid params: inputResponses must be an object",
                        ));
                    }
                };
                let (view, accepted) = tasks
                    .answer(id, principal, responses)
                    .await
                    .map_err(|e| match e {
                        // The client's answers are too large to keep:
                        // refused, the task unchanged.
                        session_core::Error::StateTooLarge { size, limit } => ErrorObject::new(
                            code::INVALID_PARAMS,
                            format!(
                                "Invalid params: inputResponses would make the task's state \
                                 {size} bytes, over the limit of {limit} bytes; nothing was recorded"
                            ),
                        )
                        .with_data(json!({"size": size, "limit": limit})),
                        e => store_error(&e),
                    })?;
                if !accepted.is_empty() {
                    // Announced before the worker wakes, so that listeners
                    // hear the changes in order.
                    if view.status() == TaskStatus::Working {
                        runtime.count(&view);
                    }
                    runtime.announce(&view).await;
                    if let Some(worker) = runtime.running.lock().get(id) {
                        worker.wake.notify_one();
                    }
                }
                Ok(self.finish_value(ctx, &json!({})))
            }
            "tasks/cancel" => {
                match tasks.cancel(id, principal).await {
                    Ok(view) => {
                        if let Some(worker) = runtime.running.lock().get(id) {
                            worker.cancel.cancel();
                        }
                        runtime.count(&view);
                        runtime.announce(&view).await;
                    }
                    // Ended first: acknowledged all the same.
                    Err(TaskError::Terminal { .. }) => {}
                    Err(e) => return Err(task_error(&e)),
                }
                Ok(self.finish_value(ctx, &json!({})))
            }
            other => Err(super::methods::not_found(other)),
        }
    }
}
