//! Tasks when replicas share a store, and when workers are lost: a task
//! cancelled on one replica stops its worker on another; a task whose
//! worker died is failed (or re-run) by a live replica within its lease; a
//! finished task's result survives `kill -9`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Modern, TestServer, eventually};
use mcp_server::{HttpConfig, McpServer, ServerConfig, TaskSupport, demo, tool};
use serde_json::{Map, Value, json};
use session_core::EventStore;
use session_core::wire::CallToolResult;
use session_store::testkit::redis::RedisServer;
use session_store::{MemoryEventStore, RedisOptions, RedisStore};

const EXT: &str = "io.modelcontextprotocol/tasks";

/// A modern client that declares the extension.
fn declaring(url: &str) -> Modern {
    let mut client = Modern::new(url);
    client.capabilities = json!({"extensions": {EXT: {}}});
    client
}

/// `tasks/*` on `id`, with `Mcp-Name` mirroring it.
async fn task_call(client: &Modern, method: &str, mut params: Value) -> common::Answer {
    params["_meta"] = client.envelope();
    let name = params["taskId"].as_str().map(str::to_string);
    let body = json!({"jsonrpc": "2.0", "id": client.id(), "method": method, "params": params});
    Modern::send(client.raw(method, name.as_deref(), &body)).await
}

async fn get(client: &Modern, id: &str) -> Value {
    let answer = task_call(client, "tasks/get", json!({"taskId": id})).await;
    answer.result().clone()
}

/// Calls `name` and returns the new task's id.
async fn create(client: &Modern, name: &str, args: Value) -> String {
    let created = client.tool(name, args).await;
    assert_eq!(created["resultType"], "task", "{created}");
    created["taskId"].as_str().unwrap().to_string()
}

/// An in-process replica on `redis` sharing sessions, handles and tasks
/// the way the binary does, with the demo tools and `stoppable` (counts
/// its steps in `steps` until cancelled). `shared_events`: whether the
/// replica follows the others' changes (otherwise only the store tells it).
fn replica(redis: &RedisServer, steps: Arc<AtomicU64>, shared_events: bool) -> McpServer {
    let store = RedisStore::connect(&redis.url(), RedisOptions::default()).unwrap();
    let events: Arc<dyn EventStore> = if shared_events {
        Arc::new(store.event_store())
    } else {
        Arc::new(MemoryEventStore::new(256, 64))
    };
    let handles = store.with_prefix(&format!("{}:h", store.prefix())).unwrap();
    let tasks = store.with_prefix(&format!("{}:t", store.prefix())).unwrap();
    let mut config = ServerConfig::default();
    // The worker's own look at the store comes rarely: a stop within a
    // second is the change feed's doing.
    config.task_poll_interval = if shared_events {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(200)
    };
    demo::register(McpServer::builder())
        .tool(
            tool(
                "stoppable",
                "Works until cancelled",
                json!({"type": "object"}),
            ),
            move |_, _: Map<String, Value>| {
                let steps = steps.clone();
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        steps.fetch_add(1, Ordering::SeqCst);
                    }
                    #[allow(unreachable_code)]
                    Ok(CallToolResult::text("never"))
                }
            },
        )
        .task_support("stoppable", TaskSupport::WhenDeclared)
        .store(Arc::new(store))
        .handle_store(Arc::new(handles))
        .task_store(Arc::new(tasks))
        .event_store(events)
        .config(config)
        .build()
}

async fn cancelled_on_b_stops_the_worker_on_a(shared_events: bool, within: Duration) {
    let redis = RedisServer::start();
    let steps = Arc::new(AtomicU64::new(0));
    let a = TestServer::serve(
        replica(&redis, steps.clone(), shared_events),
        HttpConfig::default(),
    )
    .await;
    let b = TestServer::serve(
        replica(&redis, Arc::new(AtomicU64::new(0)), shared_events),
        HttpConfig::default(),
    )
    .await;
    let on_a = declaring(&a.url);
    let mut on_b = on_a.clone();
    on_b.url = b.url.clone();

    let id = create(&on_a, "stoppable", json!({})).await;
    eventually("the work to begin on A", || async {
        steps.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(
        get(&on_b, &id).await["status"],
        "working",
        "B sees A's task"
    );
    assert_eq!(a.server.tasks_running(), 1);
    assert_eq!(b.server.tasks_running(), 0);

    let cancelled_at = tokio::time::Instant::now();
    let ack = task_call(&on_b, "tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(ack.result()["resultType"], "complete");
    loop {
        if a.server.tasks_running() == 0 {
            break;
        }
        assert!(
            cancelled_at.elapsed() < within,
            "A's worker still runs {:?} after the cancel on B",
            cancelled_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = steps.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(steps.load(Ordering::SeqCst), stopped, "A still works");
    assert_eq!(get(&on_a, &id).await["status"], "cancelled");
    assert_eq!(get(&on_b, &id).await["status"], "cancelled");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_on_one_replica_stops_its_worker_on_another_within_a_second() {
    cancelled_on_b_stops_the_worker_on_a(true, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_hears_nothing_sees_the_cancellation_in_the_store() {
    // No shared change feed: the worker's own periodic look (every 200 ms
    // here) finds the task cancelled.
    cancelled_on_b_stops_the_worker_on_a(false, Duration::from_secs(1)).await;
}

/// Polls task `id` until `done` holds of it; every read must find the task
/// (never "not found"). Panics after `within`.
async fn until_task(
    client: &Modern,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = task_call(client, "tasks/get", json!({"taskId": id})).await;
        let response = answer.response().clone();
        assert!(
            response.get("error").is_none(),
            "task {id} must always be found: {response}"
        );
        let task = response["result"].clone();
        if done(&task) {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} not there in {within:?}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |task| task["status"] == status
}

/// The lease the binaries run with in these tests (renewed every third).
const LEASE: &str = "1s";
/// A lapsed lease is swept within a third of it; a restart and a slow,
/// shared machine get the rest.
const LAPSE_WITHIN: Duration = Duration::from_secs(5);

/// Checks that `task` failed because its worker was lost.
fn assert_lost(task: &Value) {
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["code"], -32603, "{task}");
    let message = task["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("worker was lost"), "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_finished_tasks_keep_their_results_and_interrupted_ones_fail_within_the_lease()
{
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().display());
    let args = ["--store", store.as_str(), "--task-lease", LEASE];
    let server = common::start(&args);
    let client = declaring(&server.url);

    // Finished well before the kill, and just before it.
    let mut finished = Vec::new();
    for steps in [1, 2] {
        let id = create(&client, "slow", json!({"steps": steps, "delay_ms": 30})).await;
        let task = until_task(&client, &id, Duration::from_secs(10), is("completed")).await;
        finished.push((id, task));
    }
    // Running at the kill.
    let mut running = Vec::new();
    for _ in 0..2 {
        let id = create(&client, "slow", json!({"steps": 10_000, "delay_ms": 50})).await;
        running.push(id);
    }
    let last = create(&client, "slow", json!({"steps": 1, "delay_ms": 20})).await;
    let last_task = until_task(&client, &last, Duration::from_secs(10), is("completed")).await;
    finished.push((last, last_task));
    for id in &running {
        until_task(&client, id, Duration::from_secs(10), |t| {
            t["statusMessage"]
                .as_str()
                .is_some_and(|m| m.starts_with("step"))
        })
        .await;
    }
    drop(server); // SIGKILL

    let server = common::start(&args);
    let client = declaring(&server.url);
    for (id, before) in &finished {
        let after = until_task(&client, id, Duration::ZERO, |_| true).await;
        assert_eq!(
            &after, before,
            "a finished task reads the same after kill -9"
        );
        assert!(
            after["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("completed"))
        );
    }
    for id in &running {
        let task = until_task(&client, id, LAPSE_WITHIN, |t| t["status"] != "working").await;
        assert_lost(&task);
    }
    // Still the same once everything settled.
    for (id, before) in &finished {
        assert_eq!(&get(&client, id).await, before);
    }
}

fn redis_replica(redis: &RedisServer, extra: &[&str]) -> common::Process {
    let url = redis.url();
    let mut args = vec!["--store", url.as_str(), "--task-lease", LEASE];
    args.extend_from_slice(extra);
    common::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_task_has_its_task_failed_by_another_within_the_lease() {
    let redis = RedisServer::start();
    let a = redis_replica(&redis, &[]);
    let b = redis_replica(&redis, &[]);
    let on_a = declaring(&a.url);
    let on_b = declaring(&b.url);
    let id = create(&on_a, "slow", json!({"steps": 10_000, "delay_ms": 50})).await;
    until_task(&on_b, &id, Duration::from_secs(10), |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("step"))
    })
    .await;
    drop(a); // SIGKILL
    let killed = tokio::time::Instant::now();
    let task = until_task(&on_b, &id, LAPSE_WITHIN, |t| t["status"] != "working").await;
    assert_lost(&task);
    eprintln!("the task failed {:?} after the kill", killed.elapsed());
    // The lease beside the task can never be named by a client.
    let lease = id.replace("task_", "lease_");
    let answer = task_call(&on_b, "tasks/get", json!({"taskId": lease})).await;
    assert_eq!(answer.code(), -32602, "{:?}", answer.messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_safe_task_whose_replica_was_killed_is_run_again_by_another_and_completes() {
    let redis = RedisServer::start();
    let a = redis_replica(&redis, &["--rerun-safe", "slow"]);
    let b = redis_replica(&redis, &["--rerun-safe", "slow"]);
    let on_a = declaring(&a.url);
    let on_b = declaring(&b.url);
    let id = create(&on_a, "slow", json!({"steps": 30, "delay_ms": 50})).await;
    until_task(&on_b, &id, Duration::from_secs(10), |t| {
        t["statusMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("step"))
    })
    .await;
    drop(a); // SIGKILL
    let task = until_task(&on_b, &id, LAPSE_WITHIN + Duration::from_secs(5), |t| {
        t["status"] != "working"
    })
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["content"][0]["text"], "completed 30 steps");
}
