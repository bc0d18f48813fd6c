//! Unit tests of the Redis store that need no server.

use std::io;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_core::WriteOutcome;

use super::errors::Sent;
use super::*;

fn io_error(kind: io::ErrorKind) -> RedisError {
    RedisError::from(io::Error::from(kind))
}

#[test]
fn a_write_is_unknown_unless_it_was_never_sent_or_redis_refused_it() {
    use WriteOutcome::{NotApplied, Unknown};
    let refused_by = |kind| RedisError::from((ErrorKind::Server(kind), "refused"));
    let cases = [
        // No connection: never sent.
        (
            io_error(io::ErrorKind::ConnectionRefused),
            Sent::Command,
            NotApplied,
        ),
        (
            io_error(io::ErrorKind::ConnectionRefused),
            Sent::Script,
            NotApplied,
        ),
        // No reply in time, or the connection went after sending.
        (io_error(io::ErrorKind::TimedOut), Sent::Command, Unknown),
        (io_error(io::ErrorKind::BrokenPipe), Sent::Command, Unknown),
        (
            io_error(io::ErrorKind::ConnectionReset),
            Sent::Script,
            Unknown,
        ),
        (
            io_error(io::ErrorKind::UnexpectedEof),
            Sent::Command,
            Unknown,
        ),
        // A reply came back that did not read: the command ran.
        (
            RedisError::from((ErrorKind::Parse, "bad reply")),
            Sent::Command,
            Unknown,
        ),
        // Refused before anything was sent.
        (
            RedisError::from((ErrorKind::AuthenticationFailed, "no")),
            Sent::Command,
            NotApplied,
        ),
        // An error reply: a command did not run; a script may have
        // written before it failed, unless Redis refused to run it.
        (
            refused_by(ServerErrorKind::ResponseError),
            Sent::Command,
            NotApplied,
        ),
        (
            refused_by(ServerErrorKind::ResponseError),
            Sent::Script,
            Unknown,
        ),
        (
            refused_by(ServerErrorKind::ReadOnly),
            Sent::Script,
            NotApplied,
        ),
        (
            refused_by(ServerErrorKind::BusyLoading),
            Sent::Script,
            NotApplied,
        ),
    ];
    for (error, sent, expected) in cases {
        let shown = error.to_string();
        let mapped = redis_write_error("write", error, sent);
        assert_eq!(mapped.outcome(), Some(expected), "{shown} ({sent:?})");
        assert!(mapped.is_unavailable());
    }
    let read = redis_error("GET", io_error(io::ErrorKind::TimedOut));
    assert_eq!(read.outcome(), Some(NotApplied), "a read changes nothing");
}
