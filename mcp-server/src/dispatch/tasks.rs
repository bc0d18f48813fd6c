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
//! for answers that arrive here.
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
//! start under a new lease.
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

/// The prefix of lease records in the task store.
const LEASE_PREFIX: &str = "lease_";

/// The lease record of task `task_id`.
fn lease_id(task_id: &str) -> Option<SessionId> {
    let bits = task_id.strip_prefix("task_")?;
    SessionId::parse(&format!("{LEASE_PREFIX}{bits}")).ok()
}

/// The fields of a lease record's state.
mod lease {
    pub(super) const TASK: &str = "task";
    pub(super) const TOOL: &str = "tool";
    pub(super) const ARGUMENTS: &str = "arguments";
    pub(super) const CAPABILITIES: &str = "capabilities";
    pub(super) const HOLDER: &str = "holder";
}

/// The error of a task whose worker was lost.
fn worker_lost() -> ErrorObject {
    ErrorObject::new(
        code::INTERNAL_ERROR,
        "Internal error: the task's worker was lost (its process stopped before the task ended)",
    )
}

/// A lease this process holds for a running task.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    id: SessionId,
    holder: String,
}

/// What a task's run needs to be run again: kept in its lease.
fn rerun_spec(task_id: &str, tool: &str, arguments: Value, capabilities: Value) -> SessionState {
    let mut spec = SessionState::new();
    spec.insert(lease::TASK.into(), task_id.into());
    spec.insert(lease::TOOL.into(), tool.into());
    spec.insert(lease::ARGUMENTS.into(), arguments);
    spec.insert(lease::CAPABILITIES.into(), capabilities);
    spec
}

/// Runs the lapse of a lease (its worker lost) on the replica that swept
/// it: the task store's expiry hook.
#[derive(Debug)]
pub(crate) struct LeaseHook(pub(crate) std::sync::Weak<Dispatcher>);

impl SessionHook for LeaseHook {
    fn on_expired(&self, record: &SessionRecord) {
        if !record.id().as_str().starts_with(LEASE_PREFIX) {
            return;
        }
        let (Some(dispatcher), Ok(runtime)) =
            (self.0.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let record = record.clone();
        runtime.spawn(async move { dispatcher.lapsed(record).await });
    }
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
    ) -> Self {
        TaskRuntime {
            tasks,
            listeners,
            events,
            poll,
            lease,
            running: Mutex::default(),
        }
    }

    /// Takes the lease of task `task_id` (owned by `owner`, living `ttl`;
    /// the task may not exist yet) for a run described by `spec`.
    ///
    /// A renewed lease lives at most one lease past the task's TTL (it
    /// ends with its task, whose worker then stops and gives it up); an
    /// unrenewed one lapses after the lease.
    async fn take_lease(
        &self,
        task_id: &str,
        owner: Option<&str>,
        ttl: Duration,
        mut spec: SessionState,
    ) -> Result<Lease, session_core::Error> {
        let id = lease_id(task_id).ok_or(session_core::Error::NotFound)?;
        let holder = SessionId::generate().as_str().to_string();
        spec.insert(lease::HOLDER.into(), holder.clone().into());
        let mut new = NewSession::new()
            .state(spec)
            .idle_timeout(self.lease)
            .max_lifetime(ttl + self.lease);
        if let Some(owner) = owner {
            new = new.owner(owner);
        }
        self.tasks.manager().create_with(new, || id.clone()).await?;
        Ok(Lease { id, holder })
    }

    /// Renews `lease`; whether it is still this run's (a store that fails
    /// is no verdict).
    async fn renew(&self, lease: &Lease) -> bool {
        match self.tasks.manager().touch(&lease.id).await {
            Ok(record) => holds(&record, lease),
            Err(e) if e.is_gone() => false,
            Err(e) => {
                tracing::warn!(lease = %lease.id, "cannot renew a task's lease: {e}");
                true
            }
        }
    }

    /// Gives `lease` up, if it is still this run's.
    async fn release(&self, lease: &Lease) {
        let manager = self.tasks.manager();
        if let Ok(Some(record)) = manager.store().load(&lease.id).await
            && holds(&record, lease)
            && let Err(e) = manager.close_from(record).await
            && !e.is_gone()
        {
            tracing::debug!(lease = %lease.id, "cannot give a task's lease up: {e}");
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
        tokio::spawn(async move {
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
        });
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
                Ok(view) => return self.announce(&view).await,
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
                Ok(view) => self.runtime.announce(&view).await,
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
/// Whether `record` is the lease `lease` (not another run's).
fn holds(record: &SessionRecord, lease: &Lease) -> bool {
    record.state().get(lease::HOLDER).and_then(Value::as_str) == Some(lease.holder.as_str())
}

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
        link.id.send_replace(Some(id.clone()));
        runtime.spawn(id, link, lease, work);
        let mut created = view.to_wire();
        created["resultType"] = json!("task");
        created["_meta"] = json!({ SERVER_INFO_KEY: self.info });
        Ok(to_raw(&created))
    }

    /// A task's lease lapsed (its worker was lost), and this replica swept
    /// it: the task, unless terminal, is failed, or run again here if its
    /// tool is declared safe to re-run.
    pub(crate) async fn lapsed(self: Arc<Self>, record: SessionRecord) {
        let runtime = &self.task_runtime;
        let state = record.state();
        let Some(id) = state.get(lease::TASK).and_then(Value::as_str) else {
            return;
        };
        let owner = record.owner();
        let view = match runtime.tasks.get(id, owner).await {
            Ok(view) if !view.status().is_terminal() => view,
            Ok(_) => return,
            Err(e) if e.is_gone() || !e.is_unavailable() => return,
            Err(e) => {
                // The lease is gone and the hook runs once: try a little
                // longer before the task is left to its TTL.
                tracing::warn!(task = %id, "a task's worker was lost; the store fails: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match runtime.tasks.get(id, owner).await {
                    Ok(view) if !view.status().is_terminal() => view,
                    _ => return,
                }
            }
        };
        // A worker here that lost its lease stops (it renews no more).
        if let Some(worker) = runtime.running.lock().get(id) {
            worker.cancel.cancel();
        }
        let tool = state.get(lease::TOOL).and_then(Value::as_str);
        if let Some(tool) = tool
            && self.registry.rerun_safe.contains(tool)
        {
            match self.rerun(&view, tool, state.clone()).await {
                Ok(()) => {
                    tracing::info!(task = %id, tool, "a task's worker was lost: running it again");
                    return;
                }
                Err(e) => tracing::warn!(task = %id, "cannot run a lost task again: {e}"),
            }
        }
        tracing::warn!(task = %id, "a task's worker was lost: the task fails");
        if let Ok(view) = runtime.tasks.fail(id, owner, worker_lost()).await {
            runtime.announce(&view).await;
        }
    }

    /// Runs task `view`'s tool again from the start, here, under a new
    /// lease.
    async fn rerun(
        &self,
        view: &TaskView,
        name: &str,
        mut spec: SessionState,
    ) -> Result<(), session_core::Error> {
        let tool = self
            .registry
            .tools
            .get(name)
            .cloned()
            .ok_or(session_core::Error::NotFound)?;
        let runtime = self.task_runtime.clone();
        spec.remove(lease::HOLDER);
        let arguments = spec
            .get(lease::ARGUMENTS)
            .filter(|a| !a.is_null())
            .map(to_raw);
        let capabilities = spec
            .get(lease::CAPABILITIES)
            .cloned()
            .unwrap_or(Value::Null);
        let lease = runtime
            .take_lease(view.id(), view.owner(), view.ttl(), spec)
            .await?;
        let principal = view.owner().map(str::to_string);
        let link = Arc::new(TaskLink::new(runtime.clone(), principal.clone()));
        link.detached.store(true, Ordering::Release);
        link.id.send_replace(Some(view.id().to_string()));
        let (outbox, _) = tokio::sync::mpsc::channel(1);
        let ctx = RequestContext::new(ContextParts {
            request_id: RequestId::from(view.id()),
            session: None,
            progress_token: None,
            cancel: link.cancel.clone(),
            outbox: Outbox(outbox),
            log_level: None,
            pending: self.pending.clone(),
            principal,
            handles: self.handles.clone(),
            modern: Some(Box::new(ModernParts {
                capabilities,
                inputs: Map::new(),
                asked: Mutex::default(),
            })),
            task: Some(link.clone()),
        });
        let work = std::panic::AssertUnwindSafe(tool(ctx, arguments)).catch_unwind();
        runtime.spawn(view.id().to_string(), link, lease, work);
        Ok(())
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
