//! Session stores for MCP servers, behind the one [`SessionStore`] contract.
//!
//! This crate provides:
//! - [`MemoryStore`]: in process memory, sharded, for tests and
//!   single-process servers that may lose sessions on restart;
//! - [`FileStore`]: a directory on disk, the embedded default: every
//!   acknowledged write survives a crash, concurrent writers share an `fsync`
//!   (group commit), damage is reported per session;
//! - [`MemoryEventStore`]: bounded SSE event buffers for resumable streams;
//! - [`FileEventStore`]: the same bounds in a directory (beside a
//!   [`FileStore`]), so streams resume after a crash and restart and event ids
//!   never repeat;
//! - with the `redis` feature, `RedisStore` and `RedisEventStore`: sessions
//!   and resumable streams shared by many server processes;
//! - [`SystemClock`]: the wall clock for a
//!   [`SessionManager`](session_core::SessionManager);
//! - with the `testkit` feature, the `testkit` module and `store_tests!`:
//!   the contract checks every store here passes, for third-party stores too.
//!
//! Who should depend on it: servers and applications that need a store. The
//! rules (expiry, caps, lossless updates) live in `session-core`'s
//! `SessionManager`, which runs over any of these.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use session_core::{ManagerConfig, NewSession, SessionManager};
//! use session_store::{FileStore, SystemClock};
//!
//! # let tmp = tempfile::tempdir().unwrap();
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Arc::new(FileStore::open(tmp.path().join("sessions"))?);
//! let manager = SessionManager::new(store, Arc::new(SystemClock), ManagerConfig::default());
//!
//! let session = manager
//!     .create(NewSession::new().client_info(json!({"name": "test-client"})))
//!     .await?;
//! let patch = serde_json::from_value(json!({"counter": 5, "lastTool": "list_nodes"}))?;
//! let updated = manager.update_state(session.id(), patch).await?;
//! assert_eq!(updated.state()["counter"], 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod active_log;
mod clock;
mod commit_queue;
mod commit_stats;
mod container;
mod error;
mod events;
mod file;
mod file_events;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod reserve;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use self::redis::{RedisEventStore, RedisOptions, RedisStore};
#[doc(inline)]
pub use self::{
    clock::SystemClock,
    error::Error,
    events::MemoryEventStore,
    file::{FileStore, FileStoreOptions, RecoveryReport},
    file_events::{EventRecoveryReport, FileEventStore, FileEventStoreOptions},
    memory::MemoryStore,
};
#[doc(no_inline)]
pub use session_core::SessionStore;
