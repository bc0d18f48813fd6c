//! Statistics a store may expose for a metrics exporter: plain data, read at
//! scrape time with [`SessionStore::group_commit_stats`] or
//! [`EventStore::group_commit_stats`].
//!
//! Histograms here are Prometheus-style: `(upper bound, count)` pairs, the
//! count of observations at or below the bound, cumulative and ascending,
//! the last bound `f64::INFINITY`. [`cumulative_buckets`] builds one from
//! per-bucket counts; [`bucket_counts`] turns one back into per-bucket
//! counts, the form some encoders take (`prometheus-client`'s
//! `encode_histogram` adds them up itself, and writes `le="+Inf"` only for
//! an upper bound of `f64::MAX`).
//!
//! [`SessionStore::group_commit_stats`]: crate::SessionStore::group_commit_stats
//! [`EventStore::group_commit_stats`]: crate::EventStore::group_commit_stats

/// Upper bounds of the batch-size buckets of
/// [`GroupCommitStats::batch_sizes`]: writes per batch, powers of two from 1
/// to 1024, then `f64::INFINITY`.
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
    f64::INFINITY,
];

/// Upper bounds of the sync-duration buckets of
/// [`GroupCommitStats::sync_seconds`], in seconds: 100 µs to 1 s, then
/// `f64::INFINITY`.
pub const SYNC_SECONDS_BUCKETS: [f64; 14] = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    f64::INFINITY,
];

/// Cumulative statistics of a store's group commit since it opened: what a
/// metrics exporter reads at scrape time.
///
/// Only batches that were written and synced count in
/// [`batches`](Self::batches), [`writes`](Self::writes) and the two
/// histograms; a failed one counts in
/// [`failed_batches`](Self::failed_batches) alone. A store reads its
/// counters one by one without stopping its commit thread, so a batch
/// committing meanwhile may show in one field and not yet in another; each
/// histogram is consistent in itself (its last count is its total).
///
/// [`Default`] is a store that has committed nothing: the standard bounds
/// ([`BATCH_SIZE_BUCKETS`], [`SYNC_SECONDS_BUCKETS`]) with zero counts.
///
/// ```
/// use session_core::{BATCH_SIZE_BUCKETS, GroupCommitStats, cumulative_buckets};
///
/// // One batch of 1 write and two of 3: buckets le=1 and le=4.
/// let mut per_bucket = [0; BATCH_SIZE_BUCKETS.len()];
/// per_bucket[0] = 1;
/// per_bucket[2] = 2;
/// let mut stats = GroupCommitStats::default();
/// stats.batches = 3;
/// stats.writes = 7;
/// stats.batch_sizes = cumulative_buckets(&BATCH_SIZE_BUCKETS, &per_bucket);
/// assert_eq!(stats.batch_sizes[..3], [(1.0, 1), (2.0, 1), (4.0, 3)]);
/// assert_eq!(stats.batch_sizes.last(), Some(&(f64::INFINITY, 3)));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Batches written and synced: each one `write` and one `fdatasync` of
    /// the log. Equals the last count of both histograms.
    pub batches: u64,
    /// Writes those batches carried (records stored or deleted, events
    /// appended, sessions removed), not the frames they took: a batch's own
    /// commit frame, or the frame starting a new stream, is not a write.
    pub writes: u64,
    /// Batches by how many writes they carried: `(upper bound, batches with
    /// at most that many writes)`, cumulative, ascending, the bounds those
    /// of [`BATCH_SIZE_BUCKETS`], so the last is `f64::INFINITY` and its
    /// count is [`batches`](Self::batches). The sum of the observed sizes is
    /// [`writes`](Self::writes).
    pub batch_sizes: Vec<(f64, u64)>,
    /// Batches by how long their `fdatasync` took, in seconds, the same way:
    /// cumulative, the bounds those of [`SYNC_SECONDS_BUCKETS`]. Only the
    /// sync is timed, not the `write` before it.
    pub sync_seconds: Vec<(f64, u64)>,
    /// Seconds spent in those syncs in all: the histogram's sum.
    pub sync_seconds_sum: f64,
    /// Batches that failed: their `write` or their `fdatasync` returned an
    /// error (after which the store refuses writes until it has reopened its
    /// directory).
    pub failed_batches: u64,
}

impl Default for GroupCommitStats {
    fn default() -> Self {
        GroupCommitStats {
            batches: 0,
            writes: 0,
            batch_sizes: BATCH_SIZE_BUCKETS.iter().map(|&b| (b, 0)).collect(),
            sync_seconds: SYNC_SECONDS_BUCKETS.iter().map(|&b| (b, 0)).collect(),
            sync_seconds_sum: 0.0,
            failed_batches: 0,
        }
    }
}

/// The index of the bucket `value` falls in: the first of `bounds`
/// (ascending) at or above it. A value above every bound, or NaN, falls in
/// the last bucket (which should be `f64::INFINITY`); so does any value
/// when `bounds` is empty, as index 0.
///
/// ```
/// use session_core::{BATCH_SIZE_BUCKETS, bucket_index};
/// assert_eq!(bucket_index(&BATCH_SIZE_BUCKETS, 1.0), 0);
/// assert_eq!(bucket_index(&BATCH_SIZE_BUCKETS, 3.0), 2); // le=4
/// assert_eq!(bucket_index(&BATCH_SIZE_BUCKETS, 5000.0), 11); // le=+Inf
/// ```
pub fn bucket_index(bounds: &[f64], value: f64) -> usize {
    bounds
        .iter()
        .position(|&bound| value <= bound)
        .unwrap_or(bounds.len().saturating_sub(1))
}

/// Pairs `bounds` with the running totals of `counts` (observations per
/// bucket, as [`bucket_index`] assigns them): the cumulative histogram
/// buckets of [`GroupCommitStats`]. Pairs as many as the shorter of the two
/// holds; totals saturate at `u64::MAX`.
///
/// ```
/// use session_core::cumulative_buckets;
/// let buckets = cumulative_buckets(&[1.0, 2.0, f64::INFINITY], &[3, 0, 2]);
/// assert_eq!(buckets, [(1.0, 3), (2.0, 3), (f64::INFINITY, 5)]);
/// ```
pub fn cumulative_buckets(bounds: &[f64], counts: &[u64]) -> Vec<(f64, u64)> {
    let mut total = 0u64;
    bounds
        .iter()
        .zip(counts)
        .map(|(&bound, &count)| {
            total = total.saturating_add(count);
            (bound, total)
        })
        .collect()
}

/// The inverse of [`cumulative_buckets`]: the observations in each bucket
/// alone, for encoders that add them up themselves. A count below the one
/// before it (which a cumulative histogram never has) gives 0.
///
/// ```
/// use session_core::bucket_counts;
/// let buckets = [(1.0, 3), (2.0, 3), (f64::INFINITY, 5)];
/// assert_eq!(bucket_counts(&buckets), [(1.0, 3), (2.0, 0), (f64::INFINITY, 2)]);
/// ```
pub fn bucket_counts(cumulative: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut before = 0u64;
    cumulative
        .iter()
        .map(|&(bound, total)| {
            let count = total.saturating_sub(before);
            before = total;
            (bound, count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ascending(bounds: &[f64]) -> bool {
        bounds.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn bounds_ascend_and_end_at_infinity() {
        assert!(ascending(&BATCH_SIZE_BUCKETS));
        assert!(ascending(&SYNC_SECONDS_BUCKETS));
        assert_eq!(BATCH_SIZE_BUCKETS.last(), Some(&f64::INFINITY));
        assert_eq!(SYNC_SECONDS_BUCKETS.last(), Some(&f64::INFINITY));
        assert_eq!(BATCH_SIZE_BUCKETS[10], 1024.0);
        assert_eq!(SYNC_SECONDS_BUCKETS[0], 0.0001);
    }

    #[test]
    fn values_fall_in_the_first_bucket_at_or_above_them() {
        let b = &BATCH_SIZE_BUCKETS;
        assert_eq!(bucket_index(b, 0.0), 0);
        assert_eq!(bucket_index(b, 1.0), 0);
        assert_eq!(bucket_index(b, 2.0), 1);
        assert_eq!(bucket_index(b, 3.0), 2);
        assert_eq!(bucket_index(b, 1024.0), 10);
        assert_eq!(bucket_index(b, 1025.0), 11);
        assert_eq!(bucket_index(b, f64::INFINITY), 11);
        assert_eq!(bucket_index(b, f64::NAN), 11);
        let s = &SYNC_SECONDS_BUCKETS;
        assert_eq!(bucket_index(s, 0.00005), 0);
        assert_eq!(bucket_index(s, 0.0003), 2);
        assert_eq!(bucket_index(s, 1.0), 12);
        assert_eq!(bucket_index(s, 30.0), 13);
        assert_eq!(bucket_index(&[], 1.0), 0);
    }

    #[test]
    fn cumulative_buckets_add_up_and_bucket_counts_undo_them() {
        let counts = [2, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 3];
        let buckets = cumulative_buckets(&BATCH_SIZE_BUCKETS, &counts);
        assert_eq!(buckets.len(), BATCH_SIZE_BUCKETS.len());
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(buckets[..4], [(1.0, 2), (2.0, 2), (4.0, 7), (8.0, 8)]);
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 11)));
        let back: Vec<u64> = bucket_counts(&buckets).iter().map(|&(_, c)| c).collect();
        assert_eq!(back, counts);
        assert_eq!(cumulative_buckets(&[1.0, 2.0], &[1]), [(1.0, 1)]);
        assert_eq!(
            cumulative_buckets(&[1.0, f64::INFINITY], &[u64::MAX, 1]),
            [(1.0, u64::MAX), (f64::INFINITY, u64::MAX)]
        );
        assert_eq!(bucket_counts(&[(1.0, 5), (2.0, 3)]), [(1.0, 5), (2.0, 0)]);
    }

    #[test]
    fn the_default_is_nothing_committed_on_the_standard_bounds() {
        let stats = GroupCommitStats::default();
        assert_eq!(
            (stats.batches, stats.writes, stats.failed_batches),
            (0, 0, 0)
        );
        assert_eq!(stats.sync_seconds_sum, 0.0);
        let bounds: Vec<f64> = stats.batch_sizes.iter().map(|&(b, _)| b).collect();
        assert_eq!(bounds, BATCH_SIZE_BUCKETS);
        let bounds: Vec<f64> = stats.sync_seconds.iter().map(|&(b, _)| b).collect();
        assert_eq!(bounds, SYNC_SECONDS_BUCKETS);
        assert!(
            stats
                .batch_sizes
                .iter()
                .chain(&stats.sync_seconds)
                .all(|&(_, c)| c == 0)
        );
    }
}
