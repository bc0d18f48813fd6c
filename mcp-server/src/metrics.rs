//! Prometheus metrics of a server, in a registry of its own (no process-wide
//! recorder: two servers in one process count apart).
//!
//! Recorded as things happen (cheap: an atomic add, after a hash lookup in
//! a small map for labelled families): requests by era, method and HTTP
//! status, and their duration to the response head; store operations by
//! store, backend and operation, their duration and errors; sessions
//! created, expired, closed and refused at the cap; task status changes;
//! open connections and SSE streams. Read at scrape time: live sessions,
//! handles and tasks (each store's `count`, bounded in time), and the file
//! stores' group-commit batch sizes and fsync durations.
//!
//! Served at `HttpConfig::metrics_path` (`/metrics`) in the Prometheus text
//! format, or on a port of its own (`McpServer::serve_metrics`).

use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use session_core::GroupCommitStats;

/// Labels of a request counted once answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    era: &'static str,
    method: &'static str,
    status: u16,
}

/// Labels of a request's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    era: &'static str,
    method: &'static str,
}

/// Labels of a store operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    backend: &'static str,
    operation: &'static str,
}

/// One label naming what happened or what is counted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// A task status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

/// What happens to sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionEvent {
    /// A session was created (`initialize` answered).
    Created,
    /// Sessions were swept because they expired.
    Expired,
    /// A session was ended (DELETE, or shutdown of a stdio server).
    Closed,
    /// `initialize` was refused at the cap on live sessions.
    Rejected,
}

impl SessionEvent {
    fn label(self) -> &'static str {
        match self {
            SessionEvent::Created => "created",
            SessionEvent::Expired => "expired",
            SessionEvent::Closed => "closed",
            SessionEvent::Rejected => "rejected",
        }
    }
}

/// Buckets of request and store durations, in seconds: 50 µs to about 1.6 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

/// The methods counted by name; any other is `other` (a client must not be
/// able to grow the label set).
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "session/get",
    "session/update",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/roots/list_changed",
];

/// The other values of the `method` label.
const OTHER_LABELS: &[&str] = &["GET", "DELETE", "batch", "response", "unread", "other"];

/// `method` as a label: itself if it is a method of the protocol, else
/// `other`.
pub(crate) fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The place of `label` among the `method` labels (protocol methods, then
/// the others); the string returned by [`method_label`] is found by its
/// address, without comparing text.
fn label_index(label: &'static str) -> Option<usize> {
    let all = || METHODS.iter().chain(OTHER_LABELS);
    all()
        .position(|l| std::ptr::eq(*l, label))
        .or_else(|| all().position(|l| *l == label))
}

/// The metrics of one era and method, once used: found by index, not by
/// hashing labels, on every request after the first.
#[derive(Debug, Default)]
struct RouteSlot {
    seconds: std::sync::OnceLock<Histogram>,
    /// The first statuses seen, each with its counter.
    counts: [std::sync::OnceLock<(u16, Counter)>; 4],
}

/// A server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// By era (legacy, modern), then method label.
    routes: Vec<RouteSlot>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sessions: Family<Kind, Counter>,
    task_changes: Family<Status, Counter>,
    store_seconds: Family<StoreLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<StoreLabels, Counter>,
    live: Family<Kind, Gauge>,
    connections: Gauge,
    sse_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `mcp_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let sessions = Family::<Kind, Counter>::default();
        let task_changes = Family::<Status, Counter>::default();
        let store_seconds =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let store_errors = Family::<StoreLabels, Counter>::default();
        let live = Family::<Kind, Gauge>::default();
        let connections = Gauge::default();
        let sse_streams = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by era (legacy, modern), JSON-RPC method (GET, DELETE and batch for those) and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head (for an SSE stream: to the stream's start), by era and method",
            request_seconds.clone(),
        );
        registry.register(
            "sessions",
            "Sessions created, expired, closed, and refused at the cap (kind)",
            sessions.clone(),
        );
        registry.register(
            "task_status_changes",
            "Task status changes written by this process, by the status reached",
            task_changes.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Store operations by store (sessions, handles, tasks, events), backend and operation",
            store_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed, by store, backend and operation",
            store_errors.clone(),
        );
        registry.register(
            "live",
            "Live sessions, handles and tasks (kind), counted in their stores when scraped",
            live.clone(),
        );
        registry.register(
            "open_connections",
            "HTTP connections open",
            connections.clone(),
        );
        registry.register(
            "sse_streams",
            "SSE response streams open",
            sse_streams.clone(),
        );
        let labels = METHODS.len() + OTHER_LABELS.len();
        Metrics {
            registry,
            routes: (0..2 * labels).map(|_| RouteSlot::default()).collect(),
            requests,
            request_seconds,
            sessions,
            task_changes,
            store_seconds,
            store_errors,
            live,
            connections,
            sse_streams,
        }
    }

    /// Counts a request answered with `status` after `elapsed`.
    pub(crate) fn request(
        &self,
        era: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            era,
            method,
            status,
        };
        let slot = label_index(method).and_then(|i| {
            let era_index = usize::from(era == "modern");
            self.routes
                .get(era_index * (METHODS.len() + OTHER_LABELS.len()) + i)
        });
        let Some(slot) = slot else {
            self.requests.get_or_create(&labels).inc();
            self.request_seconds
                .get_or_create(&RouteLabels { era, method })
                .observe(elapsed.as_secs_f64());
            return;
        };
        slot.seconds
            .get_or_init(|| {
                self.request_seconds
                    .get_or_create_owned(&RouteLabels { era, method })
            })
            .observe(elapsed.as_secs_f64());
        for cell in &slot.counts {
            let (seen, counter) =
                cell.get_or_init(|| (status, self.requests.get_or_create_owned(&labels)));
            if *seen == status {
                counter.inc();
                return;
            }
        }
        // More statuses than slots: by label.
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts `n` sessions to which `event` happened.
    pub(crate) fn sessions(&self, event: SessionEvent, n: u64) {
        if n > 0 {
            self.sessions
                .get_or_create(&Kind {
                    kind: event.label(),
                })
                .inc_by(n);
        }
    }

    /// Counts a task reaching `status`.
    pub(crate) fn task_status(&self, status: &'static str) {
        self.task_changes.get_or_create(&Status { status }).inc();
    }

    /// The duration histogram of a store operation, to keep and observe
    /// directly.
    pub(crate) fn store_histogram(
        &self,
        store: &'static str,
        backend: &'static str,
        operation: &'static str,
    ) -> Histogram {
        self.store_seconds.get_or_create_owned(&StoreLabels {
            store,
            backend,
            operation,
        })
    }

    /// Counts a store operation that failed.
    pub(crate) fn store_error(
        &self,
        store: &'static str,
        backend: &'static str,
        operation: &'static str,
    ) {
        self.store_errors
            .get_or_create(&StoreLabels {
                store,
                backend,
                operation,
            })
            .inc();
    }

    /// The open-connections gauge.
    pub(crate) fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// The open-SSE-streams gauge.
    pub(crate) fn sse_streams(&self) -> &Gauge {
        &self.sse_streams
    }

    /// Sets a live count read at scrape time.
    pub(crate) fn set_live(&self, kind: &'static str, count: usize) {
        self.live
            .get_or_create(&Kind { kind })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format, with the group-commit
    /// statistics of `stores` (name, statistics) appended.
    pub(crate) fn render(&self, stores: &[(&'static str, GroupCommitStats)]) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        if !stores.is_empty() {
            let mut commits = String::new();
            let mut registry = Registry::with_prefix("mcp");
            registry.register_collector(Box::new(GroupCommits(stores.to_vec())));
            let _ = prometheus_client::encoding::text::encode_registry(&mut commits, &registry);
            text.push_str(&commits);
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }
}

/// Reads one histogram (sum, count, per-bucket counts) from statistics.
type ReadHistogram = fn(&GroupCommitStats) -> (f64, u64, Vec<(f64, u64)>);

/// The group-commit statistics of the file stores, encoded at scrape time.
#[derive(Debug)]
struct GroupCommits(Vec<(&'static str, GroupCommitStats)>);

impl prometheus_client::collector::Collector for GroupCommits {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let families: [(&str, &str, ReadHistogram); 2] = [
            (
                "file_store_commit_batch_size",
                "Writes per group-committed batch of a file store (one write and one fdatasync each)",
                |s| (s.writes as f64, s.batches, per_bucket(&s.batch_sizes)),
            ),
            (
                "file_store_fsync_duration_seconds",
                "Duration of a file store's fdatasync per batch",
                |s| {
                    (
                        s.sync_seconds_sum,
                        s.sync_seconds.last().map_or(0, |b| b.1),
                        per_bucket(&s.sync_seconds),
                    )
                },
            ),
        ];
        for (name, help, read) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (store, stats) in &self.0 {
                let (sum, count, buckets) = read(stats);
                let labels = [("store", *store)];
                let metric = family.encode_family(&labels)?;
                Hist {
                    sum,
                    count,
                    buckets,
                }
                .encode(metric)?;
            }
        }
        Ok(())
    }
}

/// A histogram read from statistics, to encode.
#[derive(Debug)]
struct Hist {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Hist {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Cumulative buckets as the encoder wants them: a count per bucket, the
/// last bound `f64::MAX` for `+Inf`.
fn per_bucket(cumulative: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut before = 0;
    cumulative
        .iter()
        .map(|&(bound, total)| {
            let count = total.saturating_sub(before);
            before = total;
            (if bound.is_infinite() { f64::MAX } else { bound }, count)
        })
        .collect()
}

/// A store as the metrics name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreName {
    /// What it keeps: `sessions`, `handles`, `tasks`, `events`.
    pub(crate) store: &'static str,
    /// Which backend: `memory`, `file`, `redis`, or `custom`.
    pub(crate) backend: &'static str,
}
