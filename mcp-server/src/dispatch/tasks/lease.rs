//! Leases: a running task's claim in the task store, renewed by its
//! worker. A lease is a record of its own beside the task (`lease_<hex>`,
//! never a task id), written before the task, with an idle timeout of
//! `task_lease`; when its worker is lost the lease lapses, and the store's
//! sweep runs [`LeaseHook`] exactly once across replicas, which fails the
//! task or runs it again ([`Dispatcher::lapsed`]).

use super::*;

/// The prefix of lease records in the task store.
const LEASE_PREFIX: &str = "lease_";

/// The lease record of task `task_id`.
fn lease_id(task_id: &str) -> Option<SessionId> {
    let bits = task_id.strip_prefix("task_")?;
    SessionId::parse(&format!("{LEASE_PREFIX}{bits}")).ok()
}

/// The fields of a lease record's state.
mod field {
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
pub(super) fn rerun_spec(
    task_id: &str,
    tool: &str,
    arguments: Value,
    capabilities: Value,
) -> SessionState {
    let mut spec = SessionState::new();
    spec.insert(field::TASK.into(), task_id.into());
    spec.insert(field::TOOL.into(), tool.into());
    spec.insert(field::ARGUMENTS.into(), arguments);
    spec.insert(field::CAPABILITIES.into(), capabilities);
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

impl TaskRuntime {
    /// Takes the lease of task `task_id` (owned by `owner`, living `ttl`;
    /// the task may not exist yet) for a run described by `spec`.
    ///
    /// A renewed lease lives at most one lease past the task's TTL (it
    /// ends with its task, whose worker then stops and gives it up); an
    /// unrenewed one lapses after the lease.
    pub(super) async fn take_lease(
        &self,
        task_id: &str,
        owner: Option<&str>,
        ttl: Duration,
        mut spec: SessionState,
    ) -> Result<Lease, session_core::Error> {
        let id = lease_id(task_id).ok_or(session_core::Error::NotFound)?;
        let holder = SessionId::generate().as_str().to_string();
        spec.insert(field::HOLDER.into(), holder.clone().into());
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
    pub(super) async fn renew(&self, lease: &Lease) -> bool {
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
    pub(super) async fn release(&self, lease: &Lease) {
        let manager = self.tasks.manager();
        if let Ok(Some(record)) = manager.store().load(&lease.id).await
            && holds(&record, lease)
            && let Err(e) = manager.close_from(record).await
            && !e.is_gone()
        {
            tracing::debug!(lease = %lease.id, "cannot give a task's lease up: {e}");
        }
    }

    /// Makes sure a task that is not terminal, read by `tasks/get`, has a
    /// lease that will speak for it if nobody works on it.
    ///
    /// A task has a lease from before its creation until its end is
    /// written, except in one case: the replica whose sweep removed a
    /// lapsed lease died before its expiry hook wrote the task's end (the
    /// hook runs once, and the lease is gone). Such a task would read
    /// `working` until its TTL. So a task found without a lease, and with
    /// no worker here, gets a watch lease: a lease like any other, which
    /// nobody renews, holding the task's id but no tool. It lapses after
    /// one lease, and its expiry hook fails the task ("the task's worker
    /// was lost"), exactly once across replicas, unless the task ended
    /// meanwhile.
    ///
    /// Best effort: a store that fails gives no verdict, and a lease that
    /// exists already (taken by a re-run, or by another replica's watch)
    /// is left as it is.
    pub(super) async fn watch(&self, view: &TaskView) {
        if view.status().is_terminal() || self.running.lock().contains_key(view.id()) {
            return;
        }
        let Some(id) = lease_id(view.id()) else {
            return;
        };
        match self.tasks.manager().store().load(&id).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
        let mut spec = SessionState::new();
        spec.insert(field::TASK.into(), view.id().into());
        match self
            .take_lease(view.id(), view.owner(), view.ttl(), spec)
            .await
        {
            Ok(_) => tracing::warn!(
                task = %view.id(),
                "a task has no lease and no worker here: it fails within a lease unless it ends"
            ),
            Err(e) => tracing::debug!(task = %view.id(), "no watch lease taken: {e}"),
        }
    }
}

/// Whether `record` is the lease `lease` (not another run's).
fn holds(record: &SessionRecord, lease: &Lease) -> bool {
    record.state().get(field::HOLDER).and_then(Value::as_str) == Some(lease.holder.as_str())
}

impl Dispatcher {
    /// A task's lease lapsed (its worker was lost), and this replica swept
    /// it: the task, unless terminal, is failed, or run again here if its
    /// tool is declared safe to re-run.
    pub(crate) async fn lapsed(self: Arc<Self>, record: SessionRecord) {
        let runtime = &self.task_runtime;
        let state = record.state();
        let Some(id) = state.get(field::TASK).and_then(Value::as_str) else {
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
        let tool = state.get(field::TOOL).and_then(Value::as_str);
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
            runtime.count(&view);
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
        spec.remove(field::HOLDER);
        let arguments = spec
            .get(field::ARGUMENTS)
            .filter(|a| !a.is_null())
            .map(to_raw);
        let capabilities = spec
            .get(field::CAPABILITIES)
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
}
