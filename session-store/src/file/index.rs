//! The file store's in-memory index: every session's latest durable record,
//! plus the writes accepted but not yet durable.
//!
//! Reads see only the durable view, so a read never returns what a crash could
//! still take away. Writers validate against the latest accepted write, so a
//! compare-and-swap never has to wait for the previous write's fsync.

use std::collections::{BTreeSet, BinaryHeap};

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use foldhash::HashMap;
use foldhash::fast::RandomState;
use parking_lot::{RwLock, RwLockWriteGuard};
use session_core::{SessionId, SessionRecord, Timestamp};

const SHARDS: usize = 32;

/// What is durably stored for a session.
#[derive(Debug, Clone)]
pub(crate) enum Durable {
    /// A readable record.
    Record(SessionRecord),
    /// The latest record failed its checksum at open; the text says how.
    Corrupt(Arc<str>),
}

/// One session's entry.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) durable: Option<Durable>,
    /// Bytes the durable entry takes in a snapshot.
    durable_bytes: u64,
    /// The latest accepted, not yet durable write: `Some(None)` is a delete.
    pending: Option<(u64, Option<SessionRecord>)>,
}

impl Slot {
    /// The latest accepted state: pending if any, else durable.
    pub(crate) fn latest(&self) -> Option<Latest<'_>> {
        match &self.pending {
            Some((_, Some(record))) => Some(Latest::Record(record)),
            Some((_, None)) => None,
            None => match &self.durable {
                Some(Durable::Record(record)) => Some(Latest::Record(record)),
                Some(Durable::Corrupt(detail)) => Some(Latest::Corrupt(detail)),
                None => None,
            },
        }
    }
}

/// The latest accepted state of a session.
#[derive(Debug)]
pub(crate) enum Latest<'a> {
    Record(&'a SessionRecord),
    Corrupt(&'a str),
}

#[derive(Debug, Default)]
pub(crate) struct Shard {
    slots: HashMap<SessionId, Slot>,
    by_expiry: BTreeSet<(Timestamp, SessionId)>,
}

impl Shard {
    pub(crate) fn slot(&self, id: &SessionId) -> Option<&Slot> {
        self.slots.get(id)
    }

    /// Records an accepted write with log sequence `seq`.
    pub(crate) fn set_pending(&mut self, id: &SessionId, seq: u64, write: Option<SessionRecord>) {
        self.slots.entry(id.clone()).or_default().pending = Some((seq, write));
    }
}

/// The sharded index.
#[derive(Debug)]
pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    live: AtomicUsize,
    bytes: AtomicU64,
}

fn is_live(durable: Option<&Durable>) -> bool {
    matches!(durable, Some(Durable::Record(r)) if !r.stored_status().is_terminal())
}

fn expiry_key(durable: Option<&Durable>) -> Option<Timestamp> {
    match durable {
        Some(Durable::Record(r)) => Some(r.expires_at()),
        _ => None,
    }
}

/// Puts a recovered entry into `shard`; returns whether it is live and its
/// bytes.
fn fill(shard: &mut Shard, id: SessionId, durable: Durable, bytes: u64) -> (usize, u64) {
    if let Some(at) = expiry_key(Some(&durable)) {
        shard.by_expiry.insert((at, id.clone()));
    }
    let live = usize::from(is_live(Some(&durable)));
    shard.slots.insert(
        id,
        Slot {
            durable: Some(durable),
            durable_bytes: bytes,
            pending: None,
        },
    );
    (live, bytes)
}

impl Index {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An index with room for `records` without regrowing.
    pub(crate) fn with_capacity(records: usize) -> Self {
        let per_shard = records / SHARDS + records / SHARDS / 8;
        Index {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        slots: HashMap::with_capacity_and_hasher(per_shard, Default::default()),
                        by_expiry: BTreeSet::new(),
                    })
                })
                .collect(),
            hasher: RandomState::default(),
            live: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn shard_index(&self, id: &SessionId) -> usize {
        (self.hasher.hash_one(id.as_str()) as usize) % SHARDS
    }

    fn shard(&self, id: &SessionId) -> &RwLock<Shard> {
        &self.shards[self.shard_index(id)]
    }

    /// Locks the shard of `id` for validating and staging a write.
    pub(crate) fn lock(&self, id: &SessionId) -> RwLockWriteGuard<'_, Shard> {
        self.shard(id).write()
    }

    /// The durable entry of `id`.
    pub(crate) fn durable(&self, id: &SessionId) -> Option<Durable> {
        self.shard(id).read().slots.get(id)?.durable.clone()
    }

    /// Fills a new, empty index with what recovery read: one entry per
    /// session, each taken as durable.
    pub(crate) fn load(&self, entries: impl IntoIterator<Item = (SessionId, (Durable, u64))>) {
        let (mut live, mut total) = (0, 0);
        for (id, (durable, bytes)) in entries {
            let mut shard = self.shard(&id).write();
            let (l, b) = fill(&mut shard, id, durable, bytes);
            live += l;
            total += b;
        }
        self.live.fetch_add(live, Ordering::Relaxed);
        self.bytes.fetch_add(total, Ordering::Relaxed);
    }

    /// Replaces every entry with what reopening the directory read, shard by
    /// shard: each shard is built aside and swapped in whole, so a reader
    /// sees a session before or after, never missing. Called only while no
    /// write is pending (the store refuses writes meanwhile).
    pub(crate) fn replace(&self, entries: impl IntoIterator<Item = (SessionId, (Durable, u64))>) {
        let mut fresh: Vec<Shard> = (0..SHARDS).map(|_| Shard::default()).collect();
        let (mut live, mut total) = (0, 0);
        for (id, (durable, bytes)) in entries {
            let shard = &mut fresh[self.shard_index(&id)];
            let (l, b) = fill(shard, id, durable, bytes);
            live += l;
            total += b;
        }
        for (lock, shard) in self.shards.iter().zip(fresh) {
            let old = std::mem::replace(&mut *lock.write(), shard);
            drop(old);
        }
        self.live.store(live, Ordering::Relaxed);
        self.bytes.store(total, Ordering::Relaxed);
    }

    /// Makes a write durable in the view: called in log order once its batch
    /// is synced. Clears the pending mark if no later write replaced it.
    pub(crate) fn promote(&self, id: &SessionId, seq: u64, durable: Option<Durable>, bytes: u64) {
        let mut shard = self.shard(id).write();
        let Shard { slots, by_expiry } = &mut *shard;
        let slot = match slots.get_mut(id) {
            Some(slot) => slot,
            None => slots.entry(id.clone()).or_default(),
        };
        if slot.pending.as_ref().is_some_and(|(s, _)| *s == seq) {
            slot.pending = None;
        }
        let before = slot.durable.take();
        let (old_at, new_at) = (expiry_key(before.as_ref()), expiry_key(durable.as_ref()));
        if old_at != new_at {
            if let Some(at) = old_at {
                by_expiry.remove(&(at, id.clone()));
            }
            if let Some(at) = new_at {
                by_expiry.insert((at, id.clone()));
            }
        }
        match (is_live(before.as_ref()), is_live(durable.as_ref())) {
            (false, true) => {
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if slot.durable_bytes != bytes {
            self.bytes.fetch_sub(slot.durable_bytes, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            slot.durable_bytes = bytes;
        }
        slot.durable = durable;
        if slot.durable.is_none() && slot.pending.is_none() {
            slots.remove(id);
        }
        drop(shard);
        drop(before);
    }

    /// Forgets a write that failed to become durable.
    pub(crate) fn rollback(&self, id: &SessionId, seq: u64) {
        let mut shard = self.shard(id).write();
        if let Some(slot) = shard.slots.get_mut(id)
            && slot.pending.as_ref().is_some_and(|(s, _)| *s == seq)
        {
            slot.pending = None;
            if slot.durable.is_none() {
                shard.slots.remove(id);
            }
        }
    }

    /// Live durable records.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes the durable entries take in a snapshot.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Durable records past `now`, oldest deadline first, at most `limit`,
    /// skipping sessions with a write in flight.
    pub(crate) fn due(&self, now: Timestamp, limit: usize) -> Vec<SessionRecord> {
        let mut due = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (at, id) in &shard.by_expiry {
                if *at > now || due.len() >= limit {
                    break;
                }
                if let Some(Slot {
                    durable: Some(Durable::Record(record)),
                    pending: None,
                    ..
                }) = shard.slots.get(id)
                {
                    due.push(record.clone());
                }
            }
            if due.len() >= limit {
                break;
            }
        }
        due
    }

    /// Up to `limit` durable records with ids above `after`, in id order,
    /// and the cursor of the next page: the last id chosen, or `None` when
    /// fewer than `limit` ids were chosen (or `limit` is 0).
    ///
    /// The cursor is decided from the ids chosen, not from the records
    /// returned: a record deleted between choosing its id and fetching it is
    /// missing from the page, and the listing still goes on after it.
    pub(crate) fn page(&self, after: &str, limit: usize) -> (Vec<SessionRecord>, Option<String>) {
        let ids = self.page_ids(after, limit);
        self.fetch_page(&ids, limit)
    }

    /// The `limit` smallest ids above `after` that have a readable durable
    /// record, in id order. Costs O(n log limit) over all n records.
    fn page_ids(&self, after: &str, limit: usize) -> Vec<SessionId> {
        // Never reserve more than there can be: `limit` comes from callers
        // and may be huge (`usize::MAX` for "everything").
        let capacity = limit.min(self.live()).saturating_add(1);
        let mut smallest: BinaryHeap<SessionId> = BinaryHeap::with_capacity(capacity);
        for shard in self.shards.iter() {
            for (id, slot) in &shard.read().slots {
                if matches!(slot.durable, Some(Durable::Record(_)))
                    && id.as_str() > after
                    && (smallest.len() < limit || smallest.peek().is_some_and(|max| id < max))
                {
                    smallest.push(id.clone());
                    if smallest.len() > limit {
                        smallest.pop();
                    }
                }
            }
        }
        smallest.into_sorted_vec()
    }

    /// The durable records of `ids` (chosen by [`page_ids`](Self::page_ids)
    /// with `limit`) that still exist, and the next page's cursor.
    fn fetch_page(&self, ids: &[SessionId], limit: usize) -> (Vec<SessionRecord>, Option<String>) {
        let next = (limit > 0 && ids.len() == limit)
            .then(|| ids.last().map(SessionId::to_string))
            .flatten();
        let records = ids
            .iter()
            .filter_map(|id| match self.durable(id) {
                Some(Durable::Record(record)) => Some(record),
                _ => None,
            })
            .collect();
        (records, next)
    }

    /// Up to `limit` ids whose latest accepted entry is a corrupt record, in
    /// no particular order.
    pub(crate) fn corrupt_ids(&self, limit: usize) -> Vec<SessionId> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            for (id, slot) in &shard.read().slots {
                if ids.len() >= limit {
                    return ids;
                }
                if matches!(slot.latest(), Some(Latest::Corrupt(_))) {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }

    /// Every durable entry. Consistent as of the last promotion only when
    /// called from the thread that promotes.
    pub(crate) fn snapshot(&self) -> Vec<(SessionId, Durable)> {
        let mut all = Vec::with_capacity(self.live());
        for shard in self.shards.iter() {
            let shard = shard.read();
            all.extend(
                shard
                    .slots
                    .iter()
                    .filter_map(|(id, slot)| Some((id.clone(), slot.durable.clone()?))),
            );
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{ExpiryPolicy, NewSession};

    fn index_with(n: usize) -> (Index, Vec<SessionId>) {
        let index = Index::new();
        let mut ids = Vec::new();
        for _ in 0..n {
            let record = SessionRecord::create(
                SessionId::generate(),
                NewSession::new(),
                Timestamp::from_millis(1),
                ExpiryPolicy::default(),
            );
            let id = record.id().clone();
            index.promote(&id, 0, Some(Durable::Record(record)), 1);
            ids.push(id);
        }
        ids.sort();
        (index, ids)
    }

    #[test]
    fn a_record_deleted_after_its_id_was_chosen_does_not_end_the_listing() {
        let (index, ids) = index_with(5);
        let chosen = index.page_ids("", 3);
        assert_eq!(chosen, ids[..3]);
        // A delete lands between choosing the page's ids and fetching them.
        index.promote(&ids[1], 0, None, 0);
        let (records, next) = index.fetch_page(&chosen, 3);
        assert_eq!(records.len(), 2, "the deleted record is not returned");
        assert_eq!(
            next.as_deref(),
            Some(ids[2].as_str()),
            "a page that lost a record is still followed by the next one"
        );
        let (rest, end) = index.page(ids[2].as_str(), 3);
        let rest: Vec<_> = rest.iter().map(|r| r.id().clone()).collect();
        assert_eq!(rest, ids[3..]);
        assert_eq!(end, None);
    }

    #[test]
    fn huge_limits_list_everything_without_reserving_for_them() {
        let (index, ids) = index_with(4);
        let (records, next) = index.page("", usize::MAX);
        assert_eq!(records.len(), 4);
        assert_eq!(next, None);
        let (records, next) = index.page("", 4);
        assert_eq!(records.len(), 4);
        assert_eq!(next.as_deref(), Some(ids[3].as_str()));
        let (records, next) = index.page("", 0);
        assert!(records.is_empty() && next.is_none());
    }

    #[test]
    fn corrupt_entries_are_found_by_id_and_not_listed() {
        let (index, ids) = index_with(3);
        index.promote(&ids[0], 0, Some(Durable::Corrupt(Arc::from("bad"))), 1);
        assert_eq!(index.corrupt_ids(10), vec![ids[0].clone()]);
        assert!(index.corrupt_ids(0).is_empty());
        let (records, _) = index.page("", 10);
        assert_eq!(records.len(), 2);
        index.promote(&ids[0], 0, None, 0);
        assert!(index.corrupt_ids(10).is_empty());
    }
}
