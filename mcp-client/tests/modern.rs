//! The client in the 2026-07-28 era against the real `mcp-server` over
//! HTTP: `auto` lands there; the seed's scenarios with a handle instead of a
//! session, over the memory and the file store; `input_required` answered
//! by the request handler; tasks followed, resumed from another client,
//! cancelled at the timeout.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, Store, serve};
use mcp_client::{Client, ClientEvent, ClientOptions, Error, ProtocolMode, RequestOptions};
use mcp_server::{InputRequest, McpServer, RequestContext, ServerConfig, TaskSupport, demo, tool};
use serde_json::{Map, Value, json};
use session_core::SessionStore;
use session_core::wire::CallToolResult;
use session_store::{FileStore, MemoryStore};

fn options() -> ClientOptions {
    ClientOptions::default()
        .client_info("modern-test", "1.0")
        .connect_timeout(Duration::from_secs(5))
}

/// A store for sessions, handles and tasks: in memory, or file stores in
/// subdirectories of the directory.
fn stores(store: &Store) -> [Arc<dyn SessionStore>; 3] {
    match store {
        Store::Memory => [(); 3].map(|()| Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>),
        Store::File(dir) => ["sessions", "handles", "tasks"]
            .map(|sub| Arc::new(FileStore::open(dir.join(sub)).unwrap()) as Arc<dyn SessionStore>),
    }
}

/// The demo tools plus `ask` (asks a name), `stoppable` (works until
/// cancelled, counting its steps) and `ask_task` (asks a name inside a
/// task).
async fn start(store: &Store, config: ServerConfig, steps: Arc<AtomicU64>) -> Server {
    let [sessions, handles, tasks] = stores(store);
    let ask = |ctx: RequestContext, _: Map<String, Value>| async move {
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
    };
    let server = demo::register(McpServer::builder())
        .store(sessions)
        .handle_store(handles)
        .task_store(tasks)
        .tool(tool("ask", "Asks a name", json!({"type": "object"})), ask)
        .tool(
            tool(
                "ask_task",
                "Asks a name in a task",
                json!({"type": "object"}),
            ),
            ask,
        )
        .task_support("ask_task", TaskSupport::Always)
        .tool(
            tool(
                "stoppable",
                "Works until cancelled",
                json!({"type": "object"}),
            ),
            move |_, _| {
                let steps = steps.clone();
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
            tool("broken", "Fails in a task", json!({"type": "object"})),
            |_, _| async {
                // Not at once: a tool done at its first poll is answered
                // directly, with no task.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(session_core::wire::ErrorObject::new(
                    -32603,
                    "the disk is gone",
                ))
            },
        )
        .task_support("broken", TaskSupport::Always)
        .config(config)
        .build();
    serve(server).await
}

/// A client of `url` with `options`, and the events it emits, as they come.
async fn recorded(url: &str, options: ClientOptions) -> (Client, Arc<Mutex<Vec<ClientEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let options = options.on_event(move |e| seen.lock().unwrap().push(e.clone()));
    (Client::connect_http(url, options).await.unwrap(), events)
}

/// Declares elicitation (with no handler).
fn asking() -> ClientOptions {
    options().capabilities(json!({"elicitation": {}}))
}

/// Answers every elicitation with the name "Ada".
fn answering() -> ClientOptions {
    asking().on_request(|method, _params| async move {
        assert_eq!(method, "elicitation/create");
        Ok(json!({"action": "accept", "content": {"name": "Ada"}}))
    })
}

/// The id of the first task the client reported.
fn task_created(events: &[ClientEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        ClientEvent::TaskCreated { task_id, .. } => Some(task_id.clone()),
        _ => None,
    })
}

fn text_of(result: &CallToolResult) -> String {
    serde_json::to_value(&result.content[0]).unwrap()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_lands_in_2026_07_28_against_our_server_and_legacy_is_still_there() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let client = Client::connect_http(&server.url, options()).await.unwrap();
    assert_eq!(client.protocol_version().as_deref(), Some("2026-07-28"));
    assert_eq!(client.session_id(), None, "no session in the modern era");
    let details = client.server().unwrap();
    assert_eq!(details.server_info.name, "mcp-server");
    assert!(details.capabilities["tools"].is_object());
    let tools = client.list_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));
    let echoed = client
        .call_tool("echo", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "hi");
    // No session was made for any of it.
    assert_eq!(server.server.sessions().count().await.unwrap(), 0);

    let pinned = Client::connect_http(
        &server.url,
        options().protocol(ProtocolMode::Pinned("2026-07-28".into())),
    )
    .await
    .unwrap();
    assert_eq!(pinned.protocol_version().as_deref(), Some("2026-07-28"));
    let legacy = Client::connect_http(&server.url, options().protocol(ProtocolMode::Legacy))
        .await
        .unwrap();
    assert_eq!(legacy.protocol_version().as_deref(), Some("2025-11-25"));
    assert!(legacy.session_id().is_some());
    legacy.close().await.unwrap();
    server.stop().await;
}

/// The seed's scenarios with a handle (`counter_id`) in place of a session:
/// created, kept between requests, 1,000 concurrent updates with none lost,
/// taken up by a new client (and, on the file store, after a restart), and
/// expired: the next call starts a new one and says its id.
async fn handle_scenarios(store: Store) {
    let config = ServerConfig::default()
        .handle_idle_timeout(Duration::from_millis(400))
        .sweep_interval(Duration::from_millis(50));
    let server = start(&store, config.clone(), Arc::default()).await;
    let client = Client::connect_http(
        &server.url,
        options().connect_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    // Create.
    let first = client.call_tool("counter", json!({"by": 1})).await.unwrap();
    let first = first.structured_content.unwrap();
    let id = first["counter_id"].as_str().unwrap().to_string();
    assert_eq!(first["counter"], 1);
    // Kept between requests.
    let second = client
        .call_tool("counter", json!({"by": 2, "counter_id": id}))
        .await
        .unwrap();
    assert_eq!(second.structured_content.unwrap()["counter"], 3);
    // 1,000 concurrent updates, none lost.
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move {
                client
                    .call_tool("counter", json!({"by": 1, "counter_id": id}))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for call in calls {
        assert_ne!(call.await.unwrap().is_error, Some(true));
    }
    // A new client (as a new process would) goes on with the handle.
    let other = Client::connect_http(&server.url, options()).await.unwrap();
    let counted = other
        .call_tool("counter", json!({"by": 0, "counter_id": id}))
        .await
        .unwrap();
    assert_eq!(counted.structured_content.unwrap()["counter"], 1003);
    let server = if let Store::File(_) = store {
        server.stop().await;
        let server = start(&store, config, Arc::default()).await;
        let after = Client::connect_http(&server.url, options()).await.unwrap();
        let counted = after
            .call_tool("counter", json!({"by": 1, "counter_id": id}))
            .await
            .unwrap();
        assert_eq!(
            counted.structured_content.unwrap()["counter"],
            1004,
            "the handle survived the restart"
        );
        server
    } else {
        server
    };
    // Unused past its idle timeout, the handle expires: the call says so,
    // and the next call without it starts a new one and tells its id.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client = Client::connect_http(&server.url, options()).await.unwrap();
    let stale = client
        .call_tool("counter", json!({"by": 1, "counter_id": id}))
        .await
        .unwrap();
    assert_eq!(stale.is_error, Some(true), "{stale:?}");
    let fresh = client.call_tool("counter", json!({"by": 1})).await.unwrap();
    let fresh = fresh.structured_content.unwrap();
    assert_eq!(fresh["counter"], 1);
    assert_ne!(fresh["counter_id"].as_str().unwrap(), id, "a new handle");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_scenarios_memory() {
    handle_scenarios(Store::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_scenarios_file() {
    let dir = tempfile::tempdir().unwrap();
    handle_scenarios(Store::File(dir.path().to_path_buf())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_required_is_answered_by_the_request_handler() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let client = Client::connect_http(&server.url, answering())
        .await
        .unwrap();
    let hello = client.call_tool("ask", json!({})).await.unwrap();
    assert_eq!(text_of(&hello), "Hello Ada");

    // No handler: a clear error, not a hang.
    let bare = Client::connect_http(&server.url, asking()).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), bare.call_tool("ask", json!({})))
        .await
        .expect("no hang");
    assert!(
        matches!(&refused, Err(Error::Unsupported(m)) if m.contains("elicitation/create")),
        "{refused:?}"
    );

    // A handler that refuses: its error, typed.
    let refusing = Client::connect_http(
        &server.url,
        asking().on_request(|_, _| async {
            Err(session_core::wire::ErrorObject::new(
                -32000,
                "the user went away",
            ))
        }),
    )
    .await
    .unwrap();
    let failed = refusing.call_tool("ask", json!({})).await;
    assert!(
        matches!(&failed, Err(Error::Input { method, .. }) if method == "elicitation/create"),
        "{failed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_followed_to_its_end_and_resumed_by_another_client() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let (client, events) = recorded(&server.url, answering()).await;
    // `slow` becomes a task when the request declares the extension.
    let done = client
        .call_tool("slow", json!({"steps": 3, "delay_ms": 20}))
        .await
        .unwrap();
    assert_eq!(text_of(&done), "completed 3 steps");
    let created: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::TaskCreated { task_id, method } if method == "tools/call" => {
                Some(task_id.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "the task was reported");

    // Input inside a task goes through tasks/update.
    let hello = client.call_tool("ask_task", json!({})).await.unwrap();
    assert_eq!(text_of(&hello), "Hello Ada");

    // Another client takes a task up by its id.
    let started = {
        let id = Arc::new(Mutex::new(None));
        let found = id.clone();
        let starter = Client::connect_http(
            &server.url,
            options().on_event(move |e| {
                if let ClientEvent::TaskCreated { task_id, .. } = e {
                    *found.lock().unwrap() = Some(task_id.clone());
                }
            }),
        )
        .await
        .unwrap();
        // The starter gives up at once (its process would exit): the task
        // goes on without it.
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            starter.call_tool("slow", json!({"steps": 4, "delay_ms": 100})),
        )
        .await;
        id.lock().unwrap().clone().expect("a task id")
    };
    let other = Client::connect_http(&server.url, options()).await.unwrap();
    let view = other.task(&started).get().await.unwrap();
    assert_eq!(view["taskId"], started.as_str());
    let result = other
        .task(&started)
        .call_result(RequestOptions::default())
        .await;
    // The starter's dropped call cancelled the task, or it finished first.
    match result {
        Ok(done) => assert_eq!(text_of(&done), "completed 4 steps"),
        Err(Error::TaskCancelled { task_id }) => assert_eq!(task_id, started),
        Err(e) => panic!("{e}"),
    }
    // An unknown task: the server's error, typed.
    let unknown = other
        .task("task_00000000000000000000000000000000")
        .get()
        .await;
    assert!(matches!(unknown, Err(Error::Rpc { .. })), "{unknown:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_never_finishes_is_cancelled_at_the_total_timeout() {
    let steps = Arc::new(AtomicU64::new(0));
    let server = start(&Store::Memory, ServerConfig::default(), steps.clone()).await;
    let (client, events) = recorded(&server.url, options()).await;
    let timed_out = client
        .call_tool_with(
            "stoppable",
            json!({}),
            RequestOptions::default().timeout(Duration::from_millis(400)),
        )
        .await;
    assert!(
        matches!(timed_out, Err(Error::Timeout { .. })),
        "{timed_out:?}"
    );
    let id = task_created(&events.lock().unwrap()).expect("a task");
    let view = client.task(&id).get().await.unwrap();
    assert_eq!(view["status"], "cancelled", "{view}");
    // The worker stopped.
    let stopped = steps.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(steps.load(Ordering::SeqCst) <= stopped + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changes_arrive_on_the_listen_stream() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let mut listening = options().on_event(move |e| {
        if let ClientEvent::Notification { method, .. } = e {
            sink.lock().unwrap().push(method.clone());
        }
    });
    listening.min_backoff = Duration::from_millis(10);
    let client = Client::connect_http(&server.url, listening).await.unwrap();
    // The stream is open once the server counts a listener.
    let heard_change = || {
        heard
            .lock()
            .unwrap()
            .iter()
            .any(|m| m == "notifications/tools/list_changed")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !heard_change() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no list change heard"
        );
        server.server.notify_tools_list_changed().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.disconnect().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_input_cannot_be_given_is_cancelled() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let refusing = asking().on_request(|_, _| async {
        Err(session_core::wire::ErrorObject::new(
            -32000,
            "the user went away",
        ))
    });
    let (client, events) = recorded(&server.url, refusing).await;
    let failed = client.call_tool("ask_task", json!({})).await;
    assert!(matches!(failed, Err(Error::Input { .. })), "{failed:?}");
    let id = task_created(&events.lock().unwrap()).expect("a task");
    let view = client.task(&id).get().await.unwrap();
    assert_eq!(
        view["status"], "cancelled",
        "nobody waits for it any more: {view}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_the_calls_error_to_its_caller_and_a_task_error_to_a_follower() {
    let server = start(&Store::Memory, ServerConfig::default(), Arc::default()).await;
    let (client, events) = recorded(&server.url, options()).await;
    // The caller sees what a call failing at once would give it.
    let failed = client.call_tool("broken", json!({})).await;
    match &failed {
        Err(Error::Rpc { method, error }) => {
            assert_eq!(method, "tools/call");
            assert_eq!(error.code, -32603);
            assert!(error.message.contains("the disk is gone"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    // Followed by its id, the failure is the task's, not tasks/get's.
    let seen = events.lock().unwrap().clone();
    let id = task_created(&seen).unwrap_or_else(|| panic!("a task: {seen:?}"));
    let followed = client.task(&id).result(RequestOptions::default()).await;
    match followed {
        Err(e @ Error::TaskFailed { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("task {id} failed: "))
                    && message.contains("the disk is gone"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}
