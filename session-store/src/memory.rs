//! [`MemoryStore`]: sessions in process memory.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, BinaryHeap};

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use foldhash::HashMap;
use foldhash::fast::RandomState;
use parking_lot::RwLock;
use session_core::{
    Cas, Error, Page, Result, SessionId, SessionRecord, SessionStore, Timestamp, terminal_error,
};

const SHARDS: usize = 32;

/// A session store that lives only in process memory.
///
/// **Durability:** none. Every session is lost when the process exits. Use it
/// for tests and for single-process servers that can afford to lose sessions
/// on restart; use [`FileStore`](crate::FileStore) otherwise.
///
/// **Concurrency:** records are spread over 32 shards, each behind its own
/// reader-writer lock, so there is no global lock on the hot path. Each shard
/// keeps an index ordered by `expires_at`, so
/// [`remove_expired`](SessionStore::remove_expired) costs in proportion to what
/// expired.
///
/// ```
/// use std::sync::Arc;
/// use session_core::{ManagerConfig, NewSession, SessionManager};
/// use session_store::{MemoryStore, SystemClock};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let manager = SessionManager::new(
///     Arc::new(MemoryStore::new()),
///     Arc::new(SystemClock),
///     ManagerConfig::default(),
/// );
/// let session = manager.create(NewSession::new()).await?;
/// assert_eq!(manager.get(session.id()).await?.id(), session.id());
/// # Ok::<(), session_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    live: AtomicUsize,
}

#[derive(Debug, Default)]
struct Shard {
    records: HashMap<SessionId, SessionRecord>,
    by_expiry: BTreeSet<(Timestamp, SessionId)>,
}

impl Shard {
    fn put(&mut self, record: SessionRecord) -> Option<SessionRecord> {
        let key = (record.expires_at(), record.id().clone());
        let previous = self.records.insert(record.id().clone(), record);
        match &previous {
            Some(previous) if previous.expires_at() == key.0 => {}
            Some(previous) => {
                self.by_expiry
                    .remove(&(previous.expires_at(), previous.id().clone()));
                self.by_expiry.insert(key);
            }
            None => {
                self.by_expiry.insert(key);
            }
        }
        previous
    }

    fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let removed = self.records.remove(id)?;
        self.by_expiry
            .remove(&(removed.expires_at(), removed.id().clone()));
        Some(removed)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
            live: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: &SessionId) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one(id.as_str());
        &self.shards[(hash as usize) % SHARDS]
    }

    /// Adjusts the live count for one record's change. Called with the
    /// record's shard locked, so the changes of one record reach the counter
    /// in the order they happened: a delete never subtracts before the
    /// insert it undoes has added, and the count never dips below zero.
    fn count_change(&self, before: Option<&SessionRecord>, after: Option<&SessionRecord>) {
        let live = |r: Option<&SessionRecord>| r.is_some_and(|r| !r.stored_status().is_terminal());
        match (live(before), live(after)) {
            (false, true) => {
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let mut shard = self.shard(record.id()).write();
        if shard.records.contains_key(record.id()) {
            return Err(Error::AlreadyExists);
        }
        shard.put(record.clone());
        self.count_change(None, Some(record));
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        Ok(self.shard(id).read().records.get(id).cloned())
    }

    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas> {
        let mut shard = self.shard(record.id()).write();
        match shard.records.entry(record.id().clone()) {
            Entry::Occupied(current) if current.get().stored_status().is_terminal() => {
                return Err(terminal_error(current.get().stored_status()));
            }
            Entry::Occupied(current) if current.get().version() == expected_version => {}
            Entry::Occupied(current) => {
                return Ok(Cas::Conflict {
                    current: Some(current.get().clone()),
                });
            }
            Entry::Vacant(_) => return Ok(Cas::Conflict { current: None }),
        }
        let previous = shard.put(record.clone());
        self.count_change(previous.as_ref(), Some(record));
        Ok(Cas::Swapped)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let mut shard = self.shard(id).write();
        let removed = shard.remove(id);
        self.count_change(removed.as_ref(), None);
        Ok(removed.is_some())
    }

    async fn count(&self) -> Result<usize> {
        Ok(self.live.load(Ordering::Relaxed))
    }

    /// Lists in id order; the cursor is the last id of the previous page. Each
    /// page costs O(n log limit) over all n records.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let after = cursor.unwrap_or("");
        // The `limit` smallest ids above the cursor, kept in a max-heap.
        // Never reserve more than there can be: `limit` may be huge
        // (`usize::MAX` for "everything").
        let capacity = limit
            .min(self.live.load(Ordering::Relaxed))
            .saturating_add(1);
        let mut smallest: BinaryHeap<SessionId> = BinaryHeap::with_capacity(capacity);
        for shard in self.shards.iter() {
            for id in shard.read().records.keys() {
                if id.as_str() > after
                    && (smallest.len() < limit || smallest.peek().is_some_and(|max| id < max))
                {
                    smallest.push(id.clone());
                    if smallest.len() > limit {
                        smallest.pop();
                    }
                }
            }
        }
        let ids = smallest.into_sorted_vec();
        let next = (ids.len() == limit && limit > 0)
            .then(|| ids.last().map(SessionId::to_string))
            .flatten();
        let records = ids
            .iter()
            .filter_map(|id| self.shard(id).read().records.get(id).cloned())
            .collect();
        Ok(Page { records, next })
    }

    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            if removed.len() >= limit {
                break;
            }
            let due = shard
                .read()
                .by_expiry
                .first()
                .is_some_and(|(at, _)| *at <= now);
            if !due {
                continue;
            }
            let mut shard = shard.write();
            while removed.len() < limit {
                let Some((at, id)) = shard.by_expiry.first().cloned() else {
                    break;
                };
                if at > now {
                    break;
                }
                if let Some(record) = shard.remove(&id) {
                    self.count_change(Some(&record), None);
                    removed.push(record);
                }
            }
        }
        Ok(removed)
    }
}
