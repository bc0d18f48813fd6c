//! The task clauses: [`Tasks`] (durable tasks of the
//! `io.modelcontextprotocol/tasks` extension) kept in the store under test,
//! as a server keeps them. Two `Tasks` over one store stand for two replicas
//! sharing it. Each function panics with a message naming the broken clause.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use session_core::{Error, ManagerConfig, ManualClock, SessionStore, TaskError, TaskStatus, Tasks};

use super::cases::T0;

const TTL: Duration = Duration::from_secs(60);

/// Two `Tasks` over `store` (two replicas) on one manual clock.
fn replicas(store: &Arc<dyn SessionStore>) -> (Tasks, Tasks, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = ManagerConfig::default()
        .idle_timeout(TTL)
        .max_lifetime(Some(TTL))
        .retention(Duration::ZERO);
    (
        Tasks::new(store.clone(), clock.clone(), config.clone()),
        Tasks::new(store.clone(), clock.clone(), config),
        clock,
    )
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A created task is readable at once, from any replica, by its principal
/// only; anyone else reads it as not found.
pub async fn a_task_is_durable_at_creation_and_bound_to_its_principal(
    store: Arc<dyn SessionStore>,
) {
    let (a, b, _) = replicas(&store);
    let task = a.create(Some("alice"), None, None).await.unwrap();
    assert!(
        task.id().starts_with("task_"),
        "task ids say what they name"
    );
    let seen = b.get(task.id(), Some("alice")).await.unwrap();
    assert_eq!(
        seen.status(),
        TaskStatus::Working,
        "readable at once, elsewhere"
    );
    assert_eq!(seen.created_at(), task.created_at());
    for stranger in [Some("bob"), None] {
        assert!(
            matches!(b.get(task.id(), stranger).await, Err(Error::NotFound)),
            "another principal's task reads as not found"
        );
        assert!(
            matches!(
                b.cancel(task.id(), stranger).await,
                Err(TaskError::Record(Error::NotFound))
            ),
            "another principal cannot cancel it"
        );
    }
    assert_eq!(
        b.get(task.id(), Some("alice")).await.unwrap().status(),
        TaskStatus::Working,
        "a refused change writes nothing"
    );
}

/// Two replicas ending the same tasks at once: on each task exactly one
/// wins, and the stored task is the winner's, for good.
pub async fn two_replicas_ending_a_task_at_once_agree_on_one_winner(store: Arc<dyn SessionStore>) {
    let (a, b, _) = replicas(&store);
    let (a, b) = (Arc::new(a), Arc::new(b));
    for round in 0..16 {
        let task = a.create(Some("p"), None, None).await.unwrap();
        let id = task.id().to_string();
        let completing = {
            let (a, id) = (a.clone(), id.clone());
            tokio::spawn(async move {
                a.complete(
                    &id,
                    Some("p"),
                    object(json!({"content": [], "round": round})),
                )
                .await
            })
        };
        let cancelling = {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move { b.cancel(&id, Some("p")).await })
        };
        let (completed, cancelled) = (completing.await.unwrap(), cancelling.await.unwrap());
        let stored = a.get(&id, Some("p")).await.unwrap();
        match (completed, cancelled) {
            (Ok(_), Err(TaskError::Terminal { status })) => {
                assert_eq!(status, TaskStatus::Completed);
                assert_eq!(stored.status(), TaskStatus::Completed);
                assert_eq!(stored.result().unwrap()["round"], json!(round));
            }
            (Err(TaskError::Terminal { status }), Ok(_)) => {
                assert_eq!(status, TaskStatus::Cancelled);
                assert_eq!(stored.status(), TaskStatus::Cancelled);
                assert!(stored.result().is_none());
            }
            (completed, cancelled) => panic!(
                "exactly one of complete and cancel wins: {:?} and {:?}",
                completed.map(|t| t.status()),
                cancelled.map(|t| t.status())
            ),
        }
        // Terminal: nothing changes it again, from either replica.
        let version = stored.version();
        assert!(b.complete(&id, Some("p"), Map::new()).await.is_err());
        assert!(b.cancel(&id, Some("p")).await.is_err());
        assert_eq!(
            a.get(&id, Some("p")).await.unwrap().version(),
            version,
            "a terminal task is never written again"
        );
    }
}

/// Input asked for on one replica is answered on the other, partly, then
/// fully; keys are never reused; the worker takes the answers once.
pub async fn input_asked_on_one_replica_is_answered_on_another(store: Arc<dyn SessionStore>) {
    let (a, b, _) = replicas(&store);
    let task = a.create(Some("p"), None, None).await.unwrap();
    let id = task.id().to_string();
    let asked = a
        .set_input_required(
            &id,
            Some("p"),
            object(json!({"name": {"method": "elicitation/create"}, "age": {"method": "elicitation/create"}})),
        )
        .await
        .unwrap();
    assert_eq!(asked.status(), TaskStatus::InputRequired);
    let (after_one, accepted) = b
        .answer(
            &id,
            Some("p"),
            object(json!({"name": {"action": "accept"}, "never-asked": {}})),
        )
        .await
        .unwrap();
    assert_eq!(
        accepted.keys().collect::<Vec<_>>(),
        ["name"],
        "unknown keys ignored"
    );
    assert_eq!(
        after_one.status(),
        TaskStatus::InputRequired,
        "a partial answer waits"
    );
    let (after_two, accepted) = b
        .answer(
            &id,
            Some("p"),
            object(json!({"name": {"again": true}, "age": {"action": "accept"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        accepted.keys().collect::<Vec<_>>(),
        ["age"],
        "answered keys ignored"
    );
    assert_eq!(after_two.status(), TaskStatus::Working);
    let (_, taken) = a.take_responses(&id, Some("p")).await.unwrap();
    assert_eq!(taken.len(), 2, "the worker gets every answer");
    let (_, again) = a.take_responses(&id, Some("p")).await.unwrap();
    assert!(again.is_empty(), "and only once");
    assert!(
        matches!(
            a.set_input_required(&id, Some("p"), object(json!({"name": {}})))
                .await,
            Err(TaskError::KeyReused { .. })
        ),
        "a key is never issued twice in a task's life"
    );
}

/// A task lives for its TTL from creation, whatever is written to it; the
/// sweep then removes it, and only it.
pub async fn tasks_expire_by_ttl_from_creation(store: Arc<dyn SessionStore>) {
    let (a, _, clock) = replicas(&store);
    let done = a.create(Some("p"), None, None).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let later = a.create(Some("p"), None, None).await.unwrap();
    a.complete(done.id(), Some("p"), object(json!({"content": []})))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(29));
    let kept = a.get(done.id(), Some("p")).await.unwrap();
    assert_eq!(
        kept.status(),
        TaskStatus::Completed,
        "the result stays until the TTL"
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        matches!(a.get(done.id(), Some("p")).await, Err(Error::NotFound)),
        "past its TTL a task is gone, writes notwithstanding"
    );
    assert_eq!(
        a.sweep().await.unwrap(),
        1,
        "the sweep removes the expired task"
    );
    assert_eq!(
        a.get(later.id(), Some("p")).await.unwrap().status(),
        TaskStatus::Working,
        "and only it"
    );
}
