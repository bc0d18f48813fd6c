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
    SessionManager, SessionRecord, SessionState, SessionStatus, SessionStore, Timestamp,
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
            let task = TaskView::from_record(current.clone())?;
            let now = self.manager.clock().now();
            // Past its deadline (or ended by someone else): an unknown task.
            let write = current.begin_write(now).map_err(|_| Error::NotFound)?;
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
            expected = current.version();
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

/// A task as a store holds it: read-only, checked to be a task when made.
///
/// [`to_wire`](Self::to_wire) gives the extension's `DetailedTask`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    record: SessionRecord,
    status: TaskStatus,
    ttl: Duration,
    last_updated_at: Timestamp,
}

impl TaskView {
    /// Reads the task out of `record` (one from the task store, say, handed
    /// to a [`SessionHook`](crate::SessionHook)).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the record is not a task: no known status, no
    /// TTL, or a status without what it carries (`inputRequests`, `result`,
    /// `error`).
    pub fn from_record(record: SessionRecord) -> Result<TaskView> {
        let corrupt = |detail: &str| Error::Corrupt {
            id: record.id().clone(),
            detail: format!("not a task: {detail}"),
        };
        let state = record.state();
        let status = state
            .get(field::STATUS)
            .and_then(Value::as_str)
            .and_then(TaskStatus::parse)
            .ok_or_else(|| corrupt("no known status"))?;
        let ttl = record
            .expiry()
            .max_lifetime
            .ok_or_else(|| corrupt("no TTL"))?;
        let last_updated_at = match state.get(field::LAST_UPDATED_AT) {
            None => record.created_at(),
            Some(at) => at
                .as_u64()
                .map(Timestamp::from_millis)
                .ok_or_else(|| corrupt("lastUpdatedAt is not a time"))?,
        };
        let carries = |name: &str| state.get(name).is_some_and(Value::is_object);
        let payload = match status {
            TaskStatus::InputRequired => Some(field::INPUT_REQUESTS),
            TaskStatus::Completed => Some(field::RESULT),
            TaskStatus::Failed => Some(field::ERROR),
            _ => None,
        };
        if let Some(name) = payload
            && !carries(name)
        {
            return Err(corrupt(&format!("{status} without {name}")));
        }
        let last_updated_at = last_updated_at.max(record.created_at());
        Ok(TaskView {
            record,
            status,
            ttl,
            last_updated_at,
        })
    }

    /// The task id (`task_…`).
    pub fn id(&self) -> &str {
        self.record.id().as_str()
    }

    /// The principal the task is bound to, if any.
    pub fn owner(&self) -> Option<&str> {
        self.record.owner()
    }

    /// The status.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// The status message, if any.
    pub fn status_message(&self) -> Option<&str> {
        self.field(field::STATUS_MESSAGE).and_then(Value::as_str)
    }

    /// When the task was created.
    pub fn created_at(&self) -> Timestamp {
        self.record.created_at()
    }

    /// When the task last changed (its creation, until it changes).
    pub fn last_updated_at(&self) -> Timestamp {
        self.last_updated_at
    }

    /// How long the task lives from its creation.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the task's TTL runs out: from then on it reads as unknown.
    pub fn expires_at(&self) -> Timestamp {
        self.record.expires_at()
    }

    /// The polling interval suggested to clients, if any.
    pub fn poll_interval(&self) -> Option<Duration> {
        self.field(field::POLL_INTERVAL_MS)
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
    }

    /// The outstanding input requests (key → request) while the task waits
    /// for input; `None` otherwise.
    pub fn input_requests(&self) -> Option<&Map<String, Value>> {
        (self.status == TaskStatus::InputRequired)
            .then(|| self.object(field::INPUT_REQUESTS))
            .flatten()
    }

    /// The answers accepted and not yet taken (key → response), if any.
    pub fn input_responses(&self) -> Option<&Map<String, Value>> {
        self.object(field::INPUT_RESPONSES)
    }

    /// The result of a completed task.
    pub fn result(&self) -> Option<&Map<String, Value>> {
        (self.status == TaskStatus::Completed)
            .then(|| self.object(field::RESULT))
            .flatten()
    }

    /// The JSON-RPC error object of a failed task.
    pub fn error(&self) -> Option<&Map<String, Value>> {
        (self.status == TaskStatus::Failed)
            .then(|| self.object(field::ERROR))
            .flatten()
    }

    /// Every input request key issued over the task's life, oldest first.
    pub fn issued_keys(&self) -> impl Iterator<Item = &str> {
        self.keys(field::ISSUED_KEYS)
    }

    /// Every input request key answered over the task's life, oldest first.
    pub fn answered_keys(&self) -> impl Iterator<Item = &str> {
        self.keys(field::ANSWERED_KEYS)
    }

    /// The record's version: it changes exactly when the task does, so a
    /// server can tell whether a `notifications/tasks` is due.
    pub fn version(&self) -> u64 {
        self.record.version()
    }

    /// The record underneath.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The task as the extension's `DetailedTask`: `taskId`, `status`,
    /// `statusMessage` (if any), `createdAt` and `lastUpdatedAt` (RFC 3339,
    /// UTC), `ttlMs`, `pollIntervalMs` (if any), and by status
    /// `inputRequests`, `result` or `error`. Without `resultType`, which
    /// depends on the message it goes in.
    pub fn to_wire(&self) -> Value {
        let mut task = Map::new();
        task.insert("taskId".into(), self.id().into());
        task.insert("status".into(), self.status.as_str().into());
        if let Some(message) = self.status_message() {
            task.insert("statusMessage".into(), message.into());
        }
        task.insert("createdAt".into(), self.created_at().to_rfc3339().into());
        task.insert(
            "lastUpdatedAt".into(),
            self.last_updated_at.to_rfc3339().into(),
        );
        task.insert("ttlMs".into(), millis(self.ttl).into());
        if let Some(interval) = self.poll_interval() {
            task.insert("pollIntervalMs".into(), millis(interval).into());
        }
        let payload = match self.status {
            TaskStatus::InputRequired => Some(("inputRequests", self.input_requests())),
            TaskStatus::Completed => Some(("result", self.result())),
            TaskStatus::Failed => Some(("error", self.error())),
            _ => None,
        };
        if let Some((name, value)) = payload {
            task.insert(
                name.into(),
                Value::Object(value.cloned().unwrap_or_default()),
            );
        }
        Value::Object(task)
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.record.state().get(name)
    }

    fn object(&self, name: &str) -> Option<&Map<String, Value>> {
        self.field(name).and_then(Value::as_object)
    }

    fn keys(&self, name: &str) -> impl Iterator<Item = &str> {
        self.field(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::{ExpiryPolicy, ManualClock, Page, SessionHook, terminal_error};

    /// A rival write a test slips in before the next compare-and-swap.
    type Rival = Box<dyn FnOnce(&mut SessionState) + Send>;

    /// The store of `store.rs`'s example, able to lose one race on purpose.
    #[derive(Default)]
    struct TestStore {
        map: Mutex<BTreeMap<SessionId, SessionRecord>>,
        rival: Mutex<Option<Rival>>,
        swaps: AtomicU32,
    }

    impl fmt::Debug for TestStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TestStore").finish_non_exhaustive()
        }
    }

    impl TestStore {
        fn stored(&self, id: &str) -> Option<SessionRecord> {
            let id = SessionId::parse(id).unwrap();
            self.map.lock().unwrap().get(&id).cloned()
        }

        fn rival(&self, change: impl FnOnce(&mut SessionState) + Send + 'static) {
            *self.rival.lock().unwrap() = Some(Box::new(change));
        }
    }

    #[async_trait]
    impl SessionStore for TestStore {
        async fn insert(&self, record: &SessionRecord) -> Result<()> {
            let mut map = self.map.lock().unwrap();
            if map.contains_key(record.id()) {
                return Err(Error::AlreadyExists);
            }
            map.insert(record.id().clone(), record.clone());
            Ok(())
        }
        async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
            Ok(self.map.lock().unwrap().get(id).cloned())
        }
        async fn compare_and_swap(&self, record: &SessionRecord, expected: u64) -> Result<Cas> {
            self.swaps.fetch_add(1, Ordering::SeqCst);
            let mut map = self.map.lock().unwrap();
            if let Some(rival) = self.rival.lock().unwrap().take() {
                let current = map[record.id()].clone();
                let mut write = current.begin_write(current.last_activity()).unwrap();
                rival(write.state_mut());
                map.insert(current.id().clone(), write.finish());
            }
            match map.get(record.id()) {
                Some(current) if current.stored_status().is_terminal() => {
                    Err(terminal_error(current.stored_status()))
                }
                Some(current) if current.version() == expected => {
                    assert_eq!(record.version(), expected + 1);
                    map.insert(record.id().clone(), record.clone());
                    Ok(Cas::Swapped)
                }
                current => Ok(Cas::Conflict {
                    current: current.cloned(),
                }),
            }
        }
        async fn delete(&self, id: &SessionId) -> Result<bool> {
            Ok(self.map.lock().unwrap().remove(id).is_some())
        }
        async fn count(&self) -> Result<usize> {
            let map = self.map.lock().unwrap();
            Ok(map
                .values()
                .filter(|r| !r.stored_status().is_terminal())
                .count())
        }
        async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
            let map = self.map.lock().unwrap();
            let records: Vec<_> = map
                .values()
                .filter(|r| r.id().as_str() > cursor.unwrap_or(""))
                .take(limit)
                .cloned()
                .collect();
            let next = (records.len() == limit)
                .then(|| records.last().map(|r| r.id().to_string()))
                .flatten();
            Ok(Page { records, next })
        }
        async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
            let mut map = self.map.lock().unwrap();
            let due: Vec<SessionId> = map
                .values()
                .filter(|r| r.expires_at() <= now)
                .take(limit)
                .map(|r| r.id().clone())
                .collect();
            Ok(due.iter().filter_map(|id| map.remove(id)).collect())
        }
    }

    #[derive(Debug, Default)]
    struct Expiries(AtomicU32);

    impl SessionHook for Expiries {
        fn on_closed(&self, _: &SessionRecord) {}
        fn on_expired(&self, _: &SessionRecord) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const T0: u64 = 1_764_066_600_000; // 2025-11-25T10:30:00Z
    const ALICE: Option<&str> = Some("alice");

    struct Fixture {
        tasks: Tasks,
        store: Arc<TestStore>,
        clock: Arc<ManualClock>,
    }

    fn fixture(config: ManagerConfig) -> Fixture {
        let store = Arc::new(TestStore::default());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
        let tasks = Tasks::new(store.clone(), clock.clone(), config);
        Fixture {
            tasks,
            store,
            clock,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn at(millis: u64) -> String {
        Timestamp::from_millis(millis).to_rfc3339()
    }

    /// A task of Alice's in `status`, reached by the ordinary operations.
    async fn task_in(f: &Fixture, status: TaskStatus) -> String {
        let id = f
            .tasks
            .create(ALICE, Some(secs(60)), None)
            .await
            .unwrap()
            .id()
            .to_owned();
        let done = match status {
            TaskStatus::Working => return id,
            TaskStatus::InputRequired => {
                let ask = obj(json!({"q": {"method": "roots/list"}}));
                f.tasks.set_input_required(&id, ALICE, ask).await
            }
            TaskStatus::Completed => {
                let result = obj(json!({"content": [], "isError": false}));
                f.tasks.complete(&id, ALICE, result).await
            }
            TaskStatus::Failed => {
                let error = ErrorObject::new(-32603, "boom");
                f.tasks.fail(&id, ALICE, error).await
            }
            TaskStatus::Cancelled => f.tasks.cancel(&id, ALICE).await,
        };
        assert_eq!(done.unwrap().status(), status);
        id
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Ask,
        Answer,
        Complete,
        Fail,
        Cancel,
        Message,
    }

    async fn apply(f: &Fixture, id: &str, op: Op) -> Result<TaskView, TaskError> {
        match op {
            Op::Ask => {
                let ask = obj(json!({"fresh": {"method": "roots/list"}}));
                f.tasks.set_input_required(id, ALICE, ask).await
            }
            Op::Answer => {
                let answer = obj(json!({"q": {"roots": []}}));
                let (view, _) = f.tasks.answer(id, ALICE, answer).await?;
                Ok(view)
            }
            Op::Complete => f.tasks.complete(id, ALICE, obj(json!({"ok": 1}))).await,
            Op::Fail => f.tasks.fail(id, ALICE, ErrorObject::new(1, "x")).await,
            Op::Cancel => f.tasks.cancel(id, ALICE).await,
            Op::Message => {
                let message = Some("halfway".to_owned());
                f.tasks.set_status_message(id, ALICE, message).await
            }
        }
    }

    #[tokio::test]
    async fn a_created_task_is_working_and_in_the_store_when_create_returns() {
        let f = fixture(ManagerConfig::default());
        let task = f
            .tasks
            .create(ALICE, Some(secs(60)), Some(secs(5)))
            .await
            .unwrap();
        assert_eq!(task.status(), TaskStatus::Working);
        assert_eq!(task.owner(), Some("alice"));
        assert_eq!(task.version(), 1);
        assert!(task.id().starts_with("task_"));
        assert_eq!(Tasks::parse(task.id()).unwrap().as_str(), task.id());
        let stored = f.store.stored(task.id()).expect("inserted by create");
        assert_eq!(&stored, task.record());
        assert_eq!(
            stored.expiry(),
            ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60))
        );
        assert_eq!(stored.expires_at(), Timestamp::from_millis(T0 + 60_000));
        assert_eq!(f.tasks.get(task.id(), ALICE).await.unwrap(), task);
        assert_eq!(
            task.to_wire(),
            json!({
                "taskId": task.id(),
                "status": "working",
                "createdAt": "2025-11-25T10:30:00.000Z",
                "lastUpdatedAt": "2025-11-25T10:30:00.000Z",
                "ttlMs": 60_000,
                "pollIntervalMs": 5_000,
            })
        );
        let other = f.tasks.create(ALICE, None, None).await.unwrap();
        assert_ne!(other.id(), task.id());
    }

    #[tokio::test]
    async fn a_task_can_be_created_under_an_id_minted_beforehand() {
        let f = fixture(ManagerConfig::default());
        let id = Tasks::mint_id();
        assert_eq!(Tasks::parse(id.as_str()), Some(id.clone()));
        assert_ne!(Tasks::mint_id(), id);
        // Minting writes nothing: the task does not exist yet.
        assert!(f.store.stored(id.as_str()).is_none());
        assert!(matches!(
            f.tasks.get(id.as_str(), ALICE).await,
            Err(Error::NotFound)
        ));

        let task = f
            .tasks
            .create_with_id(&id, ALICE, Some(secs(60)), Some(secs(5)))
            .await
            .unwrap();
        assert_eq!(task.id(), id.as_str());
        assert_eq!(task.status(), TaskStatus::Working);
        assert_eq!(task.owner(), Some("alice"));
        assert_eq!(task.version(), 1);
        assert_eq!(task.poll_interval(), Some(secs(5)));
        let stored = f.store.stored(id.as_str()).expect("inserted");
        assert_eq!(&stored, task.record());
        assert_eq!(
            stored.expiry(),
            ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60))
        );
        assert_eq!(f.tasks.get(id.as_str(), ALICE).await.unwrap(), task);
        // The TTL defaults and is raised as `create`'s is.
        let other = Tasks::mint_id();
        let short = f
            .tasks
            .create_with_id(&other, None, Some(Duration::ZERO), None)
            .await
            .unwrap();
        assert_eq!(short.ttl(), MIN_TASK_TTL);

        // Taken: refused, and the task there is left as it is (never given
        // another id).
        f.tasks.cancel(id.as_str(), ALICE).await.unwrap();
        let before = f.store.stored(id.as_str()).unwrap();
        assert!(matches!(
            f.tasks.create_with_id(&id, Some("bob"), None, None).await,
            Err(Error::AlreadyExists)
        ));
        assert_eq!(f.store.stored(id.as_str()).unwrap(), before);
        assert_eq!(f.store.map.lock().unwrap().len(), 2);

        // Another record under a task id (a server's lease is `lease_…`,
        // never a task id) cannot be created through it.
        for bad in ["lease_0123456789abcdef0123456789abcdef", "task_x", "sess"] {
            let bad = SessionId::parse(bad).unwrap();
            assert!(matches!(
                f.tasks.create_with_id(&bad, ALICE, None, None).await,
                Err(Error::NotFound)
            ));
            assert!(f.store.stored(bad.as_str()).is_none());
        }
        assert_eq!(f.store.map.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_ttl_defaults_from_the_config_and_is_never_below_the_minimum() {
        let f = fixture(ManagerConfig::default().max_lifetime(Some(secs(120))));
        assert_eq!(f.tasks.default_ttl(), secs(120));
        let task = f.tasks.create(None, None, None).await.unwrap();
        assert_eq!(task.ttl(), secs(120));
        assert_eq!(task.poll_interval(), None);
        assert!(task.to_wire().get("pollIntervalMs").is_none());
        let short = f
            .tasks
            .create(None, Some(Duration::ZERO), None)
            .await
            .unwrap();
        assert_eq!(short.ttl(), MIN_TASK_TTL);
        assert!(f.tasks.get(short.id(), None).await.is_ok());

        let idle_only = fixture(ManagerConfig::default().idle_timeout(secs(90)));
        assert_eq!(idle_only.tasks.default_ttl(), secs(90));
    }

    #[test]
    fn every_operation_can_be_spawned() {
        fn send<T: Send>(_: T) {}
        let f = fixture(ManagerConfig::default());
        let t = &f.tasks;
        send(t.create(ALICE, None, None));
        send(t.create_with_id(&Tasks::mint_id(), ALICE, None, None));
        send(t.get("", ALICE));
        send(t.set_input_required("", ALICE, Map::new()));
        send(t.answer("", ALICE, Map::new()));
        send(t.take_responses("", ALICE));
        send(t.complete("", ALICE, Map::new()));
        send(t.fail("", ALICE, ErrorObject::new(1, "x")));
        send(t.cancel("", ALICE));
        send(t.set_status_message("", ALICE, None));
        send(t.sweep());
    }

    #[test]
    fn only_minted_task_ids_parse() {
        let random = "0123456789abcdef0123456789abcdef";
        assert!(Tasks::parse(&format!("task_{random}")).is_some());
        let minted = Tasks::generate();
        assert_eq!(minted.as_str().len(), "task_".len() + 32);
        assert_eq!(Tasks::parse(minted.as_str()), Some(minted));
        for bad in [
            format!("ctr_{random}"),
            format!("tasks_{random}"),
            format!("xtask_{random}"),
            format!("task{random}"),
            format!("task__{random}"),
            format!("task_x_{random}"),
            format!("task_{}", &random[1..]),
            format!("task_{random}0"),
            format!("task_{}", random.to_uppercase()),
            format!("TASK_{random}"),
            random.to_owned(),
            String::new(),
        ] {
            assert_eq!(Tasks::parse(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn another_principals_task_reads_and_writes_as_unknown() {
        let f = fixture(ManagerConfig::default());
        let id = task_in(&f, TaskStatus::InputRequired).await;
        let before = f.store.stored(&id).unwrap();
        for stranger in [Some("bob"), None] {
            assert!(matches!(
                f.tasks.get(&id, stranger).await,
                Err(Error::NotFound)
            ));
            let answer = obj(json!({"q": {}}));
            assert!(matches!(
                f.tasks.answer(&id, stranger, answer).await,
                Err(Error::NotFound)
            ));
            assert!(matches!(
                f.tasks.take_responses(&id, stranger).await,
                Err(Error::NotFound)
            ));
            for refused in [
                f.tasks.complete(&id, stranger, Map::new()).await,
                f.tasks.fail(&id, stranger, ErrorObject::new(1, "x")).await,
                f.tasks.cancel(&id, stranger).await,
                f.tasks.set_status_message(&id, stranger, None).await,
                f.tasks
                    .set_input_required(&id, stranger, obj(json!({"z": {}})))
                    .await,
            ] {
                assert!(matches!(refused, Err(TaskError::Record(Error::NotFound))));
            }
        }
        assert_eq!(f.store.stored(&id).unwrap(), before, "nothing written");

        // A task bound to no principal is no one else's either.
        let anonymous = f.tasks.create(None, None, None).await.unwrap();
        assert!(f.tasks.get(anonymous.id(), None).await.is_ok());
        assert!(matches!(
            f.tasks.get(anonymous.id(), ALICE).await,
            Err(Error::NotFound)
        ));

        // Unknown and malformed ids read the same.
        let unknown = Tasks::generate();
        for id in [unknown.as_str(), "task_nope", "", &"x".repeat(10_000)] {
            assert!(matches!(f.tasks.get(id, ALICE).await, Err(Error::NotFound)));
            assert!(matches!(
                f.tasks.cancel(id, ALICE).await,
                Err(TaskError::Record(Error::NotFound))
            ));
        }
    }

    #[test]
    fn status_transitions_are_the_state_diagram() {
        use TaskStatus::*;
        let legal = [
            (Working, InputRequired),
            (InputRequired, Working),
            (Working, Completed),
            (Working, Failed),
            (Working, Cancelled),
            (InputRequired, Completed),
            (InputRequired, Failed),
            (InputRequired, Cancelled),
        ];
        for from in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(from.as_str()), Some(from));
            assert_eq!(
                serde_json::to_value(from).unwrap(),
                json!(from.as_str()),
                "serde agrees with as_str"
            );
            for to in TaskStatus::ALL {
                match from.transition(to) {
                    Ok(next) => {
                        assert!(legal.contains(&(from, to)), "{from} -> {to}");
                        assert_eq!(next, to);
                    }
                    Err(TaskError::Terminal { status }) => {
                        assert!(from.is_terminal(), "{from} -> {to}");
                        assert_eq!(status, from);
                    }
                    Err(TaskError::InvalidTransition { from: f, to: t }) => {
                        assert!(!legal.contains(&(from, to)) && !from.is_terminal());
                        assert_eq!((f, t), (from, to));
                    }
                    Err(other) => panic!("{from} -> {to}: {other}"),
                }
            }
        }
        assert_eq!(TaskStatus::parse("done"), None);
    }

    #[tokio::test]
    async fn every_operation_in_every_status_moves_only_as_the_diagram_allows() {
        use TaskStatus::*;
        for from in TaskStatus::ALL {
            for op in [
                Op::Ask,
                Op::Answer,
                Op::Complete,
                Op::Fail,
                Op::Cancel,
                Op::Message,
            ] {
                let f = fixture(ManagerConfig::default());
                let id = task_in(&f, from).await;
                let before = f.store.stored(&id).unwrap();
                // The status after, or `None` if refused; whether it writes.
                let (expect, writes) = match (op, from) {
                    (_, from) if from.is_terminal() => match op {
                        Op::Answer => (Some(from), false),
                        _ => (None, false),
                    },
                    (Op::Ask, Working) => (Some(InputRequired), true),
                    (Op::Ask, _) => (None, false),
                    (Op::Answer, InputRequired) => (Some(Working), true),
                    (Op::Answer, from) => (Some(from), false),
                    (Op::Complete, _) => (Some(Completed), true),
                    (Op::Fail, _) => (Some(Failed), true),
                    (Op::Cancel, _) => (Some(Cancelled), true),
                    (Op::Message, from) => (Some(from), true),
                };
                let outcome = apply(&f, &id, op).await;
                let after = f.store.stored(&id).unwrap();
                match (expect, outcome) {
                    (Some(status), Ok(view)) => {
                        assert_eq!(view.status(), status, "{op:?} on {from}");
                        assert_eq!(view.record(), &after, "the view is what was written");
                    }
                    (None, Err(e)) => match e {
                        TaskError::Terminal { status } => assert_eq!(status, from),
                        TaskError::InvalidTransition { from: f, to } => {
                            assert_eq!((f, to), (from, InputRequired), "{op:?}");
                        }
                        other => panic!("{op:?} on {from}: {other}"),
                    },
                    (expect, outcome) => panic!("{op:?} on {from}: {expect:?} but {outcome:?}"),
                }
                let written = after.version() != before.version();
                assert_eq!(written, writes, "{op:?} on {from} writes iff it changes");
                if !writes {
                    assert_eq!(after, before);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_terminal_task_never_changes_again() {
        let f = fixture(ManagerConfig::default());
        let id = task_in(&f, TaskStatus::Completed).await;
        let before = f.tasks.get(&id, ALICE).await.unwrap();
        f.clock.advance(secs(1));
        for op in [Op::Ask, Op::Complete, Op::Fail, Op::Cancel, Op::Message] {
            assert!(
                matches!(
                    apply(&f, &id, op).await,
                    Err(TaskError::Terminal {
                        status: TaskStatus::Completed
                    })
                ),
                "{op:?}"
            );
        }
        let (view, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"q": {}})))
            .await
            .unwrap();
        assert!(accepted.is_empty());
        assert_eq!(view, before);
        let (_, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
        assert!(taken.is_empty());
        let after = f.tasks.get(&id, ALICE).await.unwrap();
        assert_eq!(after, before);
        assert_eq!(after.to_wire(), before.to_wire());
        assert_eq!(
            after.result(),
            Some(&obj(json!({"content": [], "isError": false})))
        );
    }

    #[tokio::test]
    async fn input_keys_are_unique_over_a_tasks_life_and_answers_may_come_in_parts() {
        let f = fixture(ManagerConfig::default());
        let id = task_in(&f, TaskStatus::Working).await;
        let ask =
            obj(json!({"a": {"method": "elicitation/create"}, "b": {"method": "roots/list"}}));
        let task = f
            .tasks
            .set_input_required(&id, ALICE, ask.clone())
            .await
            .unwrap();
        assert_eq!(task.input_requests(), Some(&ask));
        assert_eq!(task.to_wire()["inputRequests"], Value::Object(ask));
        assert_eq!(task.issued_keys().collect::<Vec<_>>(), ["a", "b"]);

        // Partial: `a` is accepted, the never-issued `zzz` ignored.
        let (task, accepted) = f
            .tasks
            .answer(
                &id,
                ALICE,
                obj(json!({"a": {"action": "accept"}, "zzz": 2})),
            )
            .await
            .unwrap();
        assert_eq!(accepted, obj(json!({"a": {"action": "accept"}})));
        assert_eq!(task.status(), TaskStatus::InputRequired);
        assert_eq!(
            task.input_requests(),
            Some(&obj(json!({"b": {"method": "roots/list"}})))
        );
        assert_eq!(task.input_responses(), Some(&accepted));
        assert_eq!(task.answered_keys().collect::<Vec<_>>(), ["a"]);

        // Answering `a` again is ignored and writes nothing.
        let version = task.version();
        let (task, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"a": "again"})))
            .await
            .unwrap();
        assert!(accepted.is_empty());
        assert_eq!(task.version(), version);

        // The last outstanding answer sends the task back to work.
        let (task, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"b": {"roots": []}})))
            .await
            .unwrap();
        assert_eq!(accepted, obj(json!({"b": {"roots": []}})));
        assert_eq!(task.status(), TaskStatus::Working);
        assert_eq!(task.input_requests(), None);
        assert!(task.to_wire().get("inputRequests").is_none());
        assert_eq!(
            task.input_responses(),
            Some(&obj(json!({"a": {"action": "accept"}, "b": {"roots": []}})))
        );

        // Keys issued before are refused, however long ago; nothing written.
        let version = task.version();
        for (ask, reused) in [(json!({"a": {}}), "a"), (json!({"b": {}, "c": {}}), "b")] {
            match f.tasks.set_input_required(&id, ALICE, obj(ask)).await {
                Err(TaskError::KeyReused { key }) => assert_eq!(key, reused),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            f.tasks.set_input_required(&id, ALICE, Map::new()).await,
            Err(TaskError::NoInputRequests)
        ));
        assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), version);

        // The work takes the answers; their keys stay answered.
        let (task, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
        assert_eq!(
            taken,
            obj(json!({"a": {"action": "accept"}, "b": {"roots": []}}))
        );
        assert_eq!(task.input_responses(), None);
        assert_eq!(task.answered_keys().collect::<Vec<_>>(), ["a", "b"]);
        let (again, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
        assert!(taken.is_empty());
        assert_eq!(again.version(), task.version(), "nothing to take, no write");

        // A fresh key is fine; an answered one is not outstanding.
        let task = f
            .tasks
            .set_input_required(&id, ALICE, obj(json!({"c": {}})))
            .await
            .unwrap();
        assert_eq!(task.issued_keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let (_, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"b": "late"})))
            .await
            .unwrap();
        assert!(accepted.is_empty());

        // Ending the task drops what is outstanding; later answers are ignored.
        let task = f.tasks.cancel(&id, ALICE).await.unwrap();
        assert_eq!(task.input_requests(), None);
        assert!(task.record().state().get("inputRequests").is_none());
        let (_, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"c": {}})))
            .await
            .unwrap();
        assert!(accepted.is_empty());
    }

    #[tokio::test]
    async fn a_task_lives_for_its_ttl_from_creation_however_busy_and_is_swept() {
        let f = fixture(ManagerConfig::default());
        let expiries = Arc::new(Expiries::default());
        f.tasks.manager().add_hook(expiries.clone());
        let busy = f.tasks.create(ALICE, Some(secs(10)), None).await.unwrap();
        let id = busy.id().to_owned();
        let done = task_in(&f, TaskStatus::Working).await; // TTL 60 s
        f.tasks.complete(&done, ALICE, Map::new()).await.unwrap();
        for _ in 0..3 {
            f.clock.advance(secs(3));
            let message = Some(format!("{}", f.clock.now().as_millis()));
            let task = f
                .tasks
                .set_status_message(&id, ALICE, message)
                .await
                .unwrap();
            assert_eq!(
                task.expires_at(),
                Timestamp::from_millis(T0 + 10_000),
                "writes do not stretch the TTL"
            );
        }
        f.clock.set(Timestamp::from_millis(T0 + 9_999));
        assert!(f.tasks.get(&id, ALICE).await.is_ok());
        f.clock.set(Timestamp::from_millis(T0 + 10_000));
        assert!(matches!(
            f.tasks.get(&id, ALICE).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            f.tasks.complete(&id, ALICE, Map::new()).await,
            Err(TaskError::Record(Error::NotFound))
        ));
        assert!(f.store.stored(&id).is_some(), "gone only when swept");
        assert_eq!(f.tasks.sweep().await.unwrap(), 1);
        assert!(f.store.stored(&id).is_none());
        assert_eq!(expiries.0.load(Ordering::SeqCst), 1);
        assert_eq!(f.tasks.sweep().await.unwrap(), 0);

        // A completed task keeps its result until its own TTL runs out.
        f.clock.set(Timestamp::from_millis(T0 + 59_999));
        assert!(f.tasks.get(&done, ALICE).await.unwrap().result().is_some());
        f.clock.set(Timestamp::from_millis(T0 + 60_000));
        assert!(matches!(
            f.tasks.get(&done, ALICE).await,
            Err(Error::NotFound)
        ));
        assert_eq!(f.tasks.sweep().await.unwrap(), 1);
        assert!(f.store.map.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn polling_a_task_writes_nothing() {
        let f = fixture(ManagerConfig::default().touch_interval(Duration::ZERO));
        let id = task_in(&f, TaskStatus::Working).await;
        for _ in 0..5 {
            f.clock.advance(secs(5));
            assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), 1);
        }
        assert_eq!(f.store.swaps.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn results_errors_and_requests_are_bounded_like_session_state() {
        let limit = 1024;
        let f = fixture(ManagerConfig::default().max_state_bytes(limit));
        let id = task_in(&f, TaskStatus::Working).await;
        let big = "x".repeat(limit);
        let too_large = |outcome: Result<TaskView, TaskError>| {
            matches!(
                outcome,
                Err(TaskError::Record(Error::StateTooLarge { size, limit: l }))
                    if l == limit && size > limit
            )
        };
        assert!(too_large(
            f.tasks
                .complete(&id, ALICE, obj(json!({"text": big})))
                .await
        ));
        let error = ErrorObject::new(-32603, "big").with_data(json!(big));
        assert!(too_large(f.tasks.fail(&id, ALICE, error).await));
        assert!(too_large(
            f.tasks
                .set_input_required(&id, ALICE, obj(json!({"q": big})))
                .await
        ));
        assert!(too_large(
            f.tasks
                .set_status_message(&id, ALICE, Some(big.clone()))
                .await
        ));
        let task = f.tasks.get(&id, ALICE).await.unwrap();
        assert_eq!(task.version(), 1, "nothing written");
        assert_eq!(task.status(), TaskStatus::Working);

        // Answers count too.
        f.tasks
            .set_input_required(&id, ALICE, obj(json!({"q": {}})))
            .await
            .unwrap();
        assert!(matches!(
            f.tasks.answer(&id, ALICE, obj(json!({"q": big}))).await,
            Err(Error::StateTooLarge { .. })
        ));
        assert_eq!(
            f.tasks.get(&id, ALICE).await.unwrap().status(),
            TaskStatus::InputRequired
        );

        // Within the limit all is well.
        let task = f
            .tasks
            .complete(&id, ALICE, obj(json!({"text": "small"})))
            .await
            .unwrap();
        assert_eq!(task.status(), TaskStatus::Completed);
    }

    #[tokio::test]
    async fn a_change_that_lost_a_race_is_judged_again_on_the_version_that_won() {
        let f = fixture(ManagerConfig::default());

        // Cancelled by another process between our load and our write: the
        // completion is refused, and the cancellation stands.
        let id = task_in(&f, TaskStatus::Working).await;
        f.store.rival(|state| {
            state.insert("status".into(), json!("cancelled"));
        });
        assert!(matches!(
            f.tasks.complete(&id, ALICE, obj(json!({"ok": 1}))).await,
            Err(TaskError::Terminal {
                status: TaskStatus::Cancelled
            })
        ));
        let task = f.tasks.get(&id, ALICE).await.unwrap();
        assert_eq!(task.status(), TaskStatus::Cancelled);
        assert_eq!(task.record().state().get("result"), None);
        assert_eq!(f.store.swaps.load(Ordering::SeqCst), 1, "no second write");

        // A rival issued key `k` meanwhile: our `k` is refused on its version.
        let id = task_in(&f, TaskStatus::Working).await;
        f.store.rival(|state| {
            state.insert("issuedKeys".into(), json!(["k"]));
            state.insert("answeredKeys".into(), json!(["k"]));
        });
        assert!(matches!(
            f.tasks
                .set_input_required(&id, ALICE, obj(json!({"k": {}})))
                .await,
            Err(TaskError::KeyReused { .. })
        ));

        // A harmless rival change: ours lands on top of it, losing nothing.
        let id = task_in(&f, TaskStatus::InputRequired).await;
        f.store.rival(|state| {
            state.insert("statusMessage".into(), json!("from elsewhere"));
        });
        let (task, accepted) = f
            .tasks
            .answer(&id, ALICE, obj(json!({"q": {}})))
            .await
            .unwrap();
        assert_eq!(accepted.len(), 1);
        assert_eq!(task.status(), TaskStatus::Working);
        assert_eq!(task.status_message(), Some("from elsewhere"));
        assert_eq!(task.version(), 4, "create, ask, rival, answer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_a_racing_completion_and_cancellation_exactly_one_wins() {
        let f = Arc::new(fixture(ManagerConfig::default()));
        for _ in 0..50 {
            let id = task_in(&f, TaskStatus::Working).await;
            let (c, i) = (f.clone(), id.clone());
            let complete =
                tokio::spawn(
                    async move { c.tasks.complete(&i, ALICE, obj(json!({"ok": 1}))).await },
                );
            let (c, i) = (f.clone(), id.clone());
            let cancel = tokio::spawn(async move { c.tasks.cancel(&i, ALICE).await });
            let (complete, cancel) = (complete.await.unwrap(), cancel.await.unwrap());
            let winner = f.tasks.get(&id, ALICE).await.unwrap().status();
            match (complete, cancel) {
                (Ok(_), Err(TaskError::Terminal { status })) => {
                    assert_eq!((winner, status), (TaskStatus::Completed, winner));
                }
                (Err(TaskError::Terminal { status }), Ok(_)) => {
                    assert_eq!((winner, status), (TaskStatus::Cancelled, winner));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), 2);
        }
    }

    #[tokio::test]
    async fn to_wire_gives_the_detailed_task_of_each_status() {
        let f = fixture(ManagerConfig::default());
        let id = task_in(&f, TaskStatus::Working).await;
        f.clock.advance(Duration::from_millis(1_500));
        let task = f
            .tasks
            .set_status_message(&id, ALICE, Some("fetching".into()))
            .await
            .unwrap();
        assert_eq!(
            task.to_wire(),
            json!({
                "taskId": id,
                "status": "working",
                "statusMessage": "fetching",
                "createdAt": at(T0),
                "lastUpdatedAt": at(T0 + 1_500),
                "ttlMs": 60_000,
            })
        );
        f.clock.advance(secs(1));
        let ask =
            obj(json!({"name": {"method": "elicitation/create", "params": {"mode": "form"}}}));
        let task = f.tasks.set_input_required(&id, ALICE, ask).await.unwrap();
        assert_eq!(
            task.to_wire(),
            json!({
                "taskId": id,
                "status": "input_required",
                "statusMessage": "fetching",
                "createdAt": at(T0),
                "lastUpdatedAt": at(T0 + 2_500),
                "ttlMs": 60_000,
                "inputRequests": {
                    "name": {"method": "elicitation/create", "params": {"mode": "form"}}
                },
            })
        );
        // A clock that went back (another replica's) never moves it backwards.
        f.clock.set(Timestamp::from_millis(T0 + 2_000));
        let error =
            ErrorObject::new(-32603, "API rate limit exceeded").with_data(json!({"retry": 5}));
        let task = f.tasks.fail(&id, ALICE, error).await.unwrap();
        assert_eq!(
            task.to_wire(),
            json!({
                "taskId": id,
                "status": "failed",
                "statusMessage": "API rate limit exceeded",
                "createdAt": at(T0),
                "lastUpdatedAt": at(T0 + 2_500),
                "ttlMs": 60_000,
                "error": {"code": -32603, "message": "API rate limit exceeded", "data": {"retry": 5}},
            })
        );

        let id = task_in(&f, TaskStatus::Working).await;
        f.tasks
            .set_status_message(&id, ALICE, Some("about to finish".into()))
            .await
            .unwrap();
        let result = obj(json!({"content": [{"type": "text", "text": "Hello"}], "isError": true}));
        let task = f.tasks.complete(&id, ALICE, result).await.unwrap();
        let wire = task.to_wire();
        assert_eq!(wire["status"], "completed");
        assert_eq!(wire["result"]["isError"], true);
        assert!(
            wire.get("statusMessage").is_none(),
            "the work's message is dropped"
        );
        assert!(wire.get("resultType").is_none());

        let id = task_in(&f, TaskStatus::Cancelled).await;
        let wire = f.tasks.get(&id, ALICE).await.unwrap().to_wire();
        let keys: BTreeSet<&str> = wire
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["taskId", "status", "createdAt", "lastUpdatedAt", "ttlMs"])
        );
        assert_eq!(wire["status"], "cancelled");
    }

    #[tokio::test]
    async fn a_record_that_is_not_a_task_reads_as_corrupt() {
        let f = fixture(ManagerConfig::default());
        let with_ttl = ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60));
        let cases = [
            (json!({}), with_ttl),
            (json!({"status": "done"}), with_ttl),
            (json!({"status": "completed"}), with_ttl),
            (json!({"status": "failed", "error": "text"}), with_ttl),
            (json!({"status": "input_required"}), with_ttl),
            (
                json!({"status": "working", "lastUpdatedAt": "soon"}),
                with_ttl,
            ),
            (json!({"status": "working"}), ExpiryPolicy::idle(secs(60))),
        ];
        for (state, policy) in cases {
            let id = Tasks::generate();
            let record = SessionRecord::create(
                id.clone(),
                NewSession::new().owner("alice").state(obj(state.clone())),
                Timestamp::from_millis(T0),
                policy,
            );
            f.store.insert(&record).await.unwrap();
            assert!(
                matches!(
                    f.tasks.get(id.as_str(), ALICE).await,
                    Err(Error::Corrupt { .. })
                ),
                "{state}"
            );
            assert!(
                matches!(
                    f.tasks.cancel(id.as_str(), ALICE).await,
                    Err(TaskError::Record(Error::Corrupt { .. }))
                ),
                "{state}"
            );
        }
    }
}
