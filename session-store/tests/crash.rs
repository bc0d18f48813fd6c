//! Crash test: a child process writes to a `FileStore` and reports every
//! acknowledged write on stdout; the parent kills it with SIGKILL at a random
//! moment, reopens the directory and checks that nothing acknowledged is lost
//! and nothing inconsistent is returned. Repeated on one directory, so each
//! round also recovers from the previous round's crash, and the small
//! compaction threshold makes compactions happen mid-crash too. Every other
//! round the child keeps zeros written ahead of every log
//! (`reserve_from_bytes(0)`), so kills also land in batches written over
//! them; the other rounds append.
//!
//! While the child runs, the parent also checks that a second process cannot
//! open the directory.
//!
//! Run as a plain program (`harness = false`): `cargo test -p session-store --test crash`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use session_core::{
    ManagerConfig, NewSession, SessionId, SessionManager, SessionStatus, SessionStore,
};
use session_store::{Error, FileStore, FileStoreOptions, SystemClock};

const ROUNDS: usize = 12;
const WRITERS: usize = 16;

fn options() -> FileStoreOptions {
    FileStoreOptions::default().compact_min_bytes(64 << 10)
}

/// The child's options: in rounds whose seed is even, zeros are written
/// ahead of every log from its start, so that kills land in batches written
/// over them; in the others batches append (the logs stay under the default
/// threshold).
fn child_options(seed: u64) -> FileStoreOptions {
    let reserve_from = if seed.is_multiple_of(2) { 0 } else { u64::MAX };
    options().reserve_from_bytes(reserve_from)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(Path::new(&args[2]), args[3].parse().unwrap_or(1));
    } else {
        parent();
    }
}

/// A small xorshift generator: the test needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ u64::from(std::process::id()) << 32 | 1
}

/// Writes until killed. Ack lines: `C id` created, `U id version counter`
/// updated, `X id version` closed.
fn child(dir: &Path, seed: u64) {
    session_store::testkit::block_on(async move {
        let store = Arc::new(
            FileStore::open_with(dir, child_options(seed)).expect("child opens the store"),
        );
        let manager = Arc::new(SessionManager::new(
            store.clone(),
            Arc::new(SystemClock),
            ManagerConfig::default().idle_timeout(Duration::from_secs(3600)),
        ));
        let mut live = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list(cursor.as_deref(), 1000).await.unwrap();
            live.extend(
                page.records
                    .iter()
                    .filter(|r| r.stored_status() == SessionStatus::Active)
                    .map(|r| r.id().clone()),
            );
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let live = Arc::new(Mutex::new(live));
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let ack = move |line: String| {
            let mut out = out.lock().unwrap();
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        };
        let ack = Arc::new(ack);
        let _writers: Vec<_> = (0..WRITERS as u64)
            .map(|w| {
                let (manager, live, ack) = (manager.clone(), live.clone(), ack.clone());
                tokio::spawn(async move {
                    let mut rng = Rng(seed.wrapping_mul(w + 7) | 1);
                    loop {
                        let pick = {
                            let live = live.lock().unwrap();
                            (!live.is_empty())
                                .then(|| live[rng.below(live.len() as u64) as usize].clone())
                        };
                        let roll = rng.below(100);
                        match pick {
                            Some(id) if roll < 2 => {
                                if let Ok(r) = manager.close(&id).await {
                                    live.lock().unwrap().retain(|x| x != &id);
                                    ack(format!("X {id} {}", r.version()));
                                }
                            }
                            Some(id) if roll < 90 => {
                                let result = manager
                                    .update(&id, |s| {
                                        let n =
                                            s.get("counter").and_then(|v| v.as_u64()).unwrap_or(0);
                                        s.insert("counter".into(), json!(n + 1));
                                        n + 1
                                    })
                                    .await;
                                if let Ok((r, n)) = result {
                                    ack(format!("U {id} {} {n}", r.version()));
                                }
                            }
                            _ => {
                                let state = serde_json::from_value(json!({"counter": 0})).unwrap();
                                let r = manager
                                    .create(NewSession::new().state(state))
                                    .await
                                    .unwrap();
                                ack(format!("C {}", r.id()));
                                live.lock().unwrap().push(r.id().clone());
                            }
                        }
                    }
                })
            })
            .collect();
        // The writers never finish: the parent kills this process.
        std::future::pending::<()>().await;
    });
}

/// What the acknowledgements promise about one session.
#[derive(Debug, Default)]
struct Promise {
    version: u64,
    counter: u64,
    closed: bool,
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed());
    let mut promises: HashMap<SessionId, Promise> = HashMap::new();
    let (mut acks, mut torn, mut lock_checks) = (0usize, 0u64, 0usize);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .arg("--child")
            .arg(dir.path())
            // Even rounds with reserved zeros, odd ones without.
            .arg(((rng.below(u64::MAX) & !1) | (round as u64 & 1)).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) => lines.lock().unwrap().push(line),
                        Err(_) => break,
                    }
                }
            })
        };
        // Wait until the child is writing, then let it run a random while.
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines.lock().unwrap().len() < 20 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the child wrote nothing"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the child exited"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = FileStore::open(dir.path());
        assert!(
            matches!(second, Err(Error::Locked { .. })),
            "round {round}: another process opened a directory in use: {second:?}"
        );
        lock_checks += 1;
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        for line in lines.lock().unwrap().iter() {
            acks += 1;
            let fields: Vec<&str> = line.split(' ').collect();
            let id = SessionId::parse(fields[1]).unwrap();
            let number = |i: usize| fields[i].parse::<u64>().unwrap();
            let promise = promises.entry(id).or_default();
            match fields[0] {
                "C" => promise.version = promise.version.max(1),
                "U" => {
                    promise.version = promise.version.max(number(2));
                    promise.counter = promise.counter.max(number(3));
                }
                "X" => {
                    promise.version = promise.version.max(number(2));
                    promise.closed = true;
                }
                other => panic!("unknown ack {other}"),
            }
        }

        let store = FileStore::open_with(dir.path(), options()).unwrap();
        let report = store.recovery().clone();
        assert!(
            report.corrupt.is_empty(),
            "round {round}: corrupt after kill -9: {report:?}"
        );
        assert!(
            report.damage.is_empty(),
            "round {round}: damage after kill -9: {report:?}"
        );
        torn += report.torn_bytes;
        session_store::testkit::block_on(async {
            for (id, promise) in &promises {
                let record = store
                    .load(id)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged session {id} lost"));
                let counter = record.state()["counter"].as_u64().unwrap();
                let closed = record.stored_status() == SessionStatus::Closed;
                assert!(
                    record.version() >= promise.version && counter >= promise.counter,
                    "round {round}: {id} lost an acknowledged write: {promise:?}, stored v{} counter {counter}",
                    record.version()
                );
                assert!(
                    closed || !promise.closed,
                    "round {round}: {id} lost its close"
                );
                assert_eq!(
                    record.version(),
                    1 + counter + u64::from(closed),
                    "round {round}: {id} is inconsistent (version and state disagree)"
                );
            }
        });
    }
    println!(
        "crash test: {ROUNDS} kill -9 rounds, {} sessions, {acks} acknowledged writes checked, \
         {torn} torn bytes dropped, {lock_checks} cross-process lock checks, {:.1} s",
        promises.len(),
        started.elapsed().as_secs_f64()
    );
}
