//! Store benchmarks: create, get, update and sweep for each store, on one task
//! and on 64 concurrent tasks; the file store's durable update throughput
//! beside one fsync per write, for sessions and for handles (the demo
//! counter's writes); reopening 100,000 sessions; and the resident
//! bytes per idle session of `MemoryStore`.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p session-store --bench store`).

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use session_core::Clock;
use session_core::{ExpiryPolicy, NewSession, SessionId, SessionRecord, SessionStore, Timestamp};
use session_store::testkit::redis::RedisServer;
use session_store::{FileStore, MemoryStore, RedisOptions, RedisStore, SystemClock};
use tokio::runtime::Runtime;

/// The allocator the `mcp-server` binary ships with (its `jemalloc`
/// feature), so that the stores are measured as the server runs them. On
/// glibc's allocator the durable-update benches spend a fifth of the
/// writers' time growing per-thread heaps (`mprotect`), see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PREFILL: usize = 10_000;
/// Idle timeout of the sessions the sweep benchmark expires; every other
/// session has the default 30 minutes.
const SWEPT_IDLE: Duration = Duration::from_secs(60);
const TASKS: u64 = 64;

fn record(now: Timestamp) -> SessionRecord {
    record_with(now, ExpiryPolicy::default())
}

fn record_with(now: Timestamp, expiry: ExpiryPolicy) -> SessionRecord {
    SessionRecord::create(SessionId::generate(), NewSession::new(), now, expiry)
}

/// The wall clock. Every record is created at the real time, never at a fixed
/// instant: Redis expires keys at their deadline (plus grace) in real time, and
/// the sweep benchmark relies on the prefilled sessions not being due, so a
/// fixed date would make the benchmarks break once it passes.
fn now() -> Timestamp {
    SystemClock.now()
}

fn single() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store of one kind, with `PREFILL` sessions already in it.
struct Subject {
    store: Arc<dyn SessionStore>,
    ids: Vec<SessionId>,
    /// When the prefilled sessions were created (they expire 30 minutes on).
    t0: Timestamp,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

fn fresh(rt: &Runtime, kind: &'static str) -> Subject {
    match kind {
        "memory" => prefill(rt, Arc::new(MemoryStore::new()), None),
        "redis" => {
            let server = RedisServer::start();
            let store = rt.block_on(async {
                RedisStore::connect(&server.url(), RedisOptions::default()).unwrap()
            });
            let mut subject = prefill(rt, Arc::new(store), None);
            subject._redis = Some(server);
            subject
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let file: Arc<dyn SessionStore> = Arc::new(FileStore::open(dir.path()).unwrap());
            prefill(rt, file, Some(dir))
        }
    }
}

fn prefill(rt: &Runtime, store: Arc<dyn SessionStore>, dir: Option<tempfile::TempDir>) -> Subject {
    let t0 = now();
    let records: Vec<_> = (0..PREFILL).map(|_| record(t0)).collect();
    let ids = records.iter().map(|r| r.id().clone()).collect();
    rt.block_on(concurrently(
        records,
        |r, store: Arc<dyn SessionStore>| async move {
            store.insert(&r).await.unwrap();
        },
        store.clone(),
    ));
    Subject {
        store,
        ids,
        t0,
        _dir: dir,
        _redis: None,
    }
}

/// Runs `op` on every item, spread over `TASKS` tasks.
async fn concurrently<T, F, Fut>(items: Vec<T>, op: F, store: Arc<dyn SessionStore>)
where
    T: Send + 'static,
    F: Fn(T, Arc<dyn SessionStore>) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut chunks: Vec<Vec<T>> = (0..TASKS).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        chunks[i % TASKS as usize].push(item);
    }
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let store = store.clone();
            tokio::spawn(async move {
                for item in chunk {
                    op(item, store.clone()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
    group.throughput(Throughput::Elements(1));
    if name == "file" || name == "redis" {
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        group.warm_up_time(Duration::from_millis(500));
    } else {
        group.measurement_time(Duration::from_secs(3));
    }
}

/// One benchmark per operation, on one task and on 64 tasks.
fn operations(c: &mut Criterion) {
    for (mode, rt) in [("1-task", single()), ("64-tasks", multi())] {
        for kind in ["memory", "file", "redis"] {
            let mut group = c.benchmark_group(format!("{kind}/{mode}"));
            configure(&mut group, kind);
            let parallel = mode == "64-tasks";
            // A fresh store for each operation, so one benchmark's leftovers
            // (a table grown by millions of inserts) do not slow the next.
            let subject = fresh(&rt, kind);
            let store = &subject.store;

            group.bench_function("create", |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    async move {
                        let records: Vec<_> = (0..iters).map(|_| record(now())).collect();
                        let ids: Vec<_> = records.iter().map(|r| r.id().clone()).collect();
                        let start = Instant::now();
                        if parallel {
                            concurrently(
                                records,
                                |r, s| async move { s.insert(&r).await.unwrap() },
                                store.clone(),
                            )
                            .await;
                        } else {
                            for r in &records {
                                store.insert(r).await.unwrap();
                            }
                        }
                        let elapsed = start.elapsed();
                        concurrently(
                            ids,
                            |id, s| async move {
                                s.delete(&id).await.unwrap();
                            },
                            store,
                        )
                        .await;
                        elapsed
                    }
                })
            });

            let subject = fresh(&rt, kind);
            let (store, ids) = (&subject.store, &subject.ids);
            group.bench_function("get", |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (store, ids) = (store.clone(), ids.clone());
                    async move {
                        let picks: Vec<_> = (0..iters as usize).map(|i| ids[(i * 7919) % ids.len()].clone()).collect();
                        let start = Instant::now();
                        if parallel {
                            concurrently(picks, |id, s| async move { assert!(s.load(&id).await.unwrap().is_some()) }, store).await;
                        } else {
                            for id in &picks {
                                assert!(store.load(id).await.unwrap().is_some());
                            }
                        }
                        start.elapsed()
                    }
                })
            });

            let subject = fresh(&rt, kind);
            let (store, ids, t0) = (&subject.store, &subject.ids, subject.t0);
            group.bench_function("update", |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (store, ids) = (store.clone(), ids.clone());
                    async move {
                        // Each task rewrites its own sessions, so no write conflicts.
                        let per_session = iters.div_ceil(ids.len() as u64).max(1);
                        let work: Vec<_> = ids.iter().take(iters as usize).cloned().map(|id| (id, per_session)).collect();
                        let total = work.len() as u64 * per_session;
                        let start = Instant::now();
                        let update = move |(id, n): (SessionId, u64), s: Arc<dyn SessionStore>| async move {
                            let mut current = s.load(&id).await.unwrap().unwrap();
                            for _ in 0..n {
                                let next = current.begin_write(t0).unwrap().finish();
                                s.compare_and_swap(&next, current.version()).await.unwrap();
                                current = next;
                            }
                        };
                        if parallel {
                            concurrently(work, update, store).await;
                        } else {
                            for item in work {
                                update(item, store.clone()).await;
                            }
                        }
                        // Scale to the iterations asked for.
                        start.elapsed().mul_f64(iters as f64 / total as f64)
                    }
                })
            });

            let subject = fresh(&rt, kind);
            let (store, t0) = (&subject.store, subject.t0);
            group.bench_function("sweep", |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    async move {
                        // `iters` sessions with a one-minute idle timeout,
                        // created now and swept one minute on (past their
                        // deadline, before Redis's own expiry), among the
                        // prefilled ones, which stay live for 30 minutes
                        // after `t0`. Only elapsed time matters, not the date.
                        let created = now();
                        let records: Vec<_> = (0..iters)
                            .map(|_| record_with(created, ExpiryPolicy::idle(SWEPT_IDLE)))
                            .collect();
                        concurrently(
                            records,
                            |r, s| async move { s.insert(&r).await.unwrap() },
                            store.clone(),
                        )
                        .await;
                        let sweep_at = created.saturating_add(SWEPT_IDLE);
                        assert!(
                            sweep_at < t0.saturating_add(ExpiryPolicy::DEFAULT_IDLE_TIMEOUT),
                            "the sweep benchmark ran so long that the prefilled sessions are due"
                        );
                        let start = Instant::now();
                        let mut removed = 0;
                        loop {
                            let batch = store.remove_expired(sweep_at, 1000).await.unwrap().len();
                            removed += batch;
                            if batch < 1000 {
                                break;
                            }
                        }
                        assert_eq!(removed as u64, iters);
                        start.elapsed()
                    }
                })
            });
            group.finish();
        }
    }
}

/// Durable update throughput of the file store with 1 and with 64 concurrent
/// writers, beside appending a record and calling fdatasync once per write.
fn durability(c: &mut Criterion) {
    let rt = multi();
    let mut group = c.benchmark_group("file/durable-update");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    let dir = tempfile::tempdir().unwrap();
    let frame = vec![b'x'; 320];
    group.bench_function("fsync-per-write", |b| {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("baseline.log"))
            .unwrap();
        b.iter(|| {
            file.write_all(&frame).unwrap();
            file.sync_data().unwrap();
        })
    });

    let subject = prefill(
        &rt,
        Arc::new(FileStore::open(dir.path().join("store")).unwrap()),
        None,
    );
    for writers in [1u64, 64] {
        group.bench_function(format!("writers={writers}"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = subject.store.clone();
                let ids = subject.ids.clone();
                let t0 = subject.t0;
                async move {
                    let per_writer = iters.div_ceil(writers).max(1);
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..writers as usize)
                        .map(|w| {
                            let store = store.clone();
                            let id = ids[w].clone();
                            tokio::spawn(async move {
                                let mut current = store.load(&id).await.unwrap().unwrap();
                                for _ in 0..per_writer {
                                    let next = current.begin_write(t0).unwrap().finish();
                                    store
                                        .compare_and_swap(&next, current.version())
                                        .await
                                        .unwrap();
                                    current = next;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_writer * writers) as f64)
                }
            })
        });
    }
    // What the demo `counter` does with its handle on every call, through
    // `Handles` (a principal check and a compare-and-swap that rereads and
    // retries), 64 tasks each on a handle of its own.
    let handles = Arc::new(session_core::Handles::new(
        Arc::new(FileStore::open(dir.path().join("handles")).unwrap()),
        Arc::new(SystemClock),
        session_core::ManagerConfig::default(),
    ));
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..TASKS {
            let minted = handles
                .mint("ctr", Some("bench"), session_core::SessionState::new())
                .await
                .unwrap();
            ids.push(minted.id().to_string());
        }
        ids
    });
    group.bench_function("handle-counter-writers=64", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let handles = handles.clone();
            let ids = ids.clone();
            async move {
                let per_writer = iters.div_ceil(TASKS).max(1);
                let start = Instant::now();
                let tasks: Vec<_> = ids
                    .into_iter()
                    .map(|id| {
                        let handles = handles.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_writer {
                                handles
                                    .update(&id, Some("bench"), |state| {
                                        let n = state
                                            .get("counter")
                                            .and_then(serde_json::Value::as_i64)
                                            .unwrap_or(0);
                                        state.insert("counter".into(), serde_json::json!(n + 1));
                                    })
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_writer * TASKS) as f64)
            }
        })
    });
    // A task's life through `Tasks` (issue 13): created (durable before a
    // server answers CreateTaskResult), then completed with its result,
    // 64 tasks at once: two group-committed writes per task.
    let tasks = Arc::new(session_core::Tasks::new(
        Arc::new(FileStore::open(dir.path().join("tasks")).unwrap()),
        Arc::new(SystemClock),
        session_core::ManagerConfig::default()
            .idle_timeout(Duration::from_secs(3600))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .max_sessions(None),
    ));
    group.bench_function("task-create-and-complete-writers=64", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let tasks = tasks.clone();
            async move {
                let per_writer = iters.div_ceil(TASKS).max(1);
                let start = Instant::now();
                let writers: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let tasks = tasks.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_writer {
                                let task = tasks.create(Some("bench"), None, None).await.unwrap();
                                let mut result = serde_json::Map::new();
                                result.insert("content".into(), serde_json::json!([]));
                                tasks
                                    .complete(task.id(), Some("bench"), result)
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for writer in writers {
                    writer.await.unwrap();
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_writer * TASKS) as f64)
            }
        })
    });
    group.finish();
}

/// Opening a directory that holds 100,000 sessions.
fn reopen(c: &mut Criterion) {
    let rt = multi();
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn SessionStore> = Arc::new(FileStore::open(dir.path()).unwrap());
        let t0 = now();
        let records: Vec<_> = (0..100_000).map(|_| record(t0)).collect();
        rt.block_on(concurrently(
            records,
            |r, s| async move { s.insert(&r).await.unwrap() },
            store,
        ));
    }
    let mut group = c.benchmark_group("file/reopen");
    group.sample_size(10);
    group.bench_function("100k-sessions", |b| {
        b.iter(|| {
            let store = FileStore::open(dir.path()).unwrap();
            assert_eq!(store.recovery().sessions, 100_000);
        })
    });
    group.finish();
}

/// Resident bytes per idle session in a `MemoryStore`, from the growth of the
/// process's resident set over 100,000 sessions with empty state.
fn memory_per_session() {
    const N: usize = 100_000;
    let rt = single();
    let store = MemoryStore::new();
    let before = resident_bytes();
    let t0 = now();
    rt.block_on(async {
        for _ in 0..N {
            store.insert(&record(t0)).await.unwrap();
        }
    });
    let after = resident_bytes();
    let per_session = (after - before) as f64 / N as f64;
    let fields = std::mem::size_of::<SessionRecord>() + 32;
    println!(
        "memory/bytes-per-idle-session: {per_session:.0} bytes resident per session \
         ({:.0} beyond the {fields} bytes of id and record fields), over {N} sessions",
        per_session - fields as f64
    );
    drop(store);
}

fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Whether criterion measures (`cargo bench`) rather than runs each
/// benchmark once as a test (`cargo test --benches`).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `redis-benchmark` against a server started the same way as the store
/// benchmarks' one: the ceiling of what one Redis on this machine answers.
fn redis_ceiling() {
    let server = RedisServer::start();
    for clients in ["1", "64"] {
        let output = std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
            .args(["-q", "-n", "100000", "-c", clients, "-t", "set,get"])
            .output();
        match output {
            Ok(output) => {
                for line in String::from_utf8_lossy(&output.stdout).lines() {
                    let line = line.rsplit('\r').next().unwrap_or(line).trim();
                    if !line.is_empty() {
                        println!("redis-ceiling: redis-benchmark -c {clients}: {line}");
                    }
                }
            }
            Err(e) => println!("redis-ceiling: redis-benchmark did not run: {e}"),
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    if measuring() {
        memory_per_session();
        redis_ceiling();
    }
    operations(&mut c);
    durability(&mut c);
    if measuring() {
        reopen(&mut c);
    }
    c.final_summary();
}
