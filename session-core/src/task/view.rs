//! [`TaskView`]: a stored task, read and checked, and its wire shape.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{TaskStatus, field, millis};
use crate::{Error, Result, SessionRecord, Timestamp};

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
