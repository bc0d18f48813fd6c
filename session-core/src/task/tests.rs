//! `Tasks` against a test store on a manual clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::{ExpiryPolicy, ManualClock, Page, SessionHook, Timestamp, terminal_error};

/// A rival write a test slips in before the next compare-and-swap.
type Rival = Box<dyn FnOnce(&mut SessionState) + Send>;

/// The store of `store.rs`'s example, able to lose one race on purpose.
#[derive(Default)]
struct TestStore {
    map: Mutex<BTreeMap<SessionId, SessionRecord>>,
    rival: Mutex<Option<Rival>>,
    swaps: AtomicU32,
}

impl fmt::Debug for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestStore").finish_non_exhaustive()
    }
}

impl TestStore {
    fn stored(&self, id: &str) -> Option<SessionRecord> {
        let id = SessionId::parse(id).unwrap();
        self.map.lock().unwrap().get(&id).cloned()
    }

    fn rival(&self, change: impl FnOnce(&mut SessionState) + Send + 'static) {
        *self.rival.lock().unwrap() = Some(Box::new(change));
    }
}

#[async_trait]
impl SessionStore for TestStore {
    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let mut map = self.map.lock().unwrap();
        if map.contains_key(record.id()) {
            return Err(Error::AlreadyExists);
        }
        map.insert(record.id().clone(), record.clone());
        Ok(())
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        Ok(self.map.lock().unwrap().get(id).cloned())
    }
    async fn compare_and_swap(&self, record: &SessionRecord, expected: u64) -> Result<Cas> {
        self.swaps.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap();
        if let Some(rival) = self.rival.lock().unwrap().take() {
            let current = map[record.id()].clone();
            let mut write = current.begin_write(current.last_activity()).unwrap();
            rival(write.state_mut());
            map.insert(current.id().clone(), write.finish());
        }
        match map.get(record.id()) {
            Some(current) if current.stored_status().is_terminal() => {
                Err(terminal_error(current.stored_status()))
            }
            Some(current) if current.version() == expected => {
                assert_eq!(record.version(), expected + 1);
                map.insert(record.id().clone(), record.clone());
                Ok(Cas::Swapped)
            }
            current => Ok(Cas::Conflict {
                current: current.cloned(),
            }),
        }
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        Ok(self.map.lock().unwrap().remove(id).is_some())
    }
    async fn count(&self) -> Result<usize> {
        let map = self.map.lock().unwrap();
        Ok(map
            .values()
            .filter(|r| !r.stored_status().is_terminal())
            .count())
    }
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let map = self.map.lock().unwrap();
        let records: Vec<_> = map
            .values()
            .filter(|r| r.id().as_str() > cursor.unwrap_or(""))
            .take(limit)
            .cloned()
            .collect();
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.id().to_string()))
            .flatten();
        Ok(Page { records, next })
    }
    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        let mut map = self.map.lock().unwrap();
        let due: Vec<SessionId> = map
            .values()
            .filter(|r| r.expires_at() <= now)
            .take(limit)
            .map(|r| r.id().clone())
            .collect();
        Ok(due.iter().filter_map(|id| map.remove(id)).collect())
    }
}

#[derive(Debug, Default)]
struct Expiries(AtomicU32);

impl SessionHook for Expiries {
    fn on_closed(&self, _: &SessionRecord) {}
    fn on_expired(&self, _: &SessionRecord) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const T0: u64 = 1_764_066_600_000; // 2025-11-25T10:30:00Z
const ALICE: Option<&str> = Some("alice");

struct Fixture {
    tasks: Tasks,
    store: Arc<TestStore>,
    clock: Arc<ManualClock>,
}

fn fixture(config: ManagerConfig) -> Fixture {
    let store = Arc::new(TestStore::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let tasks = Tasks::new(store.clone(), clock.clone(), config);
    Fixture {
        tasks,
        store,
        clock,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn at(millis: u64) -> String {
    Timestamp::from_millis(millis).to_rfc3339()
}

/// A task of Alice's in `status`, reached by the ordinary operations.
async fn task_in(f: &Fixture, status: TaskStatus) -> String {
    let id = f
        .tasks
        .create(ALICE, Some(secs(60)), None)
        .await
        .unwrap()
        .id()
        .to_owned();
    let done = match status {
        TaskStatus::Working => return id,
        TaskStatus::InputRequired => {
            let ask = obj(json!({"q": {"method": "roots/list"}}));
            f.tasks.set_input_required(&id, ALICE, ask).await
        }
        TaskStatus::Completed => {
            let result = obj(json!({"content": [], "isError": false}));
            f.tasks.complete(&id, ALICE, result).await
        }
        TaskStatus::Failed => {
            let error = ErrorObject::new(-32603, "boom");
            f.tasks.fail(&id, ALICE, error).await
        }
        TaskStatus::Cancelled => f.tasks.cancel(&id, ALICE).await,
    };
    assert_eq!(done.unwrap().status(), status);
    id
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Ask,
    Answer,
    Complete,
    Fail,
    Cancel,
    Message,
}

async fn apply(f: &Fixture, id: &str, op: Op) -> Result<TaskView, TaskError> {
    match op {
        Op::Ask => {
            let ask = obj(json!({"fresh": {"method": "roots/list"}}));
            f.tasks.set_input_required(id, ALICE, ask).await
        }
        Op::Answer => {
            let answer = obj(json!({"q": {"roots": []}}));
            let (view, _) = f.tasks.answer(id, ALICE, answer).await?;
            Ok(view)
        }
        Op::Complete => f.tasks.complete(id, ALICE, obj(json!({"ok": 1}))).await,
        Op::Fail => f.tasks.fail(id, ALICE, ErrorObject::new(1, "x")).await,
        Op::Cancel => f.tasks.cancel(id, ALICE).await,
        Op::Message => {
            let message = Some("halfway".to_owned());
            f.tasks.set_status_message(id, ALICE, message).await
        }
    }
}

#[tokio::test]
async fn a_created_task_is_working_and_in_the_store_when_create_returns() {
    let f = fixture(ManagerConfig::default());
    let task = f
        .tasks
        .create(ALICE, Some(secs(60)), Some(secs(5)))
        .await
        .unwrap();
    assert_eq!(task.status(), TaskStatus::Working);
    assert_eq!(task.owner(), Some("alice"));
    assert_eq!(task.version(), 1);
    assert!(task.id().starts_with("task_"));
    assert_eq!(Tasks::parse(task.id()).unwrap().as_str(), task.id());
    let stored = f.store.stored(task.id()).expect("inserted by create");
    assert_eq!(&stored, task.record());
    assert_eq!(
        stored.expiry(),
        ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60))
    );
    assert_eq!(stored.expires_at(), Timestamp::from_millis(T0 + 60_000));
    assert_eq!(f.tasks.get(task.id(), ALICE).await.unwrap(), task);
    assert_eq!(
        task.to_wire(),
        json!({
            "taskId": task.id(),
            "status": "working",
            "createdAt": "2025-11-25T10:30:00.000Z",
            "lastUpdatedAt": "2025-11-25T10:30:00.000Z",
            "ttlMs": 60_000,
            "pollIntervalMs": 5_000,
        })
    );
    let other = f.tasks.create(ALICE, None, None).await.unwrap();
    assert_ne!(other.id(), task.id());
}

#[tokio::test]
async fn a_task_can_be_created_under_an_id_minted_beforehand() {
    let f = fixture(ManagerConfig::default());
    let id = Tasks::mint_id();
    assert_eq!(Tasks::parse(id.as_str()), Some(id.clone()));
    assert_ne!(Tasks::mint_id(), id);
    // Minting writes nothing: the task does not exist yet.
    assert!(f.store.stored(id.as_str()).is_none());
    assert!(matches!(
        f.tasks.get(id.as_str(), ALICE).await,
        Err(Error::NotFound)
    ));

    let task = f
        .tasks
        .create_with_id(&id, ALICE, Some(secs(60)), Some(secs(5)))
        .await
        .unwrap();
    assert_eq!(task.id(), id.as_str());
    assert_eq!(task.status(), TaskStatus::Working);
    assert_eq!(task.owner(), Some("alice"));
    assert_eq!(task.version(), 1);
    assert_eq!(task.poll_interval(), Some(secs(5)));
    let stored = f.store.stored(id.as_str()).expect("inserted");
    assert_eq!(&stored, task.record());
    assert_eq!(
        stored.expiry(),
        ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60))
    );
    assert_eq!(f.tasks.get(id.as_str(), ALICE).await.unwrap(), task);
    // The TTL defaults and is raised as `create`'s is.
    let other = Tasks::mint_id();
    let short = f
        .tasks
        .create_with_id(&other, None, Some(Duration::ZERO), None)
        .await
        .unwrap();
    assert_eq!(short.ttl(), MIN_TASK_TTL);

    // Taken: refused, and the task there is left as it is (never given
    // another id).
    f.tasks.cancel(id.as_str(), ALICE).await.unwrap();
    let before = f.store.stored(id.as_str()).unwrap();
    assert!(matches!(
        f.tasks.create_with_id(&id, Some("bob"), None, None).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(f.store.stored(id.as_str()).unwrap(), before);
    assert_eq!(f.store.map.lock().unwrap().len(), 2);

    // Another record under a task id (a server's lease is `lease_…`,
    // never a task id) cannot be created through it.
    for bad in ["lease_0123456789abcdef0123456789abcdef", "task_x", "sess"] {
        let bad = SessionId::parse(bad).unwrap();
        assert!(matches!(
            f.tasks.create_with_id(&bad, ALICE, None, None).await,
            Err(Error::NotFound)
        ));
        assert!(f.store.stored(bad.as_str()).is_none());
    }
    assert_eq!(f.store.map.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_ttl_defaults_from_the_config_and_is_never_below_the_minimum() {
    let f = fixture(ManagerConfig::default().max_lifetime(Some(secs(120))));
    assert_eq!(f.tasks.default_ttl(), secs(120));
    let task = f.tasks.create(None, None, None).await.unwrap();
    assert_eq!(task.ttl(), secs(120));
    assert_eq!(task.poll_interval(), None);
    assert!(task.to_wire().get("pollIntervalMs").is_none());
    let short = f
        .tasks
        .create(None, Some(Duration::ZERO), None)
        .await
        .unwrap();
    assert_eq!(short.ttl(), MIN_TASK_TTL);
    assert!(f.tasks.get(short.id(), None).await.is_ok());

    let idle_only = fixture(ManagerConfig::default().idle_timeout(secs(90)));
    assert_eq!(idle_only.tasks.default_ttl(), secs(90));
}

#[test]
fn every_operation_can_be_spawned() {
    fn send<T: Send>(_: T) {}
    let f = fixture(ManagerConfig::default());
    let t = &f.tasks;
    send(t.create(ALICE, None, None));
    send(t.create_with_id(&Tasks::mint_id(), ALICE, None, None));
    send(t.get("", ALICE));
    send(t.set_input_required("", ALICE, Map::new()));
    send(t.answer("", ALICE, Map::new()));
    send(t.take_responses("", ALICE));
    send(t.complete("", ALICE, Map::new()));
    send(t.fail("", ALICE, ErrorObject::new(1, "x")));
    send(t.cancel("", ALICE));
    send(t.set_status_message("", ALICE, None));
    send(t.sweep());
}

#[test]
fn only_minted_task_ids_parse() {
    let random = "0123456789abcdef0123456789abcdef";
    assert!(Tasks::parse(&format!("task_{random}")).is_some());
    let minted = Tasks::generate();
    assert_eq!(minted.as_str().len(), "task_".len() + 32);
    assert_eq!(Tasks::parse(minted.as_str()), Some(minted));
    for bad in [
        format!("ctr_{random}"),
        format!("tasks_{random}"),
        format!("xtask_{random}"),
        format!("task{random}"),
        format!("task__{random}"),
        format!("task_x_{random}"),
        format!("task_{}", &random[1..]),
        format!("task_{random}0"),
        format!("task_{}", random.to_uppercase()),
        format!("TASK_{random}"),
        random.to_owned(),
        String::new(),
    ] {
        assert_eq!(Tasks::parse(&bad), None, "{bad}");
    }
}

#[tokio::test]
async fn another_principals_task_reads_and_writes_as_unknown() {
    let f = fixture(ManagerConfig::default());
    let id = task_in(&f, TaskStatus::InputRequired).await;
    let before = f.store.stored(&id).unwrap();
    for stranger in [Some("bob"), None] {
        assert!(matches!(
            f.tasks.get(&id, stranger).await,
            Err(Error::NotFound)
        ));
        let answer = obj(json!({"q": {}}));
        assert!(matches!(
            f.tasks.answer(&id, stranger, answer).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            f.tasks.take_responses(&id, stranger).await,
            Err(Error::NotFound)
        ));
        for refused in [
            f.tasks.complete(&id, stranger, Map::new()).await,
            f.tasks.fail(&id, stranger, ErrorObject::new(1, "x")).await,
            f.tasks.cancel(&id, stranger).await,
            f.tasks.set_status_message(&id, stranger, None).await,
            f.tasks
                .set_input_required(&id, stranger, obj(json!({"z": {}})))
                .await,
        ] {
            assert!(matches!(refused, Err(TaskError::Record(Error::NotFound))));
        }
    }
    assert_eq!(f.store.stored(&id).unwrap(), before, "nothing written");

    // A task bound to no principal is no one else's either.
    let anonymous = f.tasks.create(None, None, None).await.unwrap();
    assert!(f.tasks.get(anonymous.id(), None).await.is_ok());
    assert!(matches!(
        f.tasks.get(anonymous.id(), ALICE).await,
        Err(Error::NotFound)
    ));

    // Unknown and malformed ids read the same.
    let unknown = Tasks::generate();
    for id in [unknown.as_str(), "task_nope", "", &"x".repeat(10_000)] {
        assert!(matches!(f.tasks.get(id, ALICE).await, Err(Error::NotFound)));
        assert!(matches!(
            f.tasks.cancel(id, ALICE).await,
            Err(TaskError::Record(Error::NotFound))
        ));
    }
}

#[test]
fn status_transitions_are_the_state_diagram() {
    use TaskStatus::*;
    let legal = [
        (Working, InputRequired),
        (InputRequired, Working),
        (Working, Completed),
        (Working, Failed),
        (Working, Cancelled),
        (InputRequired, Completed),
        (InputRequired, Failed),
        (InputRequired, Cancelled),
    ];
    for from in TaskStatus::ALL {
        assert_eq!(TaskStatus::parse(from.as_str()), Some(from));
        assert_eq!(
            serde_json::to_value(from).unwrap(),
            json!(from.as_str()),
            "serde agrees with as_str"
        );
        for to in TaskStatus::ALL {
            match from.transition(to) {
                Ok(next) => {
                    assert!(legal.contains(&(from, to)), "{from} -> {to}");
                    assert_eq!(next, to);
                }
                Err(TaskError::Terminal { status }) => {
                    assert!(from.is_terminal(), "{from} -> {to}");
                    assert_eq!(status, from);
                }
                Err(TaskError::InvalidTransition { from: f, to: t }) => {
                    assert!(!legal.contains(&(from, to)) && !from.is_terminal());
                    assert_eq!((f, t), (from, to));
                }
                Err(other) => panic!("{from} -> {to}: {other}"),
            }
        }
    }
    assert_eq!(TaskStatus::parse("done"), None);
}

#[tokio::test]
async fn every_operation_in_every_status_moves_only_as_the_diagram_allows() {
    use TaskStatus::*;
    for from in TaskStatus::ALL {
        for op in [
            Op::Ask,
            Op::Answer,
            Op::Complete,
            Op::Fail,
            Op::Cancel,
            Op::Message,
        ] {
            let f = fixture(ManagerConfig::default());
            let id = task_in(&f, from).await;
            let before = f.store.stored(&id).unwrap();
            // The status after, or `None` if refused; whether it writes.
            let (expect, writes) = match (op, from) {
                (_, from) if from.is_terminal() => match op {
                    Op::Answer => (Some(from), false),
                    _ => (None, false),
                },
                (Op::Ask, Working) => (Some(InputRequired), true),
                (Op::Ask, _) => (None, false),
                (Op::Answer, InputRequired) => (Some(Working), true),
                (Op::Answer, from) => (Some(from), false),
                (Op::Complete, _) => (Some(Completed), true),
                (Op::Fail, _) => (Some(Failed), true),
                (Op::Cancel, _) => (Some(Cancelled), true),
                (Op::Message, from) => (Some(from), true),
            };
            let outcome = apply(&f, &id, op).await;
            let after = f.store.stored(&id).unwrap();
            match (expect, outcome) {
                (Some(status), Ok(view)) => {
                    assert_eq!(view.status(), status, "{op:?} on {from}");
                    assert_eq!(view.record(), &after, "the view is what was written");
                }
                (None, Err(e)) => match e {
                    TaskError::Terminal { status } => assert_eq!(status, from),
                    TaskError::InvalidTransition { from: f, to } => {
                        assert_eq!((f, to), (from, InputRequired), "{op:?}");
                    }
                    other => panic!("{op:?} on {from}: {other}"),
                },
                (expect, outcome) => panic!("{op:?} on {from}: {expect:?} but {outcome:?}"),
            }
            let written = after.version() != before.version();
            assert_eq!(written, writes, "{op:?} on {from} writes iff it changes");
            if !writes {
                assert_eq!(after, before);
            }
        }
    }
}

#[tokio::test]
async fn a_terminal_task_never_changes_again() {
    let f = fixture(ManagerConfig::default());
    let id = task_in(&f, TaskStatus::Completed).await;
    let before = f.tasks.get(&id, ALICE).await.unwrap();
    f.clock.advance(secs(1));
    for op in [Op::Ask, Op::Complete, Op::Fail, Op::Cancel, Op::Message] {
        assert!(
            matches!(
                apply(&f, &id, op).await,
                Err(TaskError::Terminal {
                    status: TaskStatus::Completed
                })
            ),
            "{op:?}"
        );
    }
    let (view, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"q": {}})))
        .await
        .unwrap();
    assert!(accepted.is_empty());
    assert_eq!(view, before);
    let (_, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
    assert!(taken.is_empty());
    let after = f.tasks.get(&id, ALICE).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.to_wire(), before.to_wire());
    assert_eq!(
        after.result(),
        Some(&obj(json!({"content": [], "isError": false})))
    );
}

#[tokio::test]
async fn input_keys_are_unique_over_a_tasks_life_and_answers_may_come_in_parts() {
    let f = fixture(ManagerConfig::default());
    let id = task_in(&f, TaskStatus::Working).await;
    let ask = obj(json!({"a": {"method": "elicitation/create"}, "b": {"method": "roots/list"}}));
    let task = f
        .tasks
        .set_input_required(&id, ALICE, ask.clone())
        .await
        .unwrap();
    assert_eq!(task.input_requests(), Some(&ask));
    assert_eq!(task.to_wire()["inputRequests"], Value::Object(ask));
    assert_eq!(task.issued_keys().collect::<Vec<_>>(), ["a", "b"]);

    // Partial: `a` is accepted, the never-issued `zzz` ignored.
    let (task, accepted) = f
        .tasks
        .answer(
            &id,
            ALICE,
            obj(json!({"a": {"action": "accept"}, "zzz": 2})),
        )
        .await
        .unwrap();
    assert_eq!(accepted, obj(json!({"a": {"action": "accept"}})));
    assert_eq!(task.status(), TaskStatus::InputRequired);
    assert_eq!(
        task.input_requests(),
        Some(&obj(json!({"b": {"method": "roots/list"}})))
    );
    assert_eq!(task.input_responses(), Some(&accepted));
    assert_eq!(task.answered_keys().collect::<Vec<_>>(), ["a"]);

    // Answering `a` again is ignored and writes nothing.
    let version = task.version();
    let (task, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"a": "again"})))
        .await
        .unwrap();
    assert!(accepted.is_empty());
    assert_eq!(task.version(), version);

    // The last outstanding answer sends the task back to work.
    let (task, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"b": {"roots": []}})))
        .await
        .unwrap();
    assert_eq!(accepted, obj(json!({"b": {"roots": []}})));
    assert_eq!(task.status(), TaskStatus::Working);
    assert_eq!(task.input_requests(), None);
    assert!(task.to_wire().get("inputRequests").is_none());
    assert_eq!(
        task.input_responses(),
        Some(&obj(json!({"a": {"action": "accept"}, "b": {"roots": []}})))
    );

    // Keys issued before are refused, however long ago; nothing written.
    let version = task.version();
    for (ask, reused) in [(json!({"a": {}}), "a"), (json!({"b": {}, "c": {}}), "b")] {
        match f.tasks.set_input_required(&id, ALICE, obj(ask)).await {
            Err(TaskError::KeyReused { key }) => assert_eq!(key, reused),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        f.tasks.set_input_required(&id, ALICE, Map::new()).await,
        Err(TaskError::NoInputRequests)
    ));
    assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), version);

    // The work takes the answers; their keys stay answered.
    let (task, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
    assert_eq!(
        taken,
        obj(json!({"a": {"action": "accept"}, "b": {"roots": []}}))
    );
    assert_eq!(task.input_responses(), None);
    assert_eq!(task.answered_keys().collect::<Vec<_>>(), ["a", "b"]);
    let (again, taken) = f.tasks.take_responses(&id, ALICE).await.unwrap();
    assert!(taken.is_empty());
    assert_eq!(again.version(), task.version(), "nothing to take, no write");

    // A fresh key is fine; an answered one is not outstanding.
    let task = f
        .tasks
        .set_input_required(&id, ALICE, obj(json!({"c": {}})))
        .await
        .unwrap();
    assert_eq!(task.issued_keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    let (_, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"b": "late"})))
        .await
        .unwrap();
    assert!(accepted.is_empty());

    // Ending the task drops what is outstanding; later answers are ignored.
    let task = f.tasks.cancel(&id, ALICE).await.unwrap();
    assert_eq!(task.input_requests(), None);
    assert!(task.record().state().get("inputRequests").is_none());
    let (_, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"c": {}})))
        .await
        .unwrap();
    assert!(accepted.is_empty());
}

#[tokio::test]
async fn a_task_lives_for_its_ttl_from_creation_however_busy_and_is_swept() {
    let f = fixture(ManagerConfig::default());
    let expiries = Arc::new(Expiries::default());
    f.tasks.manager().add_hook(expiries.clone());
    let busy = f.tasks.create(ALICE, Some(secs(10)), None).await.unwrap();
    let id = busy.id().to_owned();
    let done = task_in(&f, TaskStatus::Working).await; // TTL 60 s
    f.tasks.complete(&done, ALICE, Map::new()).await.unwrap();
    for _ in 0..3 {
        f.clock.advance(secs(3));
        let message = Some(format!("{}", f.clock.now().as_millis()));
        let task = f
            .tasks
            .set_status_message(&id, ALICE, message)
            .await
            .unwrap();
        assert_eq!(
            task.expires_at(),
            Timestamp::from_millis(T0 + 10_000),
            "writes do not stretch the TTL"
        );
    }
    f.clock.set(Timestamp::from_millis(T0 + 9_999));
    assert!(f.tasks.get(&id, ALICE).await.is_ok());
    f.clock.set(Timestamp::from_millis(T0 + 10_000));
    assert!(matches!(
        f.tasks.get(&id, ALICE).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        f.tasks.complete(&id, ALICE, Map::new()).await,
        Err(TaskError::Record(Error::NotFound))
    ));
    assert!(f.store.stored(&id).is_some(), "gone only when swept");
    assert_eq!(f.tasks.sweep().await.unwrap(), 1);
    assert!(f.store.stored(&id).is_none());
    assert_eq!(expiries.0.load(Ordering::SeqCst), 1);
    assert_eq!(f.tasks.sweep().await.unwrap(), 0);

    // A completed task keeps its result until its own TTL runs out.
    f.clock.set(Timestamp::from_millis(T0 + 59_999));
    assert!(f.tasks.get(&done, ALICE).await.unwrap().result().is_some());
    f.clock.set(Timestamp::from_millis(T0 + 60_000));
    assert!(matches!(
        f.tasks.get(&done, ALICE).await,
        Err(Error::NotFound)
    ));
    assert_eq!(f.tasks.sweep().await.unwrap(), 1);
    assert!(f.store.map.lock().unwrap().is_empty());
}

#[tokio::test]
async fn polling_a_task_writes_nothing() {
    let f = fixture(ManagerConfig::default().touch_interval(Duration::ZERO));
    let id = task_in(&f, TaskStatus::Working).await;
    for _ in 0..5 {
        f.clock.advance(secs(5));
        assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), 1);
    }
    assert_eq!(f.store.swaps.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn results_errors_and_requests_are_bounded_like_session_state() {
    let limit = 1024;
    let f = fixture(ManagerConfig::default().max_state_bytes(limit));
    let id = task_in(&f, TaskStatus::Working).await;
    let big = "x".repeat(limit);
    let too_large = |outcome: Result<TaskView, TaskError>| {
        matches!(
            outcome,
            Err(TaskError::Record(Error::StateTooLarge { size, limit: l }))
                if l == limit && size > limit
        )
    };
    assert!(too_large(
        f.tasks
            .complete(&id, ALICE, obj(json!({"text": big})))
            .await
    ));
    let error = ErrorObject::new(-32603, "big").with_data(json!(big));
    assert!(too_large(f.tasks.fail(&id, ALICE, error).await));
    assert!(too_large(
        f.tasks
            .set_input_required(&id, ALICE, obj(json!({"q": big})))
            .await
    ));
    assert!(too_large(
        f.tasks
            .set_status_message(&id, ALICE, Some(big.clone()))
            .await
    ));
    let task = f.tasks.get(&id, ALICE).await.unwrap();
    assert_eq!(task.version(), 1, "nothing written");
    assert_eq!(task.status(), TaskStatus::Working);

    // Answers count too.
    f.tasks
        .set_input_required(&id, ALICE, obj(json!({"q": {}})))
        .await
        .unwrap();
    assert!(matches!(
        f.tasks.answer(&id, ALICE, obj(json!({"q": big}))).await,
        Err(Error::StateTooLarge { .. })
    ));
    assert_eq!(
        f.tasks.get(&id, ALICE).await.unwrap().status(),
        TaskStatus::InputRequired
    );

    // Within the limit all is well.
    let task = f
        .tasks
        .complete(&id, ALICE, obj(json!({"text": "small"})))
        .await
        .unwrap();
    assert_eq!(task.status(), TaskStatus::Completed);
}

#[tokio::test]
async fn a_change_that_lost_a_race_is_judged_again_on_the_version_that_won() {
    let f = fixture(ManagerConfig::default());

    // Cancelled by another process between our load and our write: the
    // completion is refused, and the cancellation stands.
    let id = task_in(&f, TaskStatus::Working).await;
    f.store.rival(|state| {
        state.insert("status".into(), json!("cancelled"));
    });
    assert!(matches!(
        f.tasks.complete(&id, ALICE, obj(json!({"ok": 1}))).await,
        Err(TaskError::Terminal {
            status: TaskStatus::Cancelled
        })
    ));
    let task = f.tasks.get(&id, ALICE).await.unwrap();
    assert_eq!(task.status(), TaskStatus::Cancelled);
    assert_eq!(task.record().state().get("result"), None);
    assert_eq!(f.store.swaps.load(Ordering::SeqCst), 1, "no second write");

    // A rival issued key `k` meanwhile: our `k` is refused on its version.
    let id = task_in(&f, TaskStatus::Working).await;
    f.store.rival(|state| {
        state.insert("issuedKeys".into(), json!(["k"]));
        state.insert("answeredKeys".into(), json!(["k"]));
    });
    assert!(matches!(
        f.tasks
            .set_input_required(&id, ALICE, obj(json!({"k": {}})))
            .await,
        Err(TaskError::KeyReused { .. })
    ));

    // A harmless rival change: ours lands on top of it, losing nothing.
    let id = task_in(&f, TaskStatus::InputRequired).await;
    f.store.rival(|state| {
        state.insert("statusMessage".into(), json!("from elsewhere"));
    });
    let (task, accepted) = f
        .tasks
        .answer(&id, ALICE, obj(json!({"q": {}})))
        .await
        .unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(task.status(), TaskStatus::Working);
    assert_eq!(task.status_message(), Some("from elsewhere"));
    assert_eq!(task.version(), 4, "create, ask, rival, answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_a_racing_completion_and_cancellation_exactly_one_wins() {
    let f = Arc::new(fixture(ManagerConfig::default()));
    for _ in 0..50 {
        let id = task_in(&f, TaskStatus::Working).await;
        let (c, i) = (f.clone(), id.clone());
        let complete =
            tokio::spawn(async move { c.tasks.complete(&i, ALICE, obj(json!({"ok": 1}))).await });
        let (c, i) = (f.clone(), id.clone());
        let cancel = tokio::spawn(async move { c.tasks.cancel(&i, ALICE).await });
        let (complete, cancel) = (complete.await.unwrap(), cancel.await.unwrap());
        let winner = f.tasks.get(&id, ALICE).await.unwrap().status();
        match (complete, cancel) {
            (Ok(_), Err(TaskError::Terminal { status })) => {
                assert_eq!((winner, status), (TaskStatus::Completed, winner));
            }
            (Err(TaskError::Terminal { status }), Ok(_)) => {
                assert_eq!((winner, status), (TaskStatus::Cancelled, winner));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.tasks.get(&id, ALICE).await.unwrap().version(), 2);
    }
}

#[tokio::test]
async fn to_wire_gives_the_detailed_task_of_each_status() {
    let f = fixture(ManagerConfig::default());
    let id = task_in(&f, TaskStatus::Working).await;
    f.clock.advance(Duration::from_millis(1_500));
    let task = f
        .tasks
        .set_status_message(&id, ALICE, Some("fetching".into()))
        .await
        .unwrap();
    assert_eq!(
        task.to_wire(),
        json!({
            "taskId": id,
            "status": "working",
            "statusMessage": "fetching",
            "createdAt": at(T0),
            "lastUpdatedAt": at(T0 + 1_500),
            "ttlMs": 60_000,
        })
    );
    f.clock.advance(secs(1));
    let ask = obj(json!({"name": {"method": "elicitation/create", "params": {"mode": "form"}}}));
    let task = f.tasks.set_input_required(&id, ALICE, ask).await.unwrap();
    assert_eq!(
        task.to_wire(),
        json!({
            "taskId": id,
            "status": "input_required",
            "statusMessage": "fetching",
            "createdAt": at(T0),
            "lastUpdatedAt": at(T0 + 2_500),
            "ttlMs": 60_000,
            "inputRequests": {
                "name": {"method": "elicitation/create", "params": {"mode": "form"}}
            },
        })
    );
    // A clock that went back (another replica's) never moves it backwards.
    f.clock.set(Timestamp::from_millis(T0 + 2_000));
    let error = ErrorObject::new(-32603, "API rate limit exceeded").with_data(json!({"retry": 5}));
    let task = f.tasks.fail(&id, ALICE, error).await.unwrap();
    assert_eq!(
        task.to_wire(),
        json!({
            "taskId": id,
            "status": "failed",
            "statusMessage": "API rate limit exceeded",
            "createdAt": at(T0),
            "lastUpdatedAt": at(T0 + 2_500),
            "ttlMs": 60_000,
            "error": {"code": -32603, "message": "API rate limit exceeded", "data": {"retry": 5}},
        })
    );

    let id = task_in(&f, TaskStatus::Working).await;
    f.tasks
        .set_status_message(&id, ALICE, Some("about to finish".into()))
        .await
        .unwrap();
    let result = obj(json!({"content": [{"type": "text", "text": "Hello"}], "isError": true}));
    let task = f.tasks.complete(&id, ALICE, result).await.unwrap();
    let wire = task.to_wire();
    assert_eq!(wire["status"], "completed");
    assert_eq!(wire["result"]["isError"], true);
    assert!(
        wire.get("statusMessage").is_none(),
        "the work's message is dropped"
    );
    assert!(wire.get("resultType").is_none());

    let id = task_in(&f, TaskStatus::Cancelled).await;
    let wire = f.tasks.get(&id, ALICE).await.unwrap().to_wire();
    let keys: BTreeSet<&str> = wire
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["taskId", "status", "createdAt", "lastUpdatedAt", "ttlMs"])
    );
    assert_eq!(wire["status"], "cancelled");
}

#[tokio::test]
async fn a_record_that_is_not_a_task_reads_as_corrupt() {
    let f = fixture(ManagerConfig::default());
    let with_ttl = ExpiryPolicy::idle(secs(60)).with_max_lifetime(secs(60));
    let cases = [
        (json!({}), with_ttl),
        (json!({"status": "done"}), with_ttl),
        (json!({"status": "completed"}), with_ttl),
        (json!({"status": "failed", "error": "text"}), with_ttl),
        (json!({"status": "input_required"}), with_ttl),
        (
            json!({"status": "working", "lastUpdatedAt": "soon"}),
            with_ttl,
        ),
        (json!({"status": "working"}), ExpiryPolicy::idle(secs(60))),
    ];
    for (state, policy) in cases {
        let id = Tasks::generate();
        let record = SessionRecord::create(
            id.clone(),
            NewSession::new().owner("alice").state(obj(state.clone())),
            Timestamp::from_millis(T0),
            policy,
        );
        f.store.insert(&record).await.unwrap();
        assert!(
            matches!(
                f.tasks.get(id.as_str(), ALICE).await,
                Err(Error::Corrupt { .. })
            ),
            "{state}"
        );
        assert!(
            matches!(
                f.tasks.cancel(id.as_str(), ALICE).await,
                Err(TaskError::Record(Error::Corrupt { .. }))
            ),
            "{state}"
        );
    }
}
