//! Tasks (the `io.modelcontextprotocol/tasks` extension, 2026-07-28 era):
//! following a request that became a task to its end, and taking a task up
//! again by its id from any process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use session_core::wire::{CallToolResult, ErrorObject};
use tokio::time::Instant;

use crate::modern::Reply;
use crate::{Client, ClientEvent, Error, RequestOptions, Result};

/// The shortest and longest wait between two polls, whatever the server
/// suggests.
const MIN_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(30);
/// The wait when the server suggests none.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// A task on the server, by its id: what [`Client::task`] gives, to poll,
/// wait for or cancel a task started by this process or another one.
///
/// ```no_run
/// # async fn run(client: mcp_client::Client) -> Result<(), mcp_client::Error> {
/// // The id was printed (`task: …`) or kept by an earlier process.
/// let task = client.task("task_9c1e…");
/// println!("{}", task.get().await?["status"]);
/// let result = task.call_result(Default::default()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Task {
    client: Client,
    id: String,
}

impl Client {
    /// The task `id` (from [`ClientEvent::TaskCreated`], or kept by another
    /// process). Nothing is sent until it is used.
    pub fn task(&self, id: &str) -> Task {
        Task {
            client: self.clone(),
            id: id.to_string(),
        }
    }

    /// Follows the task a request became to its end: the result of the
    /// request. Emits [`ClientEvent::TaskCreated`] first. Cancels the task
    /// (`tasks/cancel`, in the background) when the timeout passes or the
    /// caller stops waiting.
    pub(crate) async fn follow_task(
        &self,
        method: &str,
        created: Value,
        options: &RequestOptions,
    ) -> Result<Value> {
        let id = created["taskId"].as_str().unwrap_or_default().to_string();
        self.emit(ClientEvent::TaskCreated {
            task_id: id.clone(),
            method: method.to_string(),
        });
        let guard = CancelOnDrop {
            task: self.task(&id),
            armed: Arc::new(AtomicBool::new(true)),
        };
        let outcome = guard.task.wait(method, created, options).await;
        guard.finish(&outcome).await;
        // The task's failure is the request's, as if it had failed at once.
        outcome.map_err(|e| match e {
            Error::TaskFailed { error, .. } => Error::Rpc {
                method: method.to_string(),
                error,
            },
            other => other,
        })
    }
}

impl CancelOnDrop {
    /// The wait ended: unless the task ended, it is cancelled now (bounded
    /// by the request timeout), not left to a background task a
    /// short-lived process may never run.
    async fn finish<T>(&self, outcome: &Result<T>) {
        self.armed.store(false, Ordering::Release);
        // Ended (completed, failed, cancelled): nothing to cancel. Any other
        // error (a timeout, an input handler that failed, a poll that
        // broke) leaves the task without anyone waiting: cancelled.
        let ended = matches!(
            outcome,
            Ok(_) | Err(Error::TaskCancelled { .. } | Error::TaskFailed { .. } | Error::Rpc { .. })
        );
        if !ended {
            let bound = self.task.client.request_timeout();
            if let Ok(Err(e)) = tokio::time::timeout(bound, self.task.cancel()).await {
                tracing::debug!(task = %self.task.id, "cannot cancel the task: {e}");
            }
        }
    }
}

/// Cancels its task when dropped armed: the caller gave up or the timeout
/// passed.
struct CancelOnDrop {
    task: Task,
    armed: Arc<AtomicBool>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let task = self.task.clone();
        let bound = task.client.request_timeout();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(bound, task.cancel()).await;
            });
        }
    }
}

impl Task {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `tasks/get`: the task as the server shows it now (`status`,
    /// `statusMessage`, and `result`, `error` or `inputRequests` by status).
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] for a task the server does not know (or that is not
    /// this client's to see), as [`Client::request`] otherwise.
    pub async fn get(&self) -> Result<Value> {
        self.get_within(self.client.request_timeout()).await
    }

    async fn get_within(&self, timeout: Duration) -> Result<Value> {
        let options = RequestOptions::default().timeout(timeout);
        match self
            .client
            .exchange("tasks/get", &json!({"taskId": self.id}), &options)
            .await?
        {
            Reply::Complete(view) => Ok(view),
            _ => Err(Error::Protocol(
                "tasks/get answered with a result that is not complete".into(),
            )),
        }
    }

    /// `tasks/cancel`: asks the server to stop the task. A task that ended
    /// first is left as it is; either way the server acknowledges.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn cancel(&self) -> Result<()> {
        let options = RequestOptions::default();
        self.client
            .exchange("tasks/cancel", &json!({"taskId": self.id}), &options)
            .await
            .map(|_| ())
    }

    /// Waits for the task's end, answering its input requests through the
    /// client's request handler, and returns its result (for a `tools/call`,
    /// a `CallToolResult`'s JSON). The timeout rules of `options` hold for
    /// the whole wait; a change of the task's status or message counts as
    /// progress. When the timeout passes the task is cancelled.
    ///
    /// # Errors
    ///
    /// [`Error::TaskFailed`] with the task's error when it failed,
    /// [`Error::TaskCancelled`], [`Error::Timeout`], as
    /// [`get`](Self::get).
    pub async fn result(&self, options: RequestOptions) -> Result<Value> {
        let view = self.get().await?;
        let guard = CancelOnDrop {
            task: self.clone(),
            armed: Arc::new(AtomicBool::new(true)),
        };
        let outcome = self.wait("tasks/get", view, &options).await;
        guard.finish(&outcome).await;
        outcome
    }

    /// As [`result`](Self::result), read as a tool's result.
    ///
    /// # Errors
    ///
    /// As [`result`](Self::result), and [`Error::Protocol`] for a result
    /// that is not a `CallToolResult`.
    pub async fn call_result(&self, options: RequestOptions) -> Result<CallToolResult> {
        let value = self.result(options).await?;
        serde_json::from_value(value)
            .map_err(|e| Error::Protocol(format!("a malformed result of task {}: {e}", self.id)))
    }

    /// Polls from `view` until the task ends.
    async fn wait(&self, method: &str, mut view: Value, options: &RequestOptions) -> Result<Value> {
        let timeout = options
            .timeout
            .unwrap_or_else(|| self.client.request_timeout());
        let started = Instant::now();
        let hard_limit = started
            + if options.reset_timeout_on_progress {
                options.max_total_timeout.unwrap_or(timeout * 10)
            } else {
                timeout
            };
        let mut deadline = started + timeout;
        let mut seen = progress_of(&view);
        let mut answered: Map<String, Value> = Map::new();
        loop {
            let status = view["status"].as_str().unwrap_or_default().to_string();
            match status.as_str() {
                "completed" => {
                    return match view.get("result") {
                        Some(result @ Value::Object(_)) => Ok(result.clone()),
                        _ => Err(Error::Protocol(format!(
                            "task {} completed without a result",
                            self.id
                        ))),
                    };
                }
                "failed" => {
                    let error = serde_json::from_value::<ErrorObject>(view["error"].clone())
                        .unwrap_or_else(|_| {
                            ErrorObject::new(
                                session_core::wire::code::INTERNAL_ERROR,
                                format!("task {} failed without an error", self.id),
                            )
                        });
                    return Err(Error::TaskFailed {
                        task_id: self.id.clone(),
                        error,
                    });
                }
                "cancelled" => {
                    return Err(Error::TaskCancelled {
                        task_id: self.id.clone(),
                    });
                }
                "input_required" => {
                    let requests = view["inputRequests"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    // Keys answered before are answered again from memory
                    // (the user is not asked twice); new ones are asked.
                    let (again, asked): (Map<String, Value>, Map<String, Value>) = requests
                        .into_iter()
                        .partition(|(key, _)| answered.contains_key(key));
                    if !asked.is_empty() || !again.is_empty() {
                        let mut responses = self.client.answer_inputs(&asked).await?;
                        for key in again.keys() {
                            if let Some(previous) = answered.get(key) {
                                responses.insert(key.clone(), previous.clone());
                            }
                        }
                        let update = json!({"taskId": self.id, "inputResponses": responses});
                        self.client
                            .exchange("tasks/update", &update, &RequestOptions::default())
                            .await?;
                        answered.extend(responses);
                        continue_after(&mut deadline, timeout, options);
                    }
                }
                "working" => {}
                other => {
                    return Err(Error::Protocol(format!(
                        "task {} has an unknown status {other:?}",
                        self.id
                    )));
                }
            }
            let limit = deadline.min(hard_limit);
            let poll = view["pollIntervalMs"]
                .as_u64()
                .map_or(DEFAULT_POLL, Duration::from_millis)
                .clamp(MIN_POLL, MAX_POLL);
            let now = Instant::now();
            if now >= limit {
                return Err(Error::Timeout {
                    method: method.to_string(),
                    after: started.elapsed(),
                });
            }
            tokio::time::sleep_until((now + poll).min(limit)).await;
            let left = limit.saturating_duration_since(Instant::now());
            view = match self.get_within(left.max(MIN_POLL)).await {
                Ok(view) => view,
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        method: method.to_string(),
                        after: started.elapsed(),
                    });
                }
                Err(e) => return Err(e),
            };
            let now_seen = progress_of(&view);
            if now_seen != seen {
                seen = now_seen;
                continue_after(&mut deadline, timeout, options);
            }
        }
    }
}

/// What counts as progress of a task: its status, message and last update.
fn progress_of(view: &Value) -> (Value, Value, Value) {
    (
        view["status"].clone(),
        view["statusMessage"].clone(),
        view["lastUpdatedAt"].clone(),
    )
}

/// Progress: the timeout starts again, if the options say so.
fn continue_after(deadline: &mut Instant, timeout: Duration, options: &RequestOptions) {
    if options.reset_timeout_on_progress {
        *deadline = Instant::now() + timeout;
    }
}
