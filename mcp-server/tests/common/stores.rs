//! Shared by the store-failure and probe tests: an in-process server on
//! real Redis stores, Redis made to refuse writes, and the checks of the
//! one answer every store failure gets.
//!
//! Included with `#[path]` beside `mod common;` (this file is not a module
//! of `common`).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use mcp_server::{McpServerBuilder, Rejection};
use serde_json::Value;
use session_core::{EventStore, SessionStore};
use session_store::testkit::redis::RedisServer;
use session_store::{RedisOptions, RedisStore};

/// Sends one command to the Redis on `port` and returns its first reply
/// line (`+OK`, `-ERR …`, `:1`, …).
pub fn redis_command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// How many times the Redis on `port` ran `command` (lowercase), from
/// `INFO commandstats`.
pub fn redis_calls(port: u16, command: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let len: usize = line.trim_end()[1..].parse().expect("a bulk reply");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let info = String::from_utf8(body).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

/// Makes Redis refuse every write (`NOREPLICAS`) and go on serving reads,
/// as a primary does when it has lost its replicas: a store that is up but
/// cannot take writes.
pub fn refuse_writes(redis: &RedisServer) {
    let reply = redis_command(
        redis.port(),
        &["CONFIG", "SET", "min-replicas-to-write", "1"],
    );
    assert_eq!(reply, "+OK");
}

/// Undoes [`refuse_writes`].
pub fn accept_writes(redis: &RedisServer) {
    let reply = redis_command(
        redis.port(),
        &["CONFIG", "SET", "min-replicas-to-write", "0"],
    );
    assert_eq!(reply, "+OK");
}

/// `builder` on Redis the way the binary sets it up: sessions, handles
/// (under `<prefix>:h`) and stream events, the events on `events` when
/// given (another Redis), else beside the sessions.
pub fn on_redis(
    builder: McpServerBuilder,
    redis: &RedisServer,
    events: Option<&RedisServer>,
) -> McpServerBuilder {
    let store = RedisStore::connect(&redis.url(), RedisOptions::default()).unwrap();
    let handles = store.with_prefix(&format!("{}:h", store.prefix())).unwrap();
    let events: Arc<dyn EventStore> = match events {
        Some(other) => Arc::new(
            RedisStore::connect(&other.url(), RedisOptions::default())
                .unwrap()
                .event_store(),
        ),
        None => Arc::new(store.event_store()),
    };
    let store: Arc<dyn SessionStore> = Arc::new(store);
    builder
        .store(store)
        .handle_store(Arc::new(handles))
        .event_store(events)
}

/// What a store failure is answered with, checked: 503, `Retry-After`,
/// JSON-RPC -32003 naming `store`, `data.outcome` one of the two. Returns
/// the error object.
pub fn assert_store_unavailable(
    what: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &Value,
    store: &str,
) -> Value {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(
        retry_after,
        Some(Rejection::RETRY_AFTER_SECS.to_string().as_str()),
        "{what}: Retry-After"
    );
    assert_store_error(what, body, store)
}

/// The JSON-RPC part of [`assert_store_unavailable`] (what stdio and a
/// stream's last event carry).
pub fn assert_store_error(what: &str, body: &Value, store: &str) -> Value {
    let error = &body["error"];
    assert_eq!(
        error["code"],
        Rejection::STORE_UNAVAILABLE,
        "{what}: the store-unavailable code: {body}"
    );
    assert_eq!(
        error["message"],
        format!("Service Unavailable: the {store} store is unavailable; retry later"),
        "{what}: {body}"
    );
    assert_eq!(error["data"]["store"], store, "{what}: {body}");
    let outcome = error["data"]["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome == "not_applied" || outcome == "unknown",
        "{what}: data.outcome is {outcome:?}: {body}"
    );
    error.clone()
}
