//! The session manager: the rules every store is driven by.

mod config;
mod hook;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_lock::RwLock;
use parking_lot::RwLock as SyncRwLock;

pub use config::ManagerConfig;
pub use hook::SessionHook;

use crate::{
    Cas, Clock, Error, NewSession, Page, RecordWrite, Result, SessionId, SessionRecord,
    SessionState, SessionStatus, SessionStore,
};

/// Creates, reads, updates and ends sessions in any [`SessionStore`].
///
/// What it guarantees, whichever store is behind it:
/// - **create**: fresh CSPRNG ids (a collision is retried), a cap on live
///   sessions ([`Error::LimitReached`]), optional handshake deadline;
/// - **persist**: updates are compare-and-swap on the record's version and are
///   retried on conflict, so concurrent updates, from this manager or another
///   sharing the store, are serialised and none is lost;
/// - **expire**: a session past its deadline reads as [`Error::Expired`] at
///   once; [`sweep`](Self::sweep) removes expired records at a cost in
///   proportion to what expired;
/// - **clean up**: [`SessionHook`]s hear of every close and expiry this manager
///   performs; [`clear_all`](Self::clear_all) waits for in-flight writes.
///
/// The manager reads time only from its [`Clock`].
#[derive(Debug)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    hooks: SyncRwLock<Vec<Arc<dyn SessionHook>>>,
    /// Writes hold it shared; `clear_all` holds it exclusively.
    gate: RwLock<()>,
    /// Creations between their cap check and their insert.
    creating: AtomicUsize,
}

impl SessionManager {
    /// A manager over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn SessionStore>, clock: Arc<dyn Clock>, config: ManagerConfig) -> Self {
        SessionManager {
            store,
            clock,
            config,
            hooks: SyncRwLock::new(Vec::new()),
            gate: RwLock::new(()),
            creating: AtomicUsize::new(0),
        }
    }

    /// The store behind the manager.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The clock the manager reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The manager's settings.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Registers a hook to hear of sessions this manager closes or expires.
    pub fn add_hook(&self, hook: Arc<dyn SessionHook>) {
        self.hooks.write().push(hook);
    }

    /// Creates a session and returns its first version.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] at the cap on live sessions (after sweeping
    /// what has expired), [`Error::StateTooLarge`] for an oversized initial
    /// state, [`Error::MetaTooLarge`] for oversized metadata (`clientInfo`,
    /// capabilities, …), [`Error::Backend`] on a store failure.
    pub async fn create(&self, new: NewSession) -> Result<SessionRecord> {
        self.create_with(new, SessionId::generate).await
    }

    /// [`create`](Self::create) with ids minted by `mint` instead of
    /// [`SessionId::generate`]: for records that need another id format,
    /// such as [`Handles`](crate::Handles). `mint` must draw from a CSPRNG;
    /// a collision is retried with a fresh id like any other.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    pub async fn create_with(
        &self,
        mut new: NewSession,
        mint: impl Fn() -> SessionId + Send,
    ) -> Result<SessionRecord> {
        let _gate = self.gate.read().await;
        let size = crate::record::json_size(&new.state);
        if size > self.config.max_state_bytes {
            return Err(Error::StateTooLarge {
                size,
                limit: self.config.max_state_bytes,
            });
        }
        // Counted exactly only when a cheap bound does not settle it.
        if new.meta.json_size_bound() > self.config.max_meta_bytes {
            let size = crate::record::json_size(&new.meta);
            if size > self.config.max_meta_bytes {
                return Err(Error::MetaTooLarge {
                    size,
                    limit: self.config.max_meta_bytes,
                });
            }
        }
        new.handshake_timeout = new
            .handshake_timeout
            .map(|timeout| timeout.min(self.config.handshake_timeout));
        let _slot = self.reserve_slot().await?;
        let mut record = SessionRecord::create(mint(), new, self.clock.now(), self.config.expiry);
        // 122 random bits make a collision practically impossible; a store that
        // reports one anyway (or a broken random source) gets a few fresh ids.
        for _ in 0..3 {
            match self.store.insert(&record).await {
                Err(Error::AlreadyExists) => record = record.with_id(mint()),
                other => return other.map(|()| record),
            }
        }
        Err(Error::AlreadyExists)
    }

    /// Loads a live session and records activity on it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Expired`] (a session past its deadline is
    /// marked expired and hooks run) or [`Error::Closed`];
    /// [`Error::Corrupt`] or [`Error::Backend`] from the store.
    pub async fn get(&self, id: &SessionId) -> Result<SessionRecord> {
        self.access(id, None).await
    }

    /// Continues a session on behalf of `principal` (`None`: unauthenticated),
    /// for example from a new connection or process. A session bound to a
    /// different principal reads as [`Error::NotFound`], exactly like an
    /// unknown id, so ids cannot be probed.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn resume(&self, id: &SessionId, principal: Option<&str>) -> Result<SessionRecord> {
        self.access(id, Some(principal)).await
    }

    /// Records activity on a live session now, whatever the touch interval.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn touch(&self, id: &SessionId) -> Result<SessionRecord> {
        self.write(id, |_| Ok(())).await.map(|(record, ())| record)
    }

    /// Merges `patch` into the session's state one level deep (a `null` value
    /// removes the key) and returns the new version.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub async fn update_state(&self, id: &SessionId, patch: SessionState) -> Result<SessionRecord> {
        self.write(id, |w| {
            w.merge_state(patch.clone());
            Ok(())
        })
        .await
        .map(|(record, ())| record)
    }

    /// Changes the session's state with `change`, returning the new version and
    /// what `change` returned.
    ///
    /// `change` runs on the latest version and may run more than once: when
    /// another writer got in first, it runs again on that writer's result. So it
    /// must only compute from the state it is given.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Expired`], [`Error::Closed`];
    /// [`Error::StateTooLarge`] if the new state exceeds the limit (nothing is
    /// written); [`Error::Conflict`] if the write lost more than
    /// `max_write_attempts` races; [`Error::Backend`] from the store.
    pub async fn update<T, F>(&self, id: &SessionId, mut change: F) -> Result<(SessionRecord, T)>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        self.write(id, |w| Ok(change(w.state_mut()))).await
    }

    /// [`update`](Self::update) on behalf of `principal`: a record bound to
    /// another principal (or to one, when `principal` is `None`) reads as
    /// [`Error::NotFound`], like an unknown id, and is not written.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub async fn update_as<T, F>(
        &self,
        id: &SessionId,
        principal: Option<&str>,
        mut change: F,
    ) -> Result<(SessionRecord, T)>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        let _gate = self.gate.read().await;
        let current = self.load(id).await?;
        // The owner never changes, so checking the version loaded suffices.
        if current.owner() != principal {
            return Err(Error::NotFound);
        }
        self.write_unguarded(current, |w| Ok(change(w.state_mut())))
            .await
    }

    /// Completes the handshake: `Initializing → Active`. Activating an active
    /// session only records activity.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn activate(&self, id: &SessionId) -> Result<SessionRecord> {
        let current = self.load(id).await?;
        self.activate_from(current).await
    }

    /// [`activate`](Self::activate) for a caller that has just loaded the
    /// record (saves a store read; a concurrent write is still caught by
    /// the version check).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn activate_from(&self, record: SessionRecord) -> Result<SessionRecord> {
        self.write_from(record, |w| match w.record().stored_status() {
            SessionStatus::Initializing => w.set_status(SessionStatus::Active),
            _ => Ok(()),
        })
        .await
        .map(|(record, ())| record)
    }

    /// Closes a session; hooks run. The record is kept as `Closed` for the
    /// configured retention, then removed by a sweep.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get): closing a closed or expired session reports that.
    pub async fn close(&self, id: &SessionId) -> Result<SessionRecord> {
        if self.config.retention.is_zero() {
            return self.close_and_delete(id).await;
        }
        let (record, ()) = self
            .write(id, |w| w.set_status(SessionStatus::Closed))
            .await?;
        self.run_hooks(&record, SessionStatus::Closed);
        Ok(record)
    }

    /// [`close`](Self::close) for a caller that has just loaded the record
    /// (saves a store read).
    ///
    /// # Errors
    ///
    /// As [`close`](Self::close).
    pub async fn close_from(&self, record: SessionRecord) -> Result<SessionRecord> {
        if self.config.retention.is_zero() {
            let _gate = self.gate.read().await;
            return self.delete_closed(record).await;
        }
        let (record, ()) = self
            .write_from(record, |w| w.set_status(SessionStatus::Closed))
            .await?;
        self.run_hooks(&record, SessionStatus::Closed);
        Ok(record)
    }

    /// `close` when nothing is retained: the record is deleted outright.
    async fn close_and_delete(&self, id: &SessionId) -> Result<SessionRecord> {
        let _gate = self.gate.read().await;
        let current = self.load(id).await?;
        self.delete_closed(current).await
    }

    /// Deletes a live record as closed; hooks run. The caller holds the gate.
    async fn delete_closed(&self, mut current: SessionRecord) -> Result<SessionRecord> {
        loop {
            let mut write = match current.begin_write(self.clock.now()) {
                Ok(write) => write,
                Err(Error::Expired) if !current.stored_status().is_terminal() => {
                    match Box::pin(self.retire(current, Retire::Overdue)).await? {
                        Retired::Expired(_) => return Err(Error::Expired),
                        Retired::Live(latest) => {
                            current = latest;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            write.set_status(SessionStatus::Closed)?;
            let closed = write.finish();
            if !self.store.delete(closed.id()).await? {
                return Err(Error::NotFound);
            }
            self.run_hooks(&closed, SessionStatus::Closed);
            return Ok(closed);
        }
    }

    /// Expires a live session now, whatever its deadline; hooks run.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get): a session already past its deadline is recorded
    /// as expired and reported as [`Error::Expired`].
    pub async fn expire(&self, id: &SessionId) -> Result<SessionRecord> {
        let _gate = self.gate.read().await;
        let record = self.load(id).await?;
        let overdue = record.status_at(self.clock.now()) == SessionStatus::Expired;
        let (Retired::Expired(retired) | Retired::Live(retired)) =
            self.retire(record, Retire::Always).await?;
        if overdue {
            return Err(Error::Expired);
        }
        Ok(retired)
    }

    /// One page of sessions, as [`SessionStore::list`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store.
    pub async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.store.list(cursor, limit).await
    }

    /// The number of live sessions in the store, as [`SessionStore::count`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store.
    pub async fn count(&self) -> Result<usize> {
        self.store.count().await
    }

    /// Removes every record whose deadline has passed; hooks run for each live
    /// session among them. Returns how many live sessions expired.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store; sessions removed before the failure
    /// have had their hooks run.
    pub async fn sweep(&self) -> Result<usize> {
        let _gate = self.gate.read().await;
        self.sweep_batches(usize::MAX).await
    }

    /// Ends and removes every session: waits for writes in flight, holds new
    /// writes back meanwhile, runs the close hooks of live sessions (the expiry
    /// hooks of those past their deadline) and deletes all records. Records
    /// that fail their integrity check ([`SessionStore::list_corrupt`]) are
    /// deleted too, without hooks: there is no readable record to hand them.
    /// Returns how many records were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store.
    pub async fn clear_all(&self) -> Result<usize> {
        let _exclusive = self.gate.write().await;
        let batch = self.config.sweep_batch.max(1);
        let mut removed = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list(cursor.as_deref(), batch).await?;
            let now = self.clock.now();
            for record in &page.records {
                if self.store.delete(record.id()).await? {
                    removed += 1;
                    if !record.stored_status().is_terminal() {
                        let ended = match record.status_at(now) {
                            SessionStatus::Expired => SessionStatus::Expired,
                            _ => SessionStatus::Closed,
                        };
                        self.run_hooks(record, ended);
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        loop {
            let corrupt = self.store.list_corrupt(batch).await?;
            let mut deleted = 0;
            for id in &corrupt {
                if self.store.delete(id).await? {
                    deleted += 1;
                }
            }
            removed += deleted;
            // Stop when the store has no more, or deleting makes no progress.
            if corrupt.len() < batch || deleted == 0 {
                return Ok(removed);
            }
        }
    }

    async fn access(
        &self,
        id: &SessionId,
        principal: Option<Option<&str>>,
    ) -> Result<SessionRecord> {
        let record = self.load(id).await?;
        if let Some(principal) = principal
            && record.owner() != principal
        {
            return Err(Error::NotFound);
        }
        let now = self.clock.now();
        match record.status_at(now) {
            SessionStatus::Closed => return Err(Error::Closed),
            SessionStatus::Expired => {
                let _gate = self.gate.read().await;
                return match Box::pin(self.retire(record, Retire::Overdue)).await? {
                    Retired::Expired(_) => Err(Error::Expired),
                    // Written just before its deadline by another writer.
                    Retired::Live(latest) => Ok(latest),
                };
            }
            _ => {}
        }
        if now.saturating_since(record.last_activity()) < self.touch_interval(&record) {
            return Ok(record);
        }
        let _gate = self.gate.read().await;
        let next = record.begin_write(now)?.finish();
        match self.store.compare_and_swap(&next, record.version()).await? {
            Cas::Swapped => Ok(next),
            // Another write landed first, and every write records activity.
            Cas::Conflict {
                current: Some(current),
            } => match current.status_at(now) {
                SessionStatus::Closed => Err(Error::Closed),
                SessionStatus::Expired => Err(Error::Expired),
                _ => Ok(current),
            },
            Cas::Conflict { current: None } => Err(Error::NotFound),
        }
    }

    fn touch_interval(&self, record: &SessionRecord) -> Duration {
        self.config
            .touch_interval
            .min(record.expiry().idle_timeout / 10)
    }

    async fn load(&self, id: &SessionId) -> Result<SessionRecord> {
        self.store.load(id).await?.ok_or(Error::NotFound)
    }

    /// The compare-and-swap loop behind every write. The caller must not hold
    /// the gate.
    async fn write<T>(
        &self,
        id: &SessionId,
        change: impl FnMut(&mut RecordWrite) -> Result<T> + Send,
    ) -> Result<(SessionRecord, T)> {
        let _gate = self.gate.read().await;
        let current = self.load(id).await?;
        self.write_unguarded(current, change).await
    }

    /// The write loop starting from a record the caller loaded. The caller
    /// must not hold the gate.
    async fn write_from<T>(
        &self,
        current: SessionRecord,
        change: impl FnMut(&mut RecordWrite) -> Result<T> + Send,
    ) -> Result<(SessionRecord, T)> {
        let _gate = self.gate.read().await;
        self.write_unguarded(current, change).await
    }

    /// The compare-and-swap loop itself. The caller holds the gate.
    async fn write_unguarded<T>(
        &self,
        mut current: SessionRecord,
        mut change: impl FnMut(&mut RecordWrite) -> Result<T> + Send,
    ) -> Result<(SessionRecord, T)> {
        let mut expected = current.version();
        for _ in 0..self.config.max_write_attempts.max(1) {
            let now = self.clock.now();
            let mut write = match current.begin_write(now) {
                Ok(write) => write,
                Err(Error::Expired) if !current.stored_status().is_terminal() => {
                    match Box::pin(self.retire(current, Retire::Overdue)).await? {
                        Retired::Expired(_) => return Err(Error::Expired),
                        // Another writer got in just before the deadline:
                        // write on top of its version.
                        Retired::Live(latest) => {
                            current = latest;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            write.retain_for(self.config.retention);
            let out = change(&mut write)?;
            let state_written = write.state_written();
            let next = write.finish();
            if state_written {
                let size = next.state_size();
                if size > self.config.max_state_bytes {
                    return Err(Error::StateTooLarge {
                        size,
                        limit: self.config.max_state_bytes,
                    });
                }
            }
            expected = current.version();
            match self.store.compare_and_swap(&next, expected).await? {
                Cas::Swapped => return Ok((next, out)),
                Cas::Conflict {
                    current: Some(latest),
                } => current = latest,
                Cas::Conflict { current: None } => return Err(Error::NotFound),
            }
        }
        // `current` is the version the store holds now: the record exists.
        Err(Error::Conflict {
            expected,
            found: Some(current.version()),
        })
    }

    /// Marks a live session expired (hooks run), retrying on conflict. The
    /// caller holds the gate.
    ///
    /// The hot paths (`access`, the write loop) await it boxed: it runs
    /// rarely, and inline its state would make every request's future
    /// larger.
    ///
    /// With [`Retire::Overdue`] a conflicting newer version is expired only
    /// if it too is past its deadline; one written just before the deadline
    /// is returned as [`Retired::Live`] and nothing is written. With zero
    /// retention the expired version is written and then deleted, so that
    /// expiring stays conditional on the version like every other write.
    async fn retire(&self, mut current: SessionRecord, why: Retire) -> Result<Retired> {
        let retention = self.config.retention;
        let mut expected = current.version();
        for _ in 0..self.config.max_write_attempts.max(1) {
            let now = self.clock.now();
            if why == Retire::Overdue
                && !current.stored_status().is_terminal()
                && current.status_at(now) != SessionStatus::Expired
            {
                return Ok(Retired::Live(current));
            }
            let next = current.expired_version(now, retention)?;
            expected = current.version();
            match self.store.compare_and_swap(&next, expected).await? {
                Cas::Swapped => {
                    if retention.is_zero() {
                        // Nothing writes to the expired version, so this
                        // removes exactly it (or a sweep got there first).
                        self.store.delete(next.id()).await?;
                    }
                    self.run_hooks(&next, SessionStatus::Expired);
                    return Ok(Retired::Expired(next));
                }
                Cas::Conflict {
                    current: Some(latest),
                } => current = latest,
                Cas::Conflict { current: None } => return Err(Error::NotFound),
            }
        }
        Err(Error::Conflict {
            expected,
            found: Some(current.version()),
        })
    }

    async fn sweep_batches(&self, max_batches: usize) -> Result<usize> {
        let now = self.clock.now();
        let batch = self.config.sweep_batch.max(1);
        let mut expired = 0;
        for _ in 0..max_batches {
            let removed = self.store.remove_expired(now, batch).await?;
            for record in &removed {
                if !record.stored_status().is_terminal() {
                    expired += 1;
                    self.run_hooks(record, SessionStatus::Expired);
                }
            }
            if removed.len() < batch {
                break;
            }
        }
        Ok(expired)
    }

    /// Holds a place under the cap until dropped. The caller holds the gate.
    async fn reserve_slot(&self) -> Result<Slot<'_>> {
        let slot = Slot(&self.creating);
        let creating = self.creating.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(limit) = self.config.max_sessions else {
            return Ok(slot);
        };
        if self.store.count().await? + creating <= limit {
            return Ok(slot);
        }
        // Records past their deadline still count until swept; sweep one batch
        // before refusing.
        self.sweep_batches(1).await?;
        if self.store.count().await? + creating <= limit {
            Ok(slot)
        } else {
            Err(Error::LimitReached { limit })
        }
    }

    fn run_hooks(&self, record: &SessionRecord, ended: SessionStatus) {
        for hook in self.hooks.read().iter() {
            match ended {
                SessionStatus::Closed => hook.on_closed(record),
                _ => hook.on_expired(record),
            }
        }
    }
}

/// Why a live session is being retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    /// It was found past its deadline: a newer version is expired only if it
    /// is past its own.
    Overdue,
    /// [`SessionManager::expire`] asked for it, whatever the deadline.
    Always,
}

/// What [`SessionManager::retire`] did.
#[derive(Debug)]
enum Retired {
    /// The session is expired now and hooks ran: the terminal version.
    Expired(SessionRecord),
    /// A newer version is live at the current time; nothing was written.
    Live(SessionRecord),
}

struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
