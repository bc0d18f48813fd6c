//! The counters behind [`GroupCommitStats`]: shared between a file store's
//! commit thread, which counts each batch, and the store handle, which reads
//! them at scrape time. Relaxed atomics only: counting costs a few
//! uncontended increments per batch, next to an `fdatasync`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use session_core::{
    BATCH_SIZE_BUCKETS, GroupCommitStats, SYNC_SECONDS_BUCKETS, bucket_index, cumulative_buckets,
};

/// Group-commit counters: per-bucket (not cumulative) counts of batch sizes
/// and sync durations, and totals.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    /// Committed batches per bucket of [`BATCH_SIZE_BUCKETS`]; their sum is
    /// the number of committed batches.
    sizes: [AtomicU64; BATCH_SIZE_BUCKETS.len()],
    /// Committed batches per bucket of [`SYNC_SECONDS_BUCKETS`].
    syncs: [AtomicU64; SYNC_SECONDS_BUCKETS.len()],
    writes: AtomicU64,
    sync_nanos: AtomicU64,
    failed: AtomicU64,
}

impl CommitStats {
    /// Counts a batch of `writes` written and synced, its `fdatasync` having
    /// taken `sync`. Called before the batch is acknowledged, so a writer
    /// that has its acknowledgement sees its batch counted.
    pub(crate) fn committed(&self, writes: usize, sync: Duration) {
        let size = bucket_index(&BATCH_SIZE_BUCKETS, writes as f64);
        let took = bucket_index(&SYNC_SECONDS_BUCKETS, sync.as_secs_f64());
        let nanos = u64::try_from(sync.as_nanos()).unwrap_or(u64::MAX);
        self.syncs[took].fetch_add(1, Relaxed);
        self.sync_nanos.fetch_add(nanos, Relaxed);
        self.writes.fetch_add(writes as u64, Relaxed);
        self.sizes[size].fetch_add(1, Relaxed);
    }

    /// Counts a batch whose write or sync failed.
    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// What has been counted so far, field by field.
    pub(crate) fn snapshot(&self) -> GroupCommitStats {
        let load = |counts: &[AtomicU64]| -> Vec<u64> {
            counts.iter().map(|count| count.load(Relaxed)).collect()
        };
        let batch_sizes = cumulative_buckets(&BATCH_SIZE_BUCKETS, &load(&self.sizes));
        let sync_seconds = cumulative_buckets(&SYNC_SECONDS_BUCKETS, &load(&self.syncs));
        let mut stats = GroupCommitStats::default();
        stats.batches = batch_sizes.last().map_or(0, |&(_, total)| total);
        stats.writes = self.writes.load(Relaxed);
        stats.batch_sizes = batch_sizes;
        stats.sync_seconds = sync_seconds;
        stats.sync_seconds_sum = self.sync_nanos.load(Relaxed) as f64 / 1e9;
        stats.failed_batches = self.failed.load(Relaxed);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_counted_in_their_buckets_and_read_back_cumulative() {
        let stats = CommitStats::default();
        stats.committed(1, Duration::from_micros(50));
        stats.committed(3, Duration::from_micros(300));
        stats.committed(3, Duration::from_millis(2));
        stats.committed(5000, Duration::from_secs(3));
        stats.failed();
        let read = stats.snapshot();
        assert_eq!(read.batches, 4);
        assert_eq!(read.writes, 5007);
        assert_eq!(read.failed_batches, 1);
        let sizes: Vec<u64> = read.batch_sizes.iter().map(|&(_, c)| c).collect();
        assert_eq!(sizes, [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
        let syncs: Vec<u64> = read.sync_seconds.iter().map(|&(_, c)| c).collect();
        assert_eq!(syncs, [1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert!((read.sync_seconds_sum - 3.00235).abs() < 1e-9);
        assert_eq!(read.batch_sizes.last().unwrap().0, f64::INFINITY);
        assert_eq!(
            CommitStats::default().snapshot(),
            GroupCommitStats::default()
        );
    }
}
