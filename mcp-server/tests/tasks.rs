//! The tasks extension (`io.modelcontextprotocol/tasks`) over real HTTP:
//! a tool call answered with a durable task, polled with `tasks/get`,
//! answered with `tasks/update`, cancelled with `tasks/cancel`; no task for
//! a client that did not declare the extension; bad input refused without
//! a change; `notifications/tasks` on `subscriptions/listen`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::middleware;
use common::{Client, Modern, eventually, read_sse};
use mcp_server::{
    HttpConfig, InputRequest, McpServer, RequestContext, ServerConfig, TaskSupport, demo, tool,
};
use serde_json::{Map, Value, json};
use session_core::wire::{CallToolResult, ErrorObject};
use session_core::{SessionId, SessionStore};
use session_store::MemoryStore;

const EXT: &str = "io.modelcontextprotocol/tasks";

struct Served {
    url: String,
    server: McpServer,
    /// Steps taken by `stoppable` so far.
    steps: Arc<AtomicU64>,
}

async fn start() -> Served {
    start_with(ServerConfig::default(), Arc::new(MemoryStore::default())).await
}

/// [`start`] with `config`, its tasks kept in `task_store`.
async fn start_with(config: ServerConfig, task_store: Arc<dyn SessionStore>) -> Served {
    let steps = Arc::new(AtomicU64::new(0));
    let counted = steps.clone();
    let server = demo::register(McpServer::builder())
        .tool(
            tool("ask", "Asks a name in the task", json!({"type": "object"})),
            |ctx: RequestContext, _: Map<String, Value>| async move {
                let answer = ctx
                    .input(
                        "name",
                        InputRequest::elicit(
                            "Your name?",
                            json!({"type": "object", "properties": {"name": {"type": "string"}}}),
                        ),
                    )
                    .await?;
                Ok(CallToolResult::text(format!(
                    "Hello {}",
                    answer["content"]["name"].as_str().unwrap_or("?")
                )))
            },
        )
        .task_support("ask", TaskSupport::WhenDeclared)
        .tool(
            tool("must_task", "Only as a task", json!({"type": "object"})),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(CallToolResult::text("done"))
            },
        )
        .task_support("must_task", TaskSupport::Always)
        .tool(
            tool(
                "stoppable",
                "Works until cancelled",
                json!({"type": "object"}),
            ),
            move |_, _| {
                let steps = counted.clone();
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        steps.fetch_add(1, Ordering::SeqCst);
                    }
                }
            },
        )
        .task_support("stoppable", TaskSupport::WhenDeclared)
        .tool(
            tool(
                "broken",
                "Fails with a JSON-RPC error",
                json!({"type": "object"}),
            ),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(ErrorObject::new(-32603, "it broke"))
            },
        )
        .task_support("broken", TaskSupport::WhenDeclared)
        .task_store(task_store)
        .config(config)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server
        .router(HttpConfig::default(), addr)
        .layer(middleware::from_fn(common::authenticate));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Served {
        url: format!("http://{addr}/mcp"),
        server,
        steps,
    }
}

/// A modern client that declares the extension (and elicitation).
fn declaring(url: &str) -> Modern {
    let mut client = Modern::new(url);
    client.capabilities = json!({"elicitation": {}, "extensions": {EXT: {}}});
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
    task_call(client, "tasks/get", json!({"taskId": id}))
        .await
        .result()
        .clone()
}

/// Polls until the task's status is `status`.
async fn until(client: &Modern, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task = get(client, id).await;
        if task["status"] == status {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} never reached {status}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `name` and returns the new task's id (panics on anything else).
async fn create(client: &Modern, name: &str, args: Value) -> String {
    let created = client.tool(name, args).await;
    assert_eq!(created["resultType"], "task", "{created}");
    created["taskId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_task_is_created_polled_and_completed_with_its_result() {
    let served = start().await;
    let client = declaring(&served.url);
    let created = client
        .tool("slow", json!({"steps": 3, "delay_ms": 60}))
        .await;
    assert_eq!(created["resultType"], "task", "{created}");
    assert_eq!(created["status"], "working");
    let id = created["taskId"].as_str().unwrap().to_string();
    assert!(id.starts_with("task_"), "{id}");
    assert!(created["ttlMs"].as_u64().unwrap() > 0);
    assert!(created["pollIntervalMs"].as_u64().unwrap() > 0);
    assert!(created["createdAt"].is_string() && created["lastUpdatedAt"].is_string());
    for absent in [
        "result",
        "error",
        "inputRequests",
        "requestState",
        "content",
    ] {
        assert!(created.get(absent).is_none(), "{absent} in {created}");
    }
    // Durable when answered: readable at once.
    let now = get(&client, &id).await;
    assert_eq!(now["taskId"], id.as_str());
    assert_eq!(now["resultType"], "complete");
    let done = until(&client, &id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "completed 3 steps");
    assert!(done.get("error").is_none());
    // Still readable later, unchanged.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = get(&client, &id).await;
    assert_eq!(again["result"], done["result"]);
    assert_eq!(again["lastUpdatedAt"], done["lastUpdatedAt"]);
    eventually("the worker to end", || async {
        served.server.tasks_running() == 0
    })
    .await;
}

#[tokio::test]
async fn a_json_rpc_error_fails_the_task_and_a_tool_error_completes_it() {
    let served = start().await;
    let client = declaring(&served.url);
    let id = create(&client, "broken", json!({})).await;
    let failed = until(&client, &id, "failed").await;
    assert_eq!(failed["error"]["code"], -32603);
    assert_eq!(failed["error"]["message"], "it broke");
    assert!(failed.get("result").is_none());
    // `slow` with out-of-range arguments answers a tool error at once: no task.
    let bad = client
        .tool("slow", json!({"steps": 100_000, "delay_ms": 1}))
        .await;
    assert_eq!(bad["resultType"], "complete");
    assert_eq!(bad["isError"], true);
}

#[tokio::test]
async fn no_task_for_a_request_that_did_not_declare_the_extension() {
    let served = start().await;
    let plain = Modern::new(&served.url);
    let result = plain
        .tool("slow", json!({"steps": 2, "delay_ms": 10}))
        .await;
    assert_eq!(result["resultType"], "complete", "{result}");
    assert!(result.get("taskId").is_none());
    assert_eq!(result["content"][0]["text"], "completed 2 steps");
    // A declaration elsewhere does not count: only the request's own.
    let answer = task_call(&plain, "tasks/get", json!({"taskId": "task_0"})).await;
    assert_eq!(answer.code(), -32021);
    // A legacy session never gets one either.
    let mut legacy = Client::new(&served.url);
    legacy.connect().await;
    let result = legacy
        .tool("slow", json!({"steps": 1, "delay_ms": 10}))
        .await;
    assert!(result.get("taskId").is_none(), "{result}");
    assert_eq!(result["content"][0]["text"], "completed 1 steps");
    // `tasks/*` do not exist there.
    let answer = legacy.call("tasks/get", json!({"taskId": "task_0"})).await;
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    assert_eq!(served.server.tasks_running(), 0);
}

#[tokio::test]
async fn an_always_task_tool_needs_the_extension() {
    let served = start().await;
    let plain = Modern::new(&served.url);
    let answer = plain
        .call("tools/call", json!({"name": "must_task", "arguments": {}}))
        .await;
    assert_eq!(answer.code(), -32021);
    let data = &answer.response()["error"]["data"];
    assert_eq!(data["requiredCapabilities"]["extensions"][EXT], json!({}));
    let client = declaring(&served.url);
    let id = create(&client, "must_task", json!({})).await;
    let done = until(&client, &id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "done");
    // server/discover advertises the extension.
    let discover = plain.call("server/discover", json!({})).await;
    assert_eq!(
        discover.result()["capabilities"]["extensions"][EXT],
        json!({})
    );
}

#[tokio::test]
async fn input_required_is_answered_with_tasks_update() {
    let served = start().await;
    let client = declaring(&served.url);
    let id = create(&client, "ask", json!({})).await;
    let waiting = until(&client, &id, "input_required").await;
    assert_eq!(
        waiting["inputRequests"]["name"]["method"],
        "elicitation/create"
    );
    // Unknown keys are ignored, acknowledged all the same.
    let ack = task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {"other": {"action": "accept"}}}),
    )
    .await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert!(ack.result().get("taskId").is_none());
    let still = get(&client, &id).await;
    assert_eq!(still["status"], "input_required");
    assert_eq!(still["lastUpdatedAt"], waiting["lastUpdatedAt"]);
    let ack = task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {
            "name": {"action": "accept", "content": {"name": "Ada"}}
        }}),
    )
    .await;
    assert_eq!(ack.result()["resultType"], "complete");
    let done = until(&client, &id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello Ada");
    // The key was answered, the task is terminal: a second answer changes
    // nothing.
    let ack = task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {
            "name": {"action": "accept", "content": {"name": "Eve"}}
        }}),
    )
    .await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(get(&client, &id).await, get(&client, &id).await);
    assert_eq!(get(&client, &id).await["result"], done["result"]);
}

#[tokio::test]
async fn cancel_stops_the_worker_and_a_terminal_task_stays_as_it_is() {
    let served = start().await;
    let client = declaring(&served.url);
    let id = create(&client, "stoppable", json!({})).await;
    eventually("the work to begin", || async {
        served.steps.load(Ordering::SeqCst) > 0
    })
    .await;
    let ack = task_call(&client, "tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert!(ack.result().get("status").is_none());
    let cancelled = get(&client, &id).await;
    assert_eq!(cancelled["status"], "cancelled");
    eventually("the worker to stop", || async {
        served.server.tasks_running() == 0
    })
    .await;
    let steps = served.steps.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(served.steps.load(Ordering::SeqCst), steps, "still working");
    // Cancel twice: acknowledged, nothing changes.
    let ack = task_call(&client, "tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(get(&client, &id).await, cancelled);
    // A completed task is not cancelled.
    let done_id = create(&client, "must_task", json!({})).await;
    let done = until(&client, &done_id, "completed").await;
    let ack = task_call(&client, "tasks/cancel", json!({"taskId": done_id})).await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(get(&client, &done_id).await, done);
    // Nor is an answer taken by a cancelled one.
    let ask = create(&client, "ask", json!({})).await;
    until(&client, &ask, "input_required").await;
    task_call(&client, "tasks/cancel", json!({"taskId": ask})).await;
    let ended = get(&client, &ask).await;
    assert_eq!(ended["status"], "cancelled");
    assert!(ended.get("inputRequests").is_none());
    let ack = task_call(
        &client,
        "tasks/update",
        json!({"taskId": ask, "inputResponses": {"name": {"action": "accept"}}}),
    )
    .await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(get(&client, &ask).await, ended);
}

#[tokio::test]
async fn bad_task_ids_are_refused_without_a_change() {
    let served = start().await;
    let mut bob = declaring(&served.url);
    bob.headers.push(("x-user", "bob".into()));
    let mut alice = declaring(&served.url);
    alice.headers.push(("x-user", "alice".into()));
    let id = create(&bob, "ask", json!({})).await;
    let before = until(&bob, &id, "input_required").await;
    let unknown = format!("task_{}", "0".repeat(32));
    for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
        for bad in ["nope", "task_xyz", unknown.as_str(), "", id.as_str()] {
            // `id` is Bob's: Alice cannot name it.
            let params = json!({"taskId": bad, "inputResponses": {
                "name": {"action": "accept", "content": {"name": "Mallory"}}
            }});
            let answer = task_call(&alice, method, params).await;
            assert_eq!(answer.code(), -32602, "{method} {bad}: {answer:?}");
        }
        // Not a string, or absent.
        for params in [json!({"taskId": 7}), json!({})] {
            let mut params = params;
            params["_meta"] = alice.envelope();
            let body =
                json!({"jsonrpc": "2.0", "id": alice.id(), "method": method, "params": params});
            let answer = Modern::send(alice.raw(method, None, &body)).await;
            assert_eq!(answer.code(), -32602, "{method} {body}");
        }
        // Mcp-Name must mirror the task id.
        let body = json!({"jsonrpc": "2.0", "id": bob.id(), "method": method,
            "params": {"taskId": id, "_meta": bob.envelope(), "inputResponses": {}}});
        let answer = Modern::send(bob.raw(method, Some("task_other"), &body)).await;
        assert_eq!(answer.code(), -32020, "{method}");
        assert_eq!(answer.status, 400);
    }
    let malformed = task_call(
        &bob,
        "tasks/update",
        json!({"taskId": id, "inputResponses": "yes"}),
    )
    .await;
    assert_eq!(malformed.code(), -32602);
    assert_eq!(get(&bob, &id).await, before, "a refusal changed the task");
    // `tasks/result` and `tasks/list` do not exist.
    for method in ["tasks/result", "tasks/list"] {
        let answer = task_call(&bob, method, json!({"taskId": id})).await;
        assert_eq!(answer.code(), -32601, "{method}");
    }
}

#[tokio::test]
async fn listeners_hear_of_their_tasks() {
    let served = start().await;
    let client = declaring(&served.url);
    let id = create(&client, "ask", json!({})).await;
    until(&client, &id, "input_required").await;
    // Without the extension: -32021.
    let plain = Modern::new(&served.url);
    let refused = plain
        .call(
            "subscriptions/listen",
            json!({"notifications": {"taskIds": [id]}}),
        )
        .await;
    assert_eq!(refused.code(), -32021);
    let stream = client
        .request(
            "subscriptions/listen",
            json!({"notifications": {"taskIds": [id]}}),
        )
        .send()
        .await
        .unwrap();
    let events = tokio::spawn(read_sse(stream, 3));
    // Wait for the acknowledgement to be registered before changing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {
            "name": {"action": "accept", "content": {"name": "Lin"}}
        }}),
    )
    .await;
    let events = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("three events")
        .unwrap();
    let messages: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        messages[0]["method"], "notifications/subscriptions/acknowledged",
        "{messages:?}"
    );
    assert_eq!(
        messages[0]["params"]["notifications"]["taskIds"],
        json!([id])
    );
    let statuses: Vec<&Value> = messages[1..]
        .iter()
        .map(|m| &m["params"]["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!("working"), &json!("completed")],
        "{messages:?}"
    );
    assert_eq!(messages[2]["method"], "notifications/tasks");
    assert_eq!(messages[2]["params"]["taskId"], id.as_str());
    assert_eq!(
        messages[2]["params"]["result"]["content"][0]["text"],
        "Hello Lin"
    );
}

/// The stored record of task `id` in `store` (`None`: swept).
async fn stored(store: &MemoryStore, id: &str) -> Option<session_core::SessionRecord> {
    store.load(&SessionId::parse(id).unwrap()).await.unwrap()
}

#[tokio::test]
async fn an_expired_task_is_unknown_to_every_method_and_nothing_changes() {
    let store = Arc::new(MemoryStore::default());
    let mut config = ServerConfig::default();
    let ttl = Duration::from_secs(1); // the shortest a task gets
    config.tasks = config
        .tasks
        .clone()
        .idle_timeout(ttl)
        .max_lifetime(Some(ttl));
    config.task_poll_interval = Duration::from_millis(100);
    // Swept rarely: the expired record is (most likely) still stored.
    config.task_lease = Duration::from_secs(60);
    let served = start_with(config, store.clone()).await;
    let client = declaring(&served.url);
    let id = create(&client, "stoppable", json!({})).await;
    assert_eq!(get(&client, &id).await["ttlMs"], 1_000);
    eventually("the task to expire", || async {
        task_call(&client, "tasks/get", json!({"taskId": id}))
            .await
            .response()
            .get("error")
            .is_some()
    })
    .await;
    let before = stored(&store, &id).await;
    for method in ["tasks/get", "tasks/update", "tasks/cancel", "tasks/get"] {
        let params = json!({"taskId": id, "inputResponses": {"name": {"action": "accept"}}});
        let answer = task_call(&client, method, params).await;
        assert_eq!(answer.code(), -32602, "{method}: {answer:?}");
        assert_eq!(
            answer.response()["error"]["message"],
            "Failed to retrieve task: Task not found"
        );
        let now = stored(&store, &id).await;
        // Unchanged, unless the sweep removed it meanwhile.
        assert!(now.is_none() || now == before, "{method} wrote {now:?}");
    }
    // Its worker saw it go and stopped.
    eventually("the worker to stop", || async {
        served.server.tasks_running() == 0
    })
    .await;
}

#[tokio::test]
async fn an_answer_over_the_state_limit_is_refused_naming_its_size_and_changes_nothing() {
    let store = Arc::new(MemoryStore::default());
    let mut config = ServerConfig::default();
    let limit = 16 * 1024;
    config.tasks = config.tasks.clone().max_state_bytes(limit);
    let served = start_with(config, store.clone()).await;
    let client = declaring(&served.url);
    let id = create(&client, "ask", json!({})).await;
    let before = until(&client, &id, "input_required").await;
    let record = stored(&store, &id).await.unwrap();
    let big = "x".repeat(limit + 1);

    let answer = task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {
            "name": {"action": "accept", "content": {"name": big}}
        }}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.code(), -32602, "{answer:?}");
    let error = &answer.response()["error"];
    let size = error["data"]["size"].as_u64().unwrap();
    assert!(size > limit as u64, "{error}");
    assert_eq!(error["data"]["limit"], limit);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&size.to_string()) && message.contains(&limit.to_string()),
        "{message}"
    );
    assert_eq!(
        get(&client, &id).await,
        before,
        "a refusal changed the task"
    );
    assert_eq!(stored(&store, &id).await.unwrap(), record);

    // As large under a key never asked: ignored, acknowledged, no write.
    let ack = task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {"other": {"text": big}}}),
    )
    .await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(stored(&store, &id).await.unwrap(), record);

    // The task goes on: an answer within the limit is taken.
    task_call(
        &client,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {
            "name": {"action": "accept", "content": {"name": "Ada"}}
        }}),
    )
    .await
    .result();
    let done = until(&client, &id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello Ada");
}

/// A task left without its lease and with no worker: what remains when the
/// replica whose sweep removed a lapsed lease dies before its expiry hook
/// writes the task's end. The next `tasks/get` gives it a watch lease, and
/// the task fails within a lease of that, rather than reading `working`
/// until its TTL.
#[tokio::test]
async fn a_task_left_without_its_lease_fails_within_a_lease_of_being_read() {
    let store = Arc::new(MemoryStore::default());
    let mut config = ServerConfig::default();
    config.task_lease = Duration::from_millis(600);
    let served = start_with(config, store.clone()).await;
    // The task store swept every third of the lease, as a served binary does.
    let sweeper = served.server.spawn_sweeper();
    let client = declaring(&served.url);
    let id = create(&client, "stoppable", json!({})).await;
    // What the sweep does, without its hook: the lease record goes.
    let lease = SessionId::parse(&id.replacen("task_", "lease_", 1)).unwrap();
    assert!(
        store.delete(&lease).await.unwrap(),
        "a running task has a lease"
    );
    // Its worker learns at its next renewal that the lease is not its own,
    // and stops without writing an end.
    eventually("the worker to stop", || async {
        served.server.tasks_running() == 0
    })
    .await;
    assert_eq!(get(&client, &id).await["status"], "working");
    let failed = until(&client, &id, "failed").await;
    assert_eq!(failed["error"]["code"], -32603, "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("worker was lost")),
        "{failed}"
    );
    // The watch lease went with its lapse.
    eventually("the watch lease to go", || async {
        store.load(&lease).await.unwrap().is_none()
    })
    .await;
    sweeper.abort();
}
