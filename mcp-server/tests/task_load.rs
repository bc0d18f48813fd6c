//! 1,000 tasks at once over 64 clients, against the real binary on the
//! file store: every one is created once, reaches a terminal state, and
//! reads the result its own call produced; none is lost, duplicated or
//! mixed up with another.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Modern;
use serde_json::{Value, json};

const EXT: &str = "io.modelcontextprotocol/tasks";
const TASKS: usize = 1_000;
const CLIENTS: usize = 64;

fn declaring(url: &str) -> Modern {
    let mut client = Modern::new(url);
    client.capabilities = json!({"extensions": {EXT: {}}});
    client
}

async fn get(client: &Modern, id: &str) -> Value {
    let mut params = json!({"taskId": id});
    params["_meta"] = client.envelope();
    let body =
        json!({"jsonrpc": "2.0", "id": client.id(), "method": "tasks/get", "params": params});
    let answer = Modern::send(client.raw("tasks/get", Some(id), &body)).await;
    answer.result().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_over_64_clients_all_end_each_with_its_own_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("store").display());
    let server = common::start(&["--store", &store]);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let client = declaring(&server.url);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // Each client starts its share, each task with steps of its
                // own so that its result names it ("completed N steps").
                for i in (c..TASKS).step_by(CLIENTS) {
                    let steps = 1 + (i % 3);
                    let created = client
                        .tool("slow", json!({"steps": steps, "delay_ms": 5}))
                        .await;
                    assert_eq!(created["resultType"], "task", "{created}");
                    mine.push((created["taskId"].as_str().unwrap().to_string(), steps));
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut ended = Vec::new();
                for (id, steps) in mine {
                    loop {
                        let task = get(&client, &id).await;
                        assert_eq!(task["taskId"], id.as_str(), "{task}");
                        match task["status"].as_str() {
                            Some("working") => {
                                assert!(Instant::now() < deadline, "{id} never ended");
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Some("completed") => {
                                assert_eq!(
                                    task["result"]["content"][0]["text"],
                                    format!("completed {steps} steps"),
                                    "{task}"
                                );
                                ended.push(id);
                                break;
                            }
                            other => panic!("{id} ended {other:?}: {task}"),
                        }
                    }
                }
                ended
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for client in clients {
        for id in client.await.unwrap() {
            assert!(ids.insert(id), "a task id handed out twice");
        }
    }
    assert_eq!(ids.len(), TASKS, "every task created once and ended");
}
