//! The contract every session store keeps.
//!
//! A store keeps [`SessionRecord`]s by id. It is deliberately small: the rules
//! (who may write, what expires when, hooks) live in the
//! [`SessionManager`](crate::SessionManager); a store only has to be atomic per
//! record and honest about versions. Backends live in the `session-store` crate,
//! whose `testkit` feature checks any implementation against this contract.
//!
//! # Writing a store
//!
//! A complete, if slow, store over one mutex. It is the contract in code: copy
//! it and replace the map with your backend.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//! use async_trait::async_trait;
//! use session_core::{Cas, Error, Page, Result, SessionId, SessionRecord, SessionStore, Timestamp};
//!
//! #[derive(Debug, Default)]
//! struct TinyStore(Mutex<BTreeMap<SessionId, SessionRecord>>);
//!
//! #[async_trait]
//! impl SessionStore for TinyStore {
//!     async fn insert(&self, record: &SessionRecord) -> Result<()> {
//!         let mut map = self.0.lock().unwrap();
//!         if map.contains_key(record.id()) {
//!             return Err(Error::AlreadyExists);
//!         }
//!         map.insert(record.id().clone(), record.clone());
//!         Ok(())
//!     }
//!     async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
//!         Ok(self.0.lock().unwrap().get(id).cloned())
//!     }
//!     async fn compare_and_swap(&self, record: &SessionRecord, expected: u64) -> Result<Cas> {
//!         let mut map = self.0.lock().unwrap();
//!         match map.get(record.id()) {
//!             Some(current) if current.stored_status().is_terminal() => {
//!                 Err(session_core::terminal_error(current.stored_status()))
//!             }
//!             Some(current) if current.version() == expected => {
//!                 map.insert(record.id().clone(), record.clone());
//!                 Ok(Cas::Swapped)
//!             }
//!             current => Ok(Cas::Conflict { current: current.cloned() }),
//!         }
//!     }
//!     async fn delete(&self, id: &SessionId) -> Result<bool> {
//!         Ok(self.0.lock().unwrap().remove(id).is_some())
//!     }
//!     async fn count(&self) -> Result<usize> {
//!         let map = self.0.lock().unwrap();
//!         Ok(map.values().filter(|r| !r.stored_status().is_terminal()).count())
//!     }
//!     async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
//!         let map = self.0.lock().unwrap();
//!         let after = cursor.unwrap_or("");
//!         let records: Vec<_> = map
//!             .values()
//!             .filter(|r| r.id().as_str() > after)
//!             .take(limit)
//!             .cloned()
//!             .collect();
//!         let next = (records.len() == limit)
//!             .then(|| records.last().map(|r| r.id().to_string()))
//!             .flatten();
//!         Ok(Page { records, next })
//!     }
//!     // O(n) here; a real store keeps an index ordered by `expires_at`.
//!     async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
//!         let mut map = self.0.lock().unwrap();
//!         let due: Vec<SessionId> = map
//!             .values()
//!             .filter(|r| r.expires_at() <= now)
//!             .take(limit)
//!             .map(|r| r.id().clone())
//!             .collect();
//!         Ok(due.iter().filter_map(|id| map.remove(id)).collect())
//!     }
//! }
//! ```

use async_trait::async_trait;

use crate::{Error, GroupCommitStats, Result, SessionId, SessionRecord, SessionStatus, Timestamp};

/// The outcome of [`SessionStore::compare_and_swap`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cas {
    /// The record was written.
    Swapped,
    /// The stored version was not the expected one; nothing was written.
    Conflict {
        /// The record as the store now holds it (including writes accepted but
        /// not yet acknowledged), or `None` if it is gone. A writer retries on
        /// top of it without another load.
        current: Option<SessionRecord>,
    },
}

/// One page of [`SessionStore::list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The records of this page.
    pub records: Vec<SessionRecord>,
    /// Pass to the next call to continue; `None` when the listing is complete.
    pub next: Option<String>,
}

/// Storage for session records.
///
/// Every method is atomic with respect to one record. Stores never judge time:
/// they keep `expires_at` and act on it only in
/// [`remove_expired`](Self::remove_expired) (and, for stores with native expiry,
/// by forgetting a record some time after its `expires_at`).
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores the first version of a session.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if a record with this id exists, whatever its
    /// status; [`Error::Backend`] on a store failure. When this returns `Ok`,
    /// the record is as durable as the store promises.
    async fn insert(&self, record: &SessionRecord) -> Result<()>;

    /// Loads the latest acknowledged version of a session, or `None` if the
    /// store holds no record with this id (never created, deleted, or removed
    /// after expiry). Expired and terminal records that are still stored are
    /// returned as they are; judging them is the caller's business.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the stored record fails its integrity check,
    /// [`Error::Backend`] on a store failure.
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>>;

    /// Replaces the stored record with `record` if the stored version equals
    /// `expected_version`. `record.version()` must be `expected_version + 1`.
    ///
    /// Returns [`Cas::Conflict`] with the current record when the versions
    /// differ or the record is gone; nothing is written then.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::Expired`] if the stored record is terminal:
    /// nothing writes to a terminal session. [`Error::Backend`] on a store
    /// failure, in which case the write may or may not have happened.
    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas>;

    /// Removes a record whatever its status. Returns whether one was there;
    /// deleting a missing id is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on a store failure.
    async fn delete(&self, id: &SessionId) -> Result<bool>;

    /// The number of stored records whose status is not terminal, including
    /// live records past their deadline that nothing has removed yet. Used for
    /// the cap on live sessions, so it must be cheap.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on a store failure.
    async fn count(&self) -> Result<usize>;

    /// Lists up to `limit` records, starting after `cursor` (`None` for the
    /// first page). Every record stored for the whole listing appears at
    /// least once (a store may repeat one: Redis `SCAN` does when its table
    /// is resized); records written meanwhile may or may not. The order is
    /// the store's own.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on a store failure or a cursor the store did not
    /// issue.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page>;

    /// Removes up to `limit` records whose `expires_at` is at or before `now`,
    /// and returns them. Costs in proportion to the records removed, not to
    /// all records stored. Call again while it returns `limit` records.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on a store failure.
    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>>;

    /// Up to `limit` ids of stored records that fail their integrity check:
    /// those [`load`](Self::load) reports as [`Error::Corrupt`], which
    /// [`list`](Self::list) leaves out and which have no deadline
    /// [`remove_expired`](Self::remove_expired) could act on.
    /// [`delete`](Self::delete) removes one like any other record, after
    /// which it is no longer found here. Used by
    /// [`SessionManager::clear_all`](crate::SessionManager::clear_all), so
    /// that damage is not kept forever. The default, for stores that detect
    /// no damage, finds none.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] on a store failure.
    async fn list_corrupt(&self, limit: usize) -> Result<Vec<SessionId>> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Whether the store accepts writes now: `Ok` if so, otherwise the
    /// reason as [`Error::Backend`] (a database out of reach, a directory
    /// refusing writes after an I/O error). What a server's readiness probe
    /// reports; it may run every few seconds, so it is cheap and bounded in
    /// time. The default, for stores that cannot fail, is always ready.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] saying why writes would fail.
    async fn readiness(&self) -> Result<()> {
        Ok(())
    }

    /// The store's group-commit statistics since it opened (batches, their
    /// sizes, `fdatasync` durations, failures), for a metrics exporter to
    /// read at scrape time: cheap, synchronous, no I/O. `None`, the default,
    /// for a store without group commit (memory, Redis).
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        None
    }

    /// A short name of the backend (`memory`, `file`, `redis`), for metrics
    /// and logs; `custom` by default.
    fn backend(&self) -> &'static str {
        "custom"
    }
}

/// The error for a write attempted on a record with terminal `status`:
/// [`Error::Closed`] or [`Error::Expired`]. For store implementations.
pub fn terminal_error(status: SessionStatus) -> Error {
    match status {
        SessionStatus::Closed => Error::Closed,
        _ => Error::Expired,
    }
}
