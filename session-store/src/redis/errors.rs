//! How Redis failures become [`Error::Backend`], with what a failed write
//! may have done ([`WriteOutcome`]), and the readiness probe.

use std::time::Duration;

use redis::ErrorKind;
use redis::aio::ConnectionManager;
use session_core::{Error, Result, WriteOutcome};

/// A failed call that wrote nothing: a read, or a write whose data was not
/// sent.
pub(super) fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::backend(format!("redis: {what}"), e)
}

/// How a write (a command or a script) was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// One command: an error reply means Redis did not run it.
    Command,
    /// A Lua script: Redis does not undo a script's writes when it fails,
    /// so only the errors it gives before running one mean nothing changed.
    Script,
}

/// A failed write, with what it did as far as the client can tell: nothing
/// ([`WriteOutcome::NotApplied`]) when it was never sent (no connection
/// could be made) or Redis refused it; otherwise, a reply that did not come
/// in time, a connection lost after sending, or a reply that did not read
/// back, it may have been applied ([`WriteOutcome::Unknown`]).
pub(super) fn redis_write_error(what: &str, e: redis::RedisError, sent: Sent) -> Error {
    let outcome = write_outcome(&e, sent);
    Error::backend(format!("redis: {what}"), e).with_outcome(outcome)
}

/// What a write that failed with `e` did; see [`redis_write_error`].
///
/// The client does not say whether a command had left when the connection
/// failed, so only a refused connection counts as "never sent". A timeout
/// counts as unknown even when it was a connection that took too long: the
/// two look alike.
fn write_outcome(e: &redis::RedisError, sent: Sent) -> WriteOutcome {
    if e.is_connection_refusal() {
        return WriteOutcome::NotApplied;
    }
    match e.kind() {
        // Refused on this side, or when connecting: nothing was sent.
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Client
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::RESP3NotSupported => WriteOutcome::NotApplied,
        ErrorKind::Server(_) | ErrorKind::Extension => match sent {
            Sent::Command => WriteOutcome::NotApplied,
            // Errors Redis answers before it runs a script.
            Sent::Script
                if matches!(
                    e.code(),
                    Some(
                        "NOSCRIPT"
                            | "READONLY"
                            | "LOADING"
                            | "MASTERDOWN"
                            | "CLUSTERDOWN"
                            | "MOVED"
                            | "ASK"
                            | "TRYAGAIN"
                            | "CROSSSLOT"
                            | "NOPERM"
                            | "OOM"
                            | "BUSY"
                            | "NOREPLICAS"
                            | "MISCONF"
                    )
                ) =>
            {
                WriteOutcome::NotApplied
            }
            Sent::Script => WriteOutcome::Unknown,
        },
        // A timeout, a lost connection, a reply that did not parse: the
        // command may have run.
        _ => WriteOutcome::Unknown,
    }
}

/// The longest [`readiness`](SessionStore::readiness) waits for `PING`.
const READINESS_BOUND: Duration = Duration::from_secs(1);

/// `PING` on `connection`, bounded by `READINESS_BOUND` (or the reply
/// timeout, if shorter): `Ok` when Redis answers, the reason otherwise.
pub(super) async fn ready(
    connection: &ConnectionManager,
    response_timeout: Duration,
) -> Result<()> {
    let bound = READINESS_BOUND.min(response_timeout);
    let mut con = connection.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut con);
    match tokio::time::timeout(bound, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::backend(
            format!("redis is unreachable (PING failed: {e})"),
            e,
        )),
        Err(_) => Err(Error::backend_msg(format!(
            "redis is unreachable (no answer to PING within {bound:?})"
        ))),
    }
}
