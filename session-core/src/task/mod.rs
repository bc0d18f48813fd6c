//! Durable tasks: the `io.modelcontextprotocol/tasks` extension's state
//! machines, kept like sessions in a store of their own.
//!
//! A task is a [`SessionRecord`] whose state holds the task (its status,
//! message, outstanding input requests, answers, result or error).
//! [`Tasks`] is a [`SessionManager`] over a store of their own (so a task can
//! never be named as a session or a handle, nor they as a task), with the
//! rules of the extension on top:
//!
//! - ids are `task_` and 128 random bits from a CSPRNG, since a task id is a
//!   bearer token for the task's state;
//! - a task lives for its TTL from creation, however busy it is: its record's
//!   [`ExpiryPolicy`](crate::ExpiryPolicy) has `max_lifetime = ttl` and an
//!   idle timeout of the same length, which never comes first, so the
//!   manager's [`sweep`](SessionManager::sweep) removes expired tasks at a
//!   cost in proportion to what expired;
//! - every read and write is made on behalf of a principal, and a task bound
//!   to another principal (like an unknown or expired one) reads as
//!   [`Error::NotFound`];
//! - the status moves only as the extension's state diagram allows
//!   (`working ⇄ input_required`, either of them to a terminal status), and
//!   **a terminal task never changes again** ([`TaskError::Terminal`]);
//! - an input request key is unique over the task's life
//!   ([`TaskError::KeyReused`]); answers are accepted only for keys still
//!   outstanding, and the task goes back to `working` when none is left.
//!
//! Every change is a compare-and-swap on the record's version, retried on
//! conflict with the rule checked again on the version that won, so
//! concurrent writers in any process sharing the store lose nothing and
//! cannot revive a terminal task. A change that the rules refuse, or that
//! changes nothing, writes nothing. Reading a task (a `tasks/get` poll)
//! never writes either.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use session_core::{ManagerConfig, ManualClock, SessionStore, TaskError, TaskStatus, Tasks};
//!
//! // `store`: any store (in `session-store`: `MemoryStore`, `FileStore`,
//! // `RedisStore::with_prefix`), not the sessions' nor the handles'.
//! async fn demo(store: Arc<dyn SessionStore>) -> Result<(), TaskError> {
//! let config = ManagerConfig::default().max_lifetime(Some(Duration::from_secs(3600)));
//! let tasks = Tasks::new(store, Arc::new(ManualClock::default()), config);
//! // Durable when `create` returns: a `tasks/get` from any replica finds it.
//! let task = tasks.create(Some("alice"), None, Some(Duration::from_secs(5))).await?;
//! let id = task.id().to_owned();
//!
//! // The work needs the user's name.
//! let ask = json!({"name": {"method": "elicitation/create", "params": {}}});
//! tasks.set_input_required(&id, Some("alice"), ask.as_object().unwrap().clone()).await?;
//! // `tasks/update` from the client: only outstanding keys are accepted.
//! let answer = json!({"name": {"action": "accept"}, "other": {}});
//! let (view, accepted) = tasks.answer(&id, Some("alice"), answer.as_object().unwrap().clone()).await?;
//! assert_eq!(accepted.len(), 1);
//! assert_eq!(view.status(), TaskStatus::Working);
//!
//! let result = json!({"content": [], "isError": false});
//! let done = tasks.complete(&id, Some("alice"), result.as_object().unwrap().clone()).await?;
//! assert_eq!(done.to_wire()["status"], "completed");
//! // Terminal: nothing changes it again.
//! assert!(matches!(tasks.cancel(&id, Some("alice")).await, Err(TaskError::Terminal { .. })));
//! // Bob cannot see Alice's task, not even that it exists.
//! assert!(tasks.get(&id, Some("bob")).await.is_err());
//! Ok(())
//! }
//! ```
//!
//! # The state of a task record
//!
//! ```text
//! status          "working" | "input_required" | "completed" | "failed" | "cancelled"
//! statusMessage   string, optional
//! lastUpdatedAt   integer, ms since the epoch; absent until the first change
//! pollIntervalMs  integer, optional
//! inputRequests   object key → request: the outstanding ones (input_required only)
//! inputResponses  object key → response: answers accepted and not yet taken
//!                 (non-terminal only)
//! issuedKeys      [string]: every input key ever issued
//! answeredKeys    [string]: every input key ever answered
//! result          object (completed only)
//! error           JSON-RPC error object (failed only)
//! ```
//!
//! `createdAt` is the record's creation time and the TTL its expiry policy's
//! `max_lifetime`; neither is repeated in the state.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wire::ErrorObject;
use crate::{
    Cas, Clock, Error, Handles, ManagerConfig, NewSession, RecordWrite, Result, SessionId,
    SessionManager, SessionRecord, SessionState, SessionStatus, SessionStore,
};

/// The shortest TTL a task is given: a shorter one (zero included) is raised
/// to it, so that a task can be read once it is created.
pub const MIN_TASK_TTL: Duration = Duration::from_secs(1);

/// The prefix of every task id, before `_` and the random part.
const PREFIX: &str = "task";

/// The names of the fields of a task's state.
mod field {
    pub(super) const STATUS: &str = "status";
    pub(super) const STATUS_MESSAGE: &str = "statusMessage";
    pub(super) const LAST_UPDATED_AT: &str = "lastUpdatedAt";
    pub(super) const POLL_INTERVAL_MS: &str = "pollIntervalMs";
    pub(super) const INPUT_REQUESTS: &str = "inputRequests";
    pub(super) const INPUT_RESPONSES: &str = "inputResponses";
    pub(super) const ISSUED_KEYS: &str = "issuedKeys";
    pub(super) const ANSWERED_KEYS: &str = "answeredKeys";
    pub(super) const RESULT: &str = "result";
    pub(super) const ERROR: &str = "error";
}

/// Where a task is in its life, as the extension names it.
///
/// ```text
///  working ◀──────▶ input_required
///     │                   │
///     └──────┬────────────┘
///            ▼
///  completed | failed | cancelled   (terminal: never changes again)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskStatus {
    /// The request is being processed.
    Working,
    /// The server waits for the client to answer the outstanding input
    /// requests.
    InputRequired,
    /// The request completed; the task carries its result. Terminal.
    Completed,
    /// The request failed with a JSON-RPC error; the task carries it.
    /// Terminal.
    Failed,
    /// The request was cancelled. Terminal.
    Cancelled,
}

impl TaskStatus {
    /// Every status.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Working,
        TaskStatus::InputRequired,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether the status admits no further change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The name on the wire and in the store, e.g. `input_required`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Checks that the state diagram has the move from `self` to `to`:
    /// `working → input_required`, `input_required → working`, and either of
    /// them to a terminal status.
    ///
    /// # Errors
    ///
    /// [`TaskError::Terminal`] when `self` is terminal (nothing leaves a
    /// terminal status, not even to the same one), [`TaskError::InvalidTransition`]
    /// for any other move the diagram lacks (`working → working`,
    /// `input_required → input_required`).
    pub fn transition(self, to: TaskStatus) -> Result<TaskStatus, TaskError> {
        use TaskStatus::*;
        match (self, to) {
            (from, _) if from.is_terminal() => Err(TaskError::Terminal { status: from }),
            (Working, InputRequired) | (InputRequired, Working) => Ok(to),
            (Working | InputRequired, to) if to.is_terminal() => Ok(to),
            (from, to) => Err(TaskError::InvalidTransition { from, to }),
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a change to a task was refused.
///
/// The task rules have their own variants; everything the record and its
/// store report ([`Error::NotFound`] for an unknown, expired or foreign task,
/// [`Error::StateTooLarge`], [`Error::Conflict`], [`Error::Backend`], …)
/// comes as [`TaskError::Record`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The record or the store refused: see [`Error`]. A server answers
    /// [`Error::NotFound`] as "unknown task".
    #[error(transparent)]
    Record(#[from] Error),
    /// The task is in a terminal status and never changes again; nothing was
    /// written.
    #[error("the task is {status}, and a terminal task never changes")]
    Terminal {
        /// The task's (terminal) status.
        status: TaskStatus,
    },
    /// The state diagram has no such move; nothing was written.
    #[error("a task cannot go from {from} to {to}")]
    InvalidTransition {
        /// Status now.
        from: TaskStatus,
        /// Status asked for.
        to: TaskStatus,
    },
    /// An input request key already issued for this task: keys are unique
    /// over a task's life. Nothing was written.
    #[error("the input request key {key:?} was already issued for this task")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// `input_required` with no input request: nothing could ever answer it.
    #[error("a task can only wait for input with at least one input request")]
    NoInputRequests,
}

/// Durable, principal-bound tasks in a store of their own.
///
/// Operations that change a task check the rules on the version they write
/// over, inside the compare-and-swap loop (so a change that lost a race is
/// judged again on the version that won), and write nothing when the rules
/// refuse or nothing changes. The manager's state size limit
/// ([`ManagerConfig::max_state_bytes`]) bounds a task's whole state, results
/// and errors included ([`Error::StateTooLarge`]), and its cap on live
/// records ([`ManagerConfig::max_sessions`]) is the cap on live tasks.
#[derive(Debug)]
pub struct Tasks {
    manager: SessionManager,
    default_ttl: Duration,
}

impl Tasks {
    /// Tasks kept in `store` (which must be neither the sessions' store nor
    /// the handles'), reading time from `clock`, under `config`. The default
    /// TTL of a task is the config's `max_lifetime`, or its idle timeout when
    /// it has none (at least [`MIN_TASK_TTL`]).
    pub fn new(store: Arc<dyn SessionStore>, clock: Arc<dyn Clock>, config: ManagerConfig) -> Self {
        let default_ttl = config
            .expiry
            .max_lifetime
            .unwrap_or(config.expiry.idle_timeout)
            .max(MIN_TASK_TTL);
        Tasks {
            manager: SessionManager::new(store, clock, config),
            default_ttl,
        }
    }

    /// The manager underneath: sweeping, counting, hooks (which hear of
    /// tasks removed at the end of their TTL as expired).
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// The TTL of a task created without one.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Reads a task id from outside: `None` unless it is `task_` and 32
    /// lowercase hex digits, the shape [`create`](Self::create) mints.
    pub fn parse(id: &str) -> Option<SessionId> {
        // `Handles::parse` takes the prefix to be what precedes the last `_`.
        if !id.strip_prefix(PREFIX)?.starts_with('_') {
            return None;
        }
        Handles::parse(id)
    }

    /// A fresh id: `task_` and 128 random bits in lowercase hex.
    fn generate() -> SessionId {
        let bits: u128 = rand::random();
        SessionId::parse(&format!("{PREFIX}_{bits:032x}")).expect("a task id is visible ASCII")
    }

    /// Mints a fresh task id (`task_` and 128 random bits, the shape
    /// [`parse`](Self::parse) reads) without creating the task, for a caller
    /// that must write something under the id first (a server's lease on the
    /// task's work) and then [`create_with_id`](Self::create_with_id).
    pub fn mint_id() -> SessionId {
        Self::generate()
    }

    /// Creates a `working` task bound to `principal` (`None`: anyone without
    /// a principal), living `ttl` from now ([`default_ttl`](Self::default_ttl)
    /// if `None`, at least [`MIN_TASK_TTL`]), suggesting clients poll every
    /// `poll_interval`. When it returns the task is in the store: a
    /// [`get`](Self::get) from any process sharing the store finds it.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::create`]: [`Error::LimitReached`] at the cap on
    /// live tasks, [`Error::Backend`].
    pub async fn create(
        &self,
        principal: Option<&str>,
        ttl: Option<Duration>,
        poll_interval: Option<Duration>,
    ) -> Result<TaskView> {
        let new = self.new_task(principal, ttl, poll_interval);
        let record = self.manager.create_with(new, Self::generate).await?;
        TaskView::from_record(record)
    }

    /// [`create`](Self::create) under `id`, minted beforehand by
    /// [`mint_id`](Self::mint_id). It is never replaced by another id: if a
    /// record has it already, nothing is written.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); [`Error::AlreadyExists`] when a record
    /// (a task or anything else) has the id already; [`Error::NotFound`] for
    /// an id that is not a task id (no task can have it), nothing written.
    pub async fn create_with_id(
        &self,
        id: &SessionId,
        principal: Option<&str>,
        ttl: Option<Duration>,
        poll_interval: Option<Duration>,
    ) -> Result<TaskView> {
        let id = Self::parse(id.as_str()).ok_or(Error::NotFound)?;
        let new = self.new_task(principal, ttl, poll_interval);
        let record = self.manager.create_with(new, || id.clone()).await?;
        TaskView::from_record(record)
    }

    /// A new `working` task's record, as [`create`](Self::create) describes.
    fn new_task(
        &self,
        principal: Option<&str>,
        ttl: Option<Duration>,
        poll_interval: Option<Duration>,
    ) -> NewSession {
        let ttl = ttl.unwrap_or(self.default_ttl).max(MIN_TASK_TTL);
        let mut state = SessionState::new();
        state.insert(field::STATUS.into(), TaskStatus::Working.as_str().into());
        if let Some(interval) = poll_interval {
            state.insert(field::POLL_INTERVAL_MS.into(), millis(interval).into());
        }
        // The idle timeout equals the TTL, so the absolute lifetime always
        // comes first: the deadline is `created + ttl` whatever is written.
        let mut new = NewSession::new()
            .state(state)
            .idle_timeout(ttl)
            .max_lifetime(ttl);
        if let Some(principal) = principal {
            new = new.owner(principal);
        }
        new
    }

    /// The task `id` as `principal` may see it. Writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a malformed id, an unknown one, a task bound to
    /// another principal, or one past its TTL; [`Error::Corrupt`] for a
    /// record that is not a task; [`Error::Backend`].
    pub async fn get(&self, id: &str, principal: Option<&str>) -> Result<TaskView> {
        let record = self.load(id, principal).await?;
        TaskView::from_record(record)
    }

    /// `working → input_required`, waiting for the client to answer
    /// `requests` (key → server-to-client request, as `inputRequests` on the
    /// wire).
    ///
    /// # Errors
    ///
    /// [`TaskError::NoInputRequests`] for an empty `requests`;
    /// [`TaskError::KeyReused`] for a key issued before in the task's life;
    /// [`TaskError::InvalidTransition`] when the task already waits for
    /// input; [`TaskError::Terminal`]; [`TaskError::Record`] as
    /// [`get`](Self::get), or with [`Error::StateTooLarge`],
    /// [`Error::Conflict`].
    pub async fn set_input_required(
        &self,
        id: &str,
        principal: Option<&str>,
        requests: Map<String, Value>,
    ) -> Result<TaskView, TaskError> {
        self.change(id, principal, |task, state| {
            task.status().transition(TaskStatus::InputRequired)?;
            if requests.is_empty() {
                return Err(TaskError::NoInputRequests);
            }
            let issued: BTreeSet<&str> = task.issued_keys().collect();
            if let Some(key) = requests.keys().find(|k| issued.contains(k.as_str())) {
                return Err(TaskError::KeyReused { key: key.clone() });
            }
            let state = state.edit();
            set_status(state, TaskStatus::InputRequired);
            push_keys(state, field::ISSUED_KEYS, requests.keys());
            state.insert(
                field::INPUT_REQUESTS.into(),
                Value::Object(requests.clone()),
            );
            Ok(())
        })
        .await
        .map(|(view, ())| view)
    }

    /// Records the client's `responses` (a `tasks/update`'s
    /// `inputResponses`) for the keys still outstanding, ignoring the others
    /// (never issued, already answered, or a task not waiting for input, a
    /// terminal one included). When no key is left outstanding the task goes
    /// back to `working`. Returns the task and the responses accepted; when
    /// none is, nothing is written.
    ///
    /// The answers stay in the task, for the work to read
    /// ([`TaskView::input_responses`]) and take ([`take_responses`](Self::take_responses)).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::StateTooLarge`] or
    /// [`Error::Conflict`].
    pub async fn answer(
        &self,
        id: &str,
        principal: Option<&str>,
        responses: Map<String, Value>,
    ) -> Result<(TaskView, Map<String, Value>)> {
        self.change(id, principal, |task, state| {
            let (TaskStatus::InputRequired, Some(outstanding)) =
                (task.status(), task.input_requests())
            else {
                return Ok(Map::new());
            };
            let accepted: Map<String, Value> = responses
                .iter()
                .filter(|(key, _)| outstanding.contains_key(*key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            if accepted.is_empty() {
                return Ok(accepted);
            }
            let left: Map<String, Value> = outstanding
                .iter()
                .filter(|(key, _)| !accepted.contains_key(*key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let mut answers = task.input_responses().cloned().unwrap_or_default();
            answers.extend(accepted.clone());
            let state = state.edit();
            push_keys(state, field::ANSWERED_KEYS, accepted.keys());
            state.insert(field::INPUT_RESPONSES.into(), Value::Object(answers));
            if left.is_empty() {
                state.remove(field::INPUT_REQUESTS);
                set_status(state, TaskStatus::Working);
            } else {
                state.insert(field::INPUT_REQUESTS.into(), Value::Object(left));
            }
            Ok(accepted)
        })
        .await
    }

    /// Removes the answers recorded by [`answer`](Self::answer) and returns
    /// them with the task, for the work to go on with. Their keys stay
    /// answered. With no answer recorded, nothing is written.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::Conflict`].
    pub async fn take_responses(
        &self,
        id: &str,
        principal: Option<&str>,
    ) -> Result<(TaskView, Map<String, Value>)> {
        self.change(id, principal, |task, state| match task.input_responses() {
            Some(answers) if !answers.is_empty() && !task.status().is_terminal() => {
                let answers = answers.clone();
                state.edit().remove(field::INPUT_RESPONSES);
                Ok(answers)
            }
            _ => Ok(Map::new()),
        })
        .await
    }

    /// `working | input_required → completed` with `result` (the request's
    /// result, e.g. a `CallToolResult`, `isError: true` included). Outstanding
    /// input requests, unanswered and untaken answers, and the status message
    /// (which described the work) are dropped.
    ///
    /// # Errors
    ///
    /// [`TaskError::Terminal`] when the task already ended (cancelled, say);
    /// [`TaskError::Record`] as [`get`](Self::get), or with
    /// [`Error::StateTooLarge`] for a result too large for the limit (the
    /// task is unchanged), [`Error::Conflict`].
    pub async fn complete(
        &self,
        id: &str,
        principal: Option<&str>,
        result: Map<String, Value>,
    ) -> Result<TaskView, TaskError> {
        self.end(id, principal, TaskStatus::Completed, |state| {
            state.insert(field::RESULT.into(), Value::Object(result.clone()));
        })
        .await
    }

    /// `working | input_required → failed` with the JSON-RPC `error` the
    /// request failed with; the status message becomes the error's message.
    /// Outstanding input requests and answers are dropped. (A tool result
    /// with `isError: true` is a [`complete`](Self::complete), not this.)
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub async fn fail(
        &self,
        id: &str,
        principal: Option<&str>,
        error: ErrorObject,
    ) -> Result<TaskView, TaskError> {
        let message = error.message.clone();
        let mut object = Map::new();
        object.insert("code".into(), error.code.into());
        object.insert("message".into(), error.message.into());
        if let Some(data) = error.data {
            object.insert("data".into(), data);
        }
        let error = object;
        self.end(id, principal, TaskStatus::Failed, |state| {
            state.insert(field::ERROR.into(), Value::Object(error.clone()));
            state.insert(field::STATUS_MESSAGE.into(), message.clone().into());
        })
        .await
    }

    /// `working | input_required → cancelled`. Outstanding input requests,
    /// answers and the status message are dropped. A task that already ended
    /// is left as it is and reported with [`TaskError::Terminal`] (a server
    /// still acknowledges the `tasks/cancel`: the work finished first).
    ///
    /// # Errors
    ///
    /// [`TaskError::Terminal`]; [`TaskError::Record`] as [`get`](Self::get),
    /// or with [`Error::Conflict`].
    pub async fn cancel(&self, id: &str, principal: Option<&str>) -> Result<TaskView, TaskError> {
        self.end(id, principal, TaskStatus::Cancelled, |_| {}).await
    }

    /// Sets the task's status message (`None` removes it). Setting the
    /// message it already has writes nothing.
    ///
    /// # Errors
    ///
    /// [`TaskError::Terminal`]; [`TaskError::Record`] as [`get`](Self::get),
    /// or with [`Error::StateTooLarge`], [`Error::Conflict`].
    pub async fn set_status_message(
        &self,
        id: &str,
        principal: Option<&str>,
        message: Option<String>,
    ) -> Result<TaskView, TaskError> {
        self.change(id, principal, |task, state| {
            if task.status().is_terminal() {
                return Err(TaskError::Terminal {
                    status: task.status(),
                });
            }
            if task.status_message() == message.as_deref() {
                return Ok(());
            }
            let state = state.edit();
            match &message {
                Some(message) => state.insert(field::STATUS_MESSAGE.into(), message.clone().into()),
                None => state.remove(field::STATUS_MESSAGE),
            };
            Ok(())
        })
        .await
        .map(|(view, ())| view)
    }

    /// Removes tasks past their TTL, at a cost in proportion to what expired;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store.
    pub async fn sweep(&self) -> Result<usize> {
        self.manager.sweep().await
    }

    /// Moves a task to the terminal status `to`, dropping what only a live
    /// task has, then lets `payload` add the terminal one.
    async fn end(
        &self,
        id: &str,
        principal: Option<&str>,
        to: TaskStatus,
        payload: impl Fn(&mut SessionState) + Send + Sync,
    ) -> Result<TaskView, TaskError> {
        self.change(id, principal, |task, state| {
            task.status().transition(to)?;
            let state = state.edit();
            set_status(state, to);
            state.remove(field::INPUT_REQUESTS);
            state.remove(field::INPUT_RESPONSES);
            state.remove(field::STATUS_MESSAGE);
            payload(state);
            Ok(())
        })
        .await
        .map(|(view, ())| view)
    }

    /// Loads a live task `principal` may see, without writing.
    async fn load(&self, id: &str, principal: Option<&str>) -> Result<SessionRecord> {
        let id = Self::parse(id).ok_or(Error::NotFound)?;
        let record = self
            .manager
            .store()
            .load(&id)
            .await?
            .ok_or(Error::NotFound)?;
        // A task past its TTL reads as unknown at once; a sweep removes it.
        if record.owner() != principal
            || record.status_at(self.manager.clock().now()) != SessionStatus::Active
        {
            return Err(Error::NotFound);
        }
        Ok(record)
    }

    /// The compare-and-swap loop behind every change: `rule` judges the
    /// current version and edits the next one through the [`Draft`]; if it
    /// refuses or edits nothing, nothing is written. On a conflict it runs
    /// again on the version that won, so it must compute only from what it is
    /// given.
    ///
    /// This is [`SessionManager::update_as`]'s loop (the owner check, the
    /// write through [`SessionRecord::begin_write`], the state size limit,
    /// the retries) with one difference it needs: a rule can decline to
    /// write. `update_as` writes a new version whatever its closure does.
    /// Unlike it, this does not hold the manager's private gate, so
    /// [`SessionManager::clear_all`] on the tasks' manager does not wait for
    /// a task change in flight.
    async fn change<T, E>(
        &self,
        id: &str,
        principal: Option<&str>,
        mut rule: impl FnMut(&TaskView, &mut Draft) -> Result<T, E> + Send,
    ) -> Result<(TaskView, T), E>
    where
        E: From<Error>,
    {
        let config = self.manager.config();
        let mut current = self.load(id, principal).await?;
        let mut expected = current.version();
        for _ in 0..config.max_write_attempts.max(1) {
            // The view owns the version it judges: no copy of the record.
            let task = TaskView::from_record(current)?;
            let now = self.manager.clock().now();
            // Past its deadline (or ended by someone else): an unknown task.
            let write = task
                .record()
                .begin_write(now)
                .map_err(|_| Error::NotFound)?;
            let mut draft = Draft { write };
            let out = rule(&task, &mut draft)?;
            let mut write = draft.write;
            if !write.state_written() {
                return Ok((task, out));
            }
            let updated = now.max(task.last_updated_at());
            write
                .state_mut()
                .insert(field::LAST_UPDATED_AT.into(), updated.as_millis().into());
            write.retain_for(config.retention);
            let next = write.finish();
            let size = next.state_size();
            if size > config.max_state_bytes {
                return Err(Error::StateTooLarge {
                    size,
                    limit: config.max_state_bytes,
                }
                .into());
            }
            expected = task.version();
            match self.manager.store().compare_and_swap(&next, expected).await {
                Ok(Cas::Swapped) => return Ok((TaskView::from_record(next)?, out)),
                Ok(Cas::Conflict {
                    current: Some(latest),
                }) => current = latest,
                // Gone, or ended as a record (expired by a sweep meanwhile).
                Ok(Cas::Conflict { current: None }) | Err(Error::Expired | Error::Closed) => {
                    return Err(Error::NotFound.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict {
            expected,
            found: Some(current.version()),
        }
        .into())
    }
}

/// The next version of a task, as a rule edits it: untouched until
/// [`edit`](Self::edit) is called, and then written.
struct Draft {
    write: RecordWrite,
}

impl Draft {
    /// The state, for changing it: the change will be written.
    fn edit(&mut self) -> &mut SessionState {
        self.write.state_mut()
    }
}

fn set_status(state: &mut SessionState, status: TaskStatus) {
    state.insert(field::STATUS.into(), status.as_str().into());
}

/// Appends `keys` to the array of strings `name`.
fn push_keys<'a>(state: &mut SessionState, name: &str, keys: impl Iterator<Item = &'a String>) {
    let list = state
        .entry(name)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Value::Array(list) = list {
        list.extend(keys.map(|key| Value::String(key.clone())));
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

mod view;

pub use view::TaskView;

#[cfg(test)]
mod tests;
