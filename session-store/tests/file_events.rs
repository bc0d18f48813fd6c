//! What a `FileEventStore` promises, on real directories: the `EventStore`
//! contract, bounds, durability across reopen, ids that never repeat, torn
//! tails dropped, damage detected and skipped, one opener per directory,
//! compaction that keeps exactly the retained events, group commit under
//! concurrency.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use session_core::{EventId, EventStore, SessionId, StoredEvent, StreamId};
use session_store::{Error, FileEventStore, FileEventStoreOptions, MemoryEventStore};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    session_store::testkit::block_on(f)
}

fn open(dir: &Path, events: usize, streams: usize) -> FileEventStore {
    FileEventStore::open(dir, events, streams).unwrap()
}

fn id(stream: &StreamId, seq: u64) -> EventId {
    EventId {
        stream: stream.clone(),
        seq,
    }
}

fn data(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| &*e.data).collect()
}

/// The store's files named `<prefix>…`, sorted.
fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && name.ends_with(".mcpe")
        })
        .collect();
    out.sort();
    out
}

fn only_log(dir: &Path) -> PathBuf {
    let logs = files(dir, "log-");
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

#[test]
fn append_replay_and_latest_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10, 10);
    block_on(async {
        let s = SessionId::generate();
        let (a, b) = (StreamId::generate(), StreamId::standalone());
        assert_eq!(store.latest(&s, &a).await.unwrap(), None);
        assert_eq!(store.replay_after(&s, &id(&a, 0)).await.unwrap(), None);
        let a1 = store.append(&s, &a, "a1".into()).await.unwrap();
        let b1 = store.append(&s, &b, "b1".into()).await.unwrap();
        store.append(&s, &a, "a2".into()).await.unwrap();
        let a3 = store.append(&s, &a, "a3".into()).await.unwrap();
        assert_eq!((a1.seq, b1.seq, a3.seq), (1, 1, 3));
        assert_eq!(b1.to_string(), "g_1");

        let replay = store.replay_after(&s, &a1).await.unwrap().unwrap();
        assert_eq!(data(&replay), ["a2", "a3"]);
        assert_eq!(replay[1].id, a3);
        let from_origin = store.replay_after(&s, &id(&a, 0)).await.unwrap().unwrap();
        assert_eq!(data(&from_origin), ["a1", "a2", "a3"]);
        assert_eq!(store.replay_after(&s, &a3).await.unwrap(), Some(vec![]));
        assert_eq!(
            store.replay_after(&s, &id(&a, 4)).await.unwrap(),
            None,
            "an id from the future"
        );
        assert_eq!(store.latest(&s, &a).await.unwrap(), Some(a3));
        assert_eq!(store.latest(&s, &b).await.unwrap(), Some(b1.clone()));

        let other = SessionId::generate();
        assert_eq!(store.replay_after(&other, &a1).await.unwrap(), None);
        assert_eq!(store.latest(&other, &b).await.unwrap(), None);
        let unknown = StreamId::generate();
        assert_eq!(
            store.replay_after(&s, &id(&unknown, 0)).await.unwrap(),
            None
        );
    });
}

#[test]
fn bounds_hold_like_the_memory_store_and_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionId::generate();
    let (a, x, y) = (
        StreamId::generate(),
        StreamId::generate(),
        StreamId::generate(),
    );
    let check = |store: &FileEventStore, stage: &str| {
        block_on(async {
            assert_eq!(
                store.replay_after(&s, &id(&a, 1)).await.unwrap(),
                None,
                "{stage}: event 2 is gone"
            );
            let replay = store.replay_after(&s, &id(&a, 2)).await.unwrap().unwrap();
            assert_eq!(data(&replay), ["3", "4"], "{stage}");
            assert_eq!(
                store.latest(&s, &a).await.unwrap(),
                Some(id(&a, 4)),
                "{stage}"
            );
        })
    };
    {
        let store = open(dir.path(), 2, 2);
        block_on(async {
            for n in 1..=4 {
                store.append(&s, &a, n.to_string().into()).await.unwrap();
            }
        });
        check(&store, "live");
        drop(store);
        let store = open(dir.path(), 2, 2);
        check(&store, "reopened");
        block_on(async {
            store.append(&s, &x, "x".into()).await.unwrap();
            store.append(&s, &y, "y".into()).await.unwrap();
            assert_eq!(
                store.replay_after(&s, &id(&a, 2)).await.unwrap(),
                None,
                "stream a was dropped (oldest of three)"
            );
            assert_eq!(store.latest(&s, &a).await.unwrap(), None);
        });
    }
    let store = open(dir.path(), 2, 2);
    block_on(async {
        assert_eq!(store.replay_after(&s, &id(&a, 2)).await.unwrap(), None);
        let replay = store.replay_after(&s, &id(&x, 0)).await.unwrap().unwrap();
        assert_eq!(data(&replay), ["x"]);
        // Recreating a dropped stream's name never reuses one of its ids.
        let again = store.append(&s, &a, "again".into()).await.unwrap();
        assert!(again.seq > 4, "{again}");
        assert_eq!(
            store.replay_after(&s, &id(&a, 2)).await.unwrap(),
            None,
            "an id of the dropped stream does not resume the new one"
        );
    });
    let report = store.recovery();
    assert_eq!((report.sessions, report.streams), (1, 2), "{report:?}");
}

#[test]
fn remove_session_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (gone, kept) = (SessionId::generate(), SessionId::generate());
    let g = StreamId::standalone();
    {
        let store = open(dir.path(), 10, 10);
        block_on(async {
            store.append(&gone, &g, "1".into()).await.unwrap();
            store.append(&kept, &g, "k".into()).await.unwrap();
            store.append(&gone, &g, "2".into()).await.unwrap();
            store.remove_session(&gone).await.unwrap();
            assert_eq!(store.latest(&gone, &g).await.unwrap(), None);
            // Removing a session without events is fine too.
            store.remove_session(&SessionId::generate()).await.unwrap();
        });
    }
    let store = open(dir.path(), 10, 10);
    assert!(store.recovery().damage.is_empty(), "{:?}", store.recovery());
    block_on(async {
        assert_eq!(store.latest(&gone, &g).await.unwrap(), None);
        assert_eq!(store.replay_after(&gone, &id(&g, 0)).await.unwrap(), None);
        let kept_events = store
            .replay_after(&kept, &id(&g, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(data(&kept_events), ["k"]);
    });
}

#[test]
fn ids_continue_after_reopen_and_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionId::generate();
    let g = StreamId::standalone();
    let mut seen = Vec::new();
    for round in 0..4 {
        let store = open(dir.path(), 2, 4);
        block_on(async {
            for _ in 0..3 {
                let e = store
                    .append(&s, &g, format!("round {round}").into())
                    .await
                    .unwrap();
                seen.push(e.seq);
            }
        });
    }
    assert_eq!(seen, (1..=12).collect::<Vec<u64>>());
    let store = open(dir.path(), 2, 4);
    block_on(async {
        assert_eq!(store.latest(&s, &g).await.unwrap(), Some(id(&g, 12)));
        let replay = store.replay_after(&s, &id(&g, 10)).await.unwrap().unwrap();
        assert_eq!(
            replay.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
            [11, 12]
        );
    });
}

/// Appends `event 1` … `event 5` to `g`.
fn append_five(store: &FileEventStore, s: &SessionId, g: &StreamId) {
    block_on(async {
        for n in 1..=5 {
            store
                .append(s, g, format!("event {n}").into())
                .await
                .unwrap();
        }
    });
}

#[test]
fn zeros_written_ahead_of_the_log_are_neither_torn_nor_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionId::generate();
    let g = StreamId::standalone();
    {
        let options = FileEventStoreOptions::default().reserve_from_bytes(0);
        let store = FileEventStore::open_with(dir.path(), options).unwrap();
        append_five(&store, &s, &g);
    }
    let log = only_log(dir.path());
    let bytes = fs::read(&log).unwrap();
    let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
    assert!(zeros >= 256 << 10, "zeros ahead of the log: {zeros}");
    let store = open(dir.path(), 100, 10);
    let report = store.recovery().clone();
    assert_eq!(report.torn_bytes, 0, "{report:?}");
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(report.events, 5);
    assert!(
        fs::metadata(&log).unwrap().len() <= (bytes.len() - zeros) as u64 + 64,
        "reopening truncates the zeros"
    );
    block_on(async {
        let e = store.append(&s, &g, "after".into()).await.unwrap();
        assert_eq!(e.seq, 6);
    });
}

#[test]
fn a_torn_tail_is_dropped_and_the_log_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionId::generate();
    let g = StreamId::standalone();
    {
        let store = open(dir.path(), 100, 10);
        append_five(&store, &s, &g);
    }
    // Cut the last frame short, as a write interrupted by a crash leaves it.
    let log = only_log(dir.path());
    let len = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    {
        let store = open(dir.path(), 100, 10);
        let report = store.recovery().clone();
        assert!(report.torn_bytes > 0, "{report:?}");
        assert!(report.damage.is_empty(), "{report:?}");
        assert_eq!(report.events, 4);
        block_on(async {
            assert_eq!(store.latest(&s, &g).await.unwrap(), Some(id(&g, 4)));
            let e = store.append(&s, &g, "after the tear".into()).await.unwrap();
            assert_eq!(e.seq, 5, "the torn event was never acknowledged");
        });
    }
    let store = open(dir.path(), 100, 10);
    let report = store.recovery();
    assert_eq!(report.torn_bytes, 0, "{report:?}");
    assert!(report.damage.is_empty(), "{report:?}");
    block_on(async {
        let replay = store.replay_after(&s, &id(&g, 3)).await.unwrap().unwrap();
        assert_eq!(data(&replay), ["event 4", "after the tear"]);
    });
}

fn flip_byte_of(path: &Path, needle: &str, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in {}", path.display()));
    bytes[at + offset] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupted_byte_is_detected_and_the_event_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionId::generate();
    let (g, r) = (StreamId::standalone(), StreamId::generate());
    {
        let store = open(dir.path(), 100, 10);
        block_on(async {
            for n in 1..=5 {
                store
                    .append(&s, &g, format!("{{\"g\":{n}}}").into())
                    .await
                    .unwrap();
                store
                    .append(&s, &r, format!("{{\"r\":{n}}}").into())
                    .await
                    .unwrap();
            }
        });
    }
    let log = only_log(dir.path());
    // A byte of g's third event's data, and one of r's last event's data.
    flip_byte_of(&log, "{\"g\":3}", 2);
    flip_byte_of(&log, "{\"r\":5}", 2);
    let store = open(dir.path(), 100, 10);
    let report = store.recovery().clone();
    assert_eq!(report.damage.len(), 2, "{report:?}");
    assert!(
        report.damage.iter().all(|d| d.contains("checksum")),
        "{report:?}"
    );
    assert_eq!(report.torn_bytes, 0, "{report:?}");
    block_on(async {
        for before in 0..3 {
            assert_eq!(
                store.replay_after(&s, &id(&g, before)).await.unwrap(),
                None,
                "resuming g from {before} would skip the damaged event"
            );
        }
        let replay = store.replay_after(&s, &id(&g, 3)).await.unwrap().unwrap();
        assert_eq!(data(&replay), ["{\"g\":4}", "{\"g\":5}"]);
        // The damaged last event of r still counts: its id is not reused.
        assert_eq!(store.latest(&s, &r).await.unwrap(), Some(id(&r, 5)));
        assert_eq!(store.replay_after(&s, &id(&r, 4)).await.unwrap(), None);
        let next = store.append(&s, &r, "{\"r\":6}".into()).await.unwrap();
        assert_eq!(next.seq, 6);
    });

    // A damaged frame header: the frame is skipped, the rest is read.
    drop(store);
    let dir2 = tempfile::tempdir().unwrap();
    {
        let store = open(dir2.path(), 100, 10);
        block_on(async {
            for n in 1..=3 {
                store
                    .append(&s, &g, format!("{{\"h\":{n}}}").into())
                    .await
                    .unwrap();
            }
        });
    }
    let log = only_log(dir2.path());
    // The stream id `g` sits just before the data; it is covered by the
    // header checksum.
    flip_byte_of(&log, "g{\"h\":2}", 0);
    let store = open(dir2.path(), 100, 10);
    let report = store.recovery().clone();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert!(report.damage[0].contains("skipped"), "{report:?}");
    block_on(async {
        assert_eq!(store.replay_after(&s, &id(&g, 1)).await.unwrap(), None);
        let replay = store.replay_after(&s, &id(&g, 2)).await.unwrap().unwrap();
        assert_eq!(data(&replay), ["{\"h\":3}"]);
    });
}

#[test]
fn a_second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 10, 10);
    let second = FileEventStore::open(dir.path(), 10, 10);
    let Err(error) = second else {
        panic!("a second store opened a directory in use");
    };
    assert!(matches!(error, Error::Locked { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("in use"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    drop(first);
    open(dir.path(), 10, 10);
}

/// What the store should answer, written as plainly as possible: the
/// bounds of `MemoryEventStore`, plus the one difference that a stream
/// created after the session dropped one starts above every id the session
/// used (the session's floor), so a reused name never repeats an id.
#[derive(Default)]
struct Model {
    sessions: HashMap<SessionId, ModelSession>,
}

#[derive(Default)]
struct ModelSession {
    order: Vec<StreamId>,
    streams: HashMap<StreamId, ModelStream>,
    floor: u64,
}

struct ModelStream {
    /// Position 0 replays the whole stream while nothing is dropped.
    first: u64,
    last: u64,
    events: Vec<(u64, Arc<str>)>,
}

impl Model {
    fn append(
        &mut self,
        s: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
        limits: (usize, usize),
    ) -> u64 {
        let session = self.sessions.entry(s.clone()).or_default();
        if !session.streams.contains_key(stream) {
            if session.order.len() >= limits.1 {
                let oldest = session.order.remove(0);
                let dropped = session.streams.remove(&oldest).unwrap();
                session.floor = session.floor.max(dropped.last);
            }
            session.order.push(stream.clone());
            let floor = session.floor;
            session.streams.insert(
                stream.clone(),
                ModelStream {
                    first: floor + 1,
                    last: floor,
                    events: Vec::new(),
                },
            );
        }
        let st = session.streams.get_mut(stream).unwrap();
        st.last += 1;
        st.events.push((st.last, data));
        if st.events.len() > limits.0 {
            st.events.remove(0);
        }
        st.last
    }

    fn latest(&self, s: &SessionId, stream: &StreamId) -> Option<EventId> {
        let st = self.sessions.get(s)?.streams.get(stream)?;
        Some(id(stream, st.last))
    }

    fn replay_after(&self, s: &SessionId, after: &EventId) -> Option<Vec<StoredEvent>> {
        let st = self.sessions.get(s)?.streams.get(&after.stream)?;
        let oldest = st.events.first().map_or(st.last + 1, |(seq, _)| *seq);
        let whole = after.seq == 0 && oldest == st.first;
        if after.seq > st.last || (after.seq + 1 < oldest && !whole) {
            return None;
        }
        Some(
            st.events
                .iter()
                .filter(|(seq, _)| *seq > after.seq)
                .map(|(seq, data)| StoredEvent {
                    id: id(&after.stream, *seq),
                    data: data.clone(),
                })
                .collect(),
        )
    }
}

/// Compares every observable answer of `store` with the model's for the
/// streams in `used`.
fn same_as_model(
    store: &FileEventStore,
    model: &Model,
    used: &HashMap<SessionId, Vec<StreamId>>,
    stage: &str,
) {
    block_on(async {
        for (s, streams) in used {
            for stream in streams {
                let latest = model.latest(s, stream);
                assert_eq!(
                    store.latest(s, stream).await.unwrap(),
                    latest,
                    "{stage}: latest of {s} {stream}"
                );
                let last = latest.map_or(0, |l| l.seq);
                for seq in 0..=last + 1 {
                    let after = id(stream, seq);
                    assert_eq!(
                        store.replay_after(s, &after).await.unwrap(),
                        model.replay_after(s, &after),
                        "{stage}: replay of {s} after {after}"
                    );
                }
            }
        }
    });
}

#[test]
fn the_model_agrees_with_the_memory_store_while_no_stream_is_dropped() {
    let (memory, mut model) = (MemoryEventStore::new(3, 8), Model::default());
    let s = SessionId::generate();
    let streams: Vec<StreamId> = (0..4).map(|_| StreamId::generate()).collect();
    block_on(async {
        for n in 0..40u64 {
            let stream = &streams[(n * 7 % 4) as usize];
            let data: Arc<str> = n.to_string().into();
            let seq = model.append(&s, stream, data.clone(), (3, 8));
            assert_eq!(memory.append(&s, stream, data).await.unwrap().seq, seq);
        }
        for stream in &streams {
            assert_eq!(
                memory.latest(&s, stream).await.unwrap(),
                model.latest(&s, stream)
            );
            for seq in 0..15 {
                let after = id(stream, seq);
                assert_eq!(
                    memory.replay_after(&s, &after).await.unwrap(),
                    model.replay_after(&s, &after)
                );
            }
        }
    });
}

#[test]
fn compaction_keeps_exactly_the_retained_events() {
    const LIMITS: (usize, usize) = (5, 3);
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileEventStoreOptions::default()
            .events_per_stream(LIMITS.0)
            .streams_per_session(LIMITS.1)
            .compact_min_bytes(4 << 10)
    };
    let mut model = Model::default();
    let sessions: Vec<SessionId> = (0..6).map(|_| SessionId::generate()).collect();
    let mut used: HashMap<SessionId, Vec<StreamId>> = HashMap::new();
    let mut removed = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut roll = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut written = 0u64;
    for round in 0..3 {
        let store = FileEventStore::open_with(dir.path(), options()).unwrap();
        same_as_model(&store, &model, &used, &format!("reopen {round}"));
        block_on(async {
            for n in 0..700 {
                let s = &sessions[roll(sessions.len() as u64) as usize];
                if roll(200) == 0 {
                    store.remove_session(s).await.unwrap();
                    model.sessions.remove(s);
                    removed += 1;
                    continue;
                }
                let streams = used.entry(s.clone()).or_default();
                // Mostly the standalone stream or a recent one; a new one
                // now and then, so the bound drops streams (the standalone
                // one too, and its name comes back).
                let stream = match roll(12) {
                    0 => {
                        streams.push(StreamId::generate());
                        streams[streams.len() - 1].clone()
                    }
                    1..=3 => StreamId::standalone(),
                    _ if streams.is_empty() => StreamId::standalone(),
                    _ => {
                        let kept = &streams[streams.len().saturating_sub(3)..];
                        kept[roll(kept.len() as u64) as usize].clone()
                    }
                };
                if !streams.contains(&stream) {
                    streams.push(stream.clone());
                }
                let payload: Arc<str> = format!(
                    "{{\"round\":{round},\"n\":{n},\"pad\":\"{}\"}}",
                    "x".repeat(40)
                )
                .into();
                written += payload.len() as u64;
                let got = store.append(s, &stream, payload.clone()).await.unwrap();
                let want = model.append(s, &stream, payload, LIMITS);
                assert_eq!(got, id(&stream, want), "round {round} append {n}");
            }
        });
        same_as_model(&store, &model, &used, &format!("live {round}"));
    }
    // Dropping the store waited for a compaction in progress.
    let snapshots = files(dir.path(), "snapshot-");
    assert_eq!(snapshots.len(), 1, "compacted, old snapshots removed");
    let logs = files(dir.path(), "log-");
    assert!(logs.len() <= 2, "old logs removed: {logs:?}");
    let on_disk: u64 = files(dir.path(), "")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk < written / 2,
        "space is bounded: {on_disk} bytes on disk for {written} written"
    );
    let store = FileEventStore::open_with(dir.path(), options()).unwrap();
    let report = store.recovery().clone();
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(report.torn_bytes, 0);
    assert!(report.files <= 3, "{report:?}");
    same_as_model(&store, &model, &used, "after compaction");
    assert!(removed > 0, "the mix removed sessions");
}

#[test]
fn concurrent_appends_from_64_tasks_are_all_acknowledged_and_kept() {
    const TASKS: usize = 64;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let shared = SessionId::generate();
    let g = StreamId::standalone();
    let acked = {
        let store = Arc::new(open(dir.path(), TASKS * EACH, 128));
        block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (store, shared, g) = (store.clone(), shared.clone(), g.clone());
                    tokio::spawn(async move {
                        let own = SessionId::generate();
                        let stream = StreamId::generate();
                        let mut acked = Vec::new();
                        for n in 0..EACH {
                            let text = format!("{{\"t\":{t},\"n\":{n}}}");
                            let (s, st) = if n % 2 == 0 {
                                (shared.clone(), g.clone())
                            } else {
                                (own.clone(), stream.clone())
                            };
                            let e = store.append(&s, &st, text.clone().into()).await.unwrap();
                            acked.push((s, e, text));
                        }
                        acked
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        })
    };
    assert_eq!(acked.len(), TASKS * EACH);
    let mut shared_seqs: Vec<u64> = acked
        .iter()
        .filter(|(s, _, _)| *s == shared)
        .map(|(_, e, _)| e.seq)
        .collect();
    shared_seqs.sort_unstable();
    assert_eq!(
        shared_seqs,
        (1..=(TASKS * EACH / 2) as u64).collect::<Vec<_>>(),
        "one stream's ids are distinct and contiguous"
    );
    let store = open(dir.path(), TASKS * EACH, 128);
    assert!(store.recovery().damage.is_empty());
    assert_eq!(store.recovery().events, TASKS * EACH);
    block_on(async {
        for (s, e, text) in &acked {
            let before = id(&e.stream, e.seq - 1);
            let replay = store.replay_after(s, &before).await.unwrap().unwrap();
            assert_eq!(
                replay.first().map(|x| (&x.id, &*x.data)),
                Some((e, &**text))
            );
        }
    });
}

#[test]
fn may_hold_says_which_sessions_have_events_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (with, without) = (SessionId::generate(), SessionId::generate());
    let g = StreamId::standalone();
    {
        let store = open(dir.path(), 16, 4);
        assert!(!store.may_hold(&with));
        block_on(store.append(&with, &g, Arc::from("{}"))).unwrap();
        assert!(store.may_hold(&with));
        assert!(!store.may_hold(&without));
    }
    let store = open(dir.path(), 16, 4);
    assert!(store.may_hold(&with), "events from before the reopen count");
    assert!(!store.may_hold(&without));
    block_on(store.remove_session(&with)).unwrap();
    assert!(!store.may_hold(&with));
    let memory = MemoryEventStore::default();
    block_on(memory.append(&with, &g, Arc::from("{}"))).unwrap();
    assert!(memory.may_hold(&with) && !memory.may_hold(&without));
}
