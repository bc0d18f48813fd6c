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
