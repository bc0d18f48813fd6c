//! The pure core of durable MCP sessions.
//!
//! This crate provides:
//! - [`SessionId`]: unguessable ids minted from a CSPRNG, and bounded parsing of
//!   ids from untrusted input;
//! - [`SessionRecord`] and [`SessionStatus`]: the durable record and its
//!   lifecycle `Initializing → Active → Expired | Closed`, in which nothing
//!   writes to a terminal session;
//! - [`ExpiryPolicy`]: idle timeout and absolute lifetime, judged against a
//!   [`Timestamp`] the caller passes in, so a session past its deadline reads as
//!   expired at once;
//! - [`SessionStore`]: the contract every storage backend keeps
//!   (compare-and-swap on the record's version, expiry removal in proportion to
//!   what expired);
//! - [`EventStore`]: the contract for keeping SSE events so a broken stream
//!   can be resumed with `Last-Event-ID`;
//! - [`GroupCommitStats`]: what a store with group commit reports to a
//!   metrics exporter (batch sizes, sync durations), with the histogram
//!   bounds both agree on;
//! - [`Handles`]: server-minted, principal-bound state handles (SEP-2567),
//!   kept like sessions in a store of their own;
//! - [`SessionManager`]: the rules (cap, expiry, lossless concurrent updates,
//!   hooks on close and expiry) over any store;
//! - [`Error`]: one error type for all of it;
//! - [`wire`]: the JSON-RPC and MCP message types server and client share.
//!
//! **What it promises:** no I/O, no async runtime and no clock reads of its
//! own: time comes from the [`Clock`] you inject ([`ManualClock`] in tests).
//! Its API changes rarely, so storage backends can depend on it alone.
//!
//! **Who should use it:** authors of stores and servers. Applications usually
//! take a ready store and a manager from `session-store`.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use session_core::{ExpiryPolicy, NewSession, SessionId, SessionRecord, SessionStatus, Timestamp};
//!
//! let policy = ExpiryPolicy::idle(Duration::from_secs(60));
//! let start = Timestamp::from_millis(1_000);
//! let record = SessionRecord::create(
//!     SessionId::generate(),
//!     NewSession::new().client_info(json!({"name": "test-client"})),
//!     start,
//!     policy,
//! );
//!
//! // Write the next version: merge state, bump the version, refresh the deadline.
//! let mut write = record.begin_write(start).unwrap();
//! write.merge_state(serde_json::from_value(json!({"counter": 5})).unwrap());
//! let next = write.finish();
//! assert_eq!(next.version(), 2);
//! assert_eq!(next.state()["counter"], 5);
//!
//! // A minute of silence later the session reads as expired, and refuses writes.
//! let later = Timestamp::from_millis(61_000);
//! assert_eq!(next.status_at(later), SessionStatus::Expired);
//! assert!(next.begin_write(later).is_err());
//! ```

mod error;
mod events;
mod expiry;
mod handle;
mod id;
mod manager;
mod record;
mod stats;
mod status;
mod store;
mod task;
mod time;
pub mod wire;

#[doc(inline)]
pub use self::{
    error::{BoxError, Error, Result, WriteOutcome},
    events::{EventId, EventStore, StoredEvent, StreamId},
    expiry::ExpiryPolicy,
    handle::{HANDLE_RANDOM_BITS, Handles, MAX_HANDLE_PREFIX_LEN},
    id::{InvalidSessionId, MAX_SESSION_ID_LEN, SessionId},
    manager::{ManagerConfig, SessionHook, SessionManager},
    record::{NewSession, RawJson, RecordWrite, SessionMeta, SessionRecord, SessionState},
    stats::{
        BATCH_SIZE_BUCKETS, GroupCommitStats, SYNC_SECONDS_BUCKETS, bucket_counts, bucket_index,
        cumulative_buckets,
    },
    status::SessionStatus,
    store::{Cas, Page, SessionStore, terminal_error},
    task::{MIN_TASK_TTL, TaskError, TaskStatus, TaskView, Tasks},
    time::{Clock, ManualClock, Timestamp},
};
