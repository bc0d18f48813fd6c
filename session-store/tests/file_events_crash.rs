//! Crash test for `FileEventStore`: a child process appends events and
//! records every acknowledged one; the parent kills it with SIGKILL at a
//! random moment, reopens the directory and checks that every acknowledged
//! event the bounds still keep is there, intact, and that no id was handed
//! out twice. Repeated on one directory, so each round also recovers from the
//! previous round's crash; the small compaction threshold makes compactions
//! happen between and during crashes. Every other round the child keeps
//! zeros written ahead of every log (`reserve_from_bytes(0)`); the other
//! rounds append.
//!
//! The child is this test binary run again with `crash_child` selected and
//! the child's settings in an environment variable; without it, `crash_child`
//! does nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use session_core::{EventId, EventStore, SessionId, StreamId};
use session_store::{Error, FileEventStore, FileEventStoreOptions};

const CHILD_ENV: &str = "SESSION_STORE_FILE_EVENTS_CRASH_CHILD";
const ROUNDS: usize = 12;
const WRITERS: u64 = 8;
const EVENTS_PER_STREAM: usize = 16;
const SESSIONS: usize = 4;
const STREAMS: [&str; 3] = ["g", "a", "b"];

fn options() -> FileEventStoreOptions {
    FileEventStoreOptions::default()
        .events_per_stream(EVENTS_PER_STREAM)
        .streams_per_session(8)
        .compact_min_bytes(16 << 10)
}

/// The child's options: in rounds whose seed is even, zeros are written
/// ahead of every log from its start, so that kills land in appends written
/// over them; in the others appends extend the log.
fn child_options(seed: u64) -> FileEventStoreOptions {
    let reserve_from = if seed.is_multiple_of(2) { 0 } else { u64::MAX };
    options().reserve_from_bytes(reserve_from)
}

fn session(i: usize) -> SessionId {
    SessionId::parse(&format!("crash-session-{i}")).unwrap()
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
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// The child: appends until killed. Ack lines, each written with one
/// `write` after the store acknowledged: `A <session> <stream> <seq> <data>`
/// for an event, `R <session>` for a removed session.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // not running as the child
    };
    let mut parts = spec.splitn(3, '|');
    let (dir, acks, seed) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    session_store::testkit::block_on(async move {
        let store = Arc::new(
            FileEventStore::open_with(&dir, child_options(seed)).expect("the child opens"),
        );
        let out = Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&acks)
                .unwrap(),
        ));
        let ack = move |line: String| {
            out.lock()
                .unwrap()
                .write_all(format!("{line}\n").as_bytes())
                .unwrap();
        };
        let ack = Arc::new(ack);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, ack) = (store.clone(), ack.clone());
                tokio::spawn(async move {
                    let mut rng = Rng(seed.wrapping_mul(w + 7) | 1);
                    for k in 0u64.. {
                        if rng.below(100) == 0 {
                            let temp = SessionId::parse(&format!("temp-{seed}-{w}-{k}")).unwrap();
                            let g = StreamId::standalone();
                            store.append(&temp, &g, "{}".into()).await.unwrap();
                            store.append(&temp, &g, "{}".into()).await.unwrap();
                            store.remove_session(&temp).await.unwrap();
                            ack(format!("R {temp}"));
                            continue;
                        }
                        let s = session(rng.below(SESSIONS as u64) as usize);
                        let stream = StreamId::parse(STREAMS[rng.below(3) as usize]).unwrap();
                        let data = format!("{{\"seed\":{seed},\"w\":{w},\"k\":{k}}}");
                        let id = store
                            .append(&s, &stream, data.clone().into())
                            .await
                            .unwrap();
                        ack(format!("A {s} {stream} {} {data}", id.seq));
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

fn lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    // A line without its newline was not finished: not a promise.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn acknowledged_events_survive_kill_9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed());
    // Per stream: every acknowledged event by its seq.
    let mut promised: HashMap<(SessionId, StreamId), BTreeMap<u64, String>> = HashMap::new();
    let mut removed: HashSet<SessionId> = HashSet::new();
    let (mut acks, mut torn, mut compacted_rounds) = (0usize, 0u64, 0usize);
    for round in 0..ROUNDS {
        let ack_path = dir.path().join(format!("acks-{round}"));
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--test-threads=1", "--nocapture"])
            .env(
                CHILD_ENV,
                format!(
                    "{}|{}|{}",
                    events.display(),
                    ack_path.display(),
                    // Even rounds with reserved zeros, odd ones without.
                    (rng.below(u64::MAX) & !1) | (round as u64 & 1)
                ),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines(&ack_path).len() < 30 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the child acknowledged nothing"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the child exited"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = FileEventStore::open_with(&events, options());
        assert!(
            matches!(second, Err(Error::Locked { .. })),
            "round {round}: a second process opened a directory in use: {second:?}"
        );
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let mut newest_before: HashMap<(SessionId, StreamId), u64> = promised
            .iter()
            .map(|(k, v)| (k.clone(), v.keys().next_back().copied().unwrap_or(0)))
            .collect();
        for line in lines(&ack_path) {
            acks += 1;
            let fields: Vec<&str> = line.splitn(5, ' ').collect();
            let s = SessionId::parse(fields[1]).unwrap();
            match fields[0] {
                "R" => {
                    removed.insert(s);
                }
                "A" => {
                    let stream = StreamId::parse(fields[2]).unwrap();
                    let seq: u64 = fields[3].parse().unwrap();
                    let key = (s, stream);
                    let before = *newest_before.entry(key.clone()).or_default();
                    assert!(
                        seq > before,
                        "round {round}: {line}: id reused after a restart (had {before})"
                    );
                    let previous = promised
                        .entry(key)
                        .or_default()
                        .insert(seq, fields[4].to_owned());
                    assert!(previous.is_none(), "round {round}: {line}: id given twice");
                }
                other => panic!("unknown ack {other}"),
            }
        }

        let store = FileEventStore::open_with(&events, options()).unwrap();
        let report = store.recovery().clone();
        assert!(
            report.damage.is_empty(),
            "round {round}: damage after kill -9: {report:?}"
        );
        torn += report.torn_bytes;
        if fs::read_dir(&events).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with("snapshot-")
        }) {
            compacted_rounds += 1;
        }
        session_store::testkit::block_on(async {
            for ((s, stream), events) in &promised {
                let newest = *events.keys().next_back().unwrap();
                let latest = store
                    .latest(s, stream)
                    .await
                    .unwrap()
                    .map_or(0, |id| id.seq);
                assert!(
                    latest >= newest,
                    "round {round}: {s} {stream}: acknowledged {newest}, latest {latest}"
                );
                let kept_from = latest.saturating_sub(EVENTS_PER_STREAM as u64) + 1;
                for (seq, data) in events.range(kept_from..) {
                    let before = EventId {
                        stream: stream.clone(),
                        seq: seq - 1,
                    };
                    let replay = store.replay_after(s, &before).await.unwrap();
                    let first = replay.as_ref().and_then(|r| r.first());
                    assert_eq!(
                        first.map(|e| (e.id.seq, &*e.data)),
                        Some((*seq, data.as_str())),
                        "round {round}: acknowledged {s} {stream}_{seq} lost or changed"
                    );
                }
            }
            for s in &removed {
                assert_eq!(
                    store.latest(s, &StreamId::standalone()).await.unwrap(),
                    None,
                    "round {round}: removed session {s} came back"
                );
            }
        });
    }
    assert!(acks > ROUNDS * 30);
    assert!(
        compacted_rounds > 0,
        "no compaction happened in {ROUNDS} rounds"
    );
    println!(
        "event store crash test: {ROUNDS} kill -9 rounds, {acks} acknowledgements checked, \
         {} removed sessions, {torn} torn bytes dropped, snapshots seen in {compacted_rounds} rounds, {:.1} s",
        removed.len(),
        started.elapsed().as_secs_f64()
    );
}
