//! The store test kit: checks any [`SessionStore`] against the contract.
//!
//! [`store_tests!`](crate::store_tests) expands to one `#[test]` per contract
//! clause (see [`cases`]) and per scenario of the seed brief, run at the
//! manager level (see [`scenarios`]). Give it an expression that yields an
//! async factory of fresh, empty stores:
//!
//! ```
//! // In tests/my_store.rs of a crate with
//! // session-store = { version = "…", features = ["testkit"] } as a dev-dependency:
//! use session_store::MemoryStore;
//! use session_store::testkit::Fixture;
//!
//! session_store::store_tests!(|| async { Fixture::new(MemoryStore::new()) });
//! # fn main() {}
//! ```
//!
//! A store that needs something kept alive (a temporary directory, a server
//! process) hands it to [`Fixture::with_guard`]. Each test gets its own store
//! and runs on a two-thread Tokio runtime; no test sleeps, expiry runs on a
//! [`ManualClock`](session_core::ManualClock).

pub mod cases;
pub mod disk;
#[cfg(feature = "redis")]
pub mod redis;
pub mod scenarios;
pub mod tasks;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use session_core::SessionStore;

/// A fresh store for one test, and whatever must outlive it.
#[derive(Debug)]
pub struct Fixture {
    store: Arc<dyn SessionStore>,
    guard: Box<dyn Any + Send + Sync>,
}

impl Fixture {
    /// A store that needs nothing else.
    pub fn new(store: impl SessionStore) -> Self {
        Self::with_guard(store, ())
    }

    /// A store and a guard dropped after it (a temporary directory, say).
    pub fn with_guard(store: impl SessionStore, guard: impl Any + Send + Sync) -> Self {
        Fixture {
            store: Arc::new(store),
            guard: Box::new(guard),
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }
}

/// Runs `future` to completion on a fresh two-thread Tokio runtime.
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime for the test kit")
        .block_on(future)
}

/// Runs one kit `case` against a store from `make`. Used by
/// [`store_tests!`](crate::store_tests).
pub fn run<M, MF, C, CF>(make: M, case: C)
where
    M: FnOnce() -> MF,
    MF: Future<Output = Fixture>,
    C: FnOnce(Arc<dyn SessionStore>) -> CF,
    CF: Future<Output = ()>,
{
    block_on(async {
        let fixture = make().await;
        case(fixture.store()).await;
        let Fixture { store, guard } = fixture;
        drop(store);
        drop(guard);
    });
}

/// Expands to one `#[test]` per contract clause and scenario of the kit, each
/// against a fresh store from the factory expression `$make` (a closure
/// returning a future of [`Fixture`](crate::testkit::Fixture)).
#[macro_export]
macro_rules! store_tests {
    ($make:expr) => {
        $crate::store_tests!(@each $make;
            cases::insert_then_load_round_trips,
            cases::missing_id_loads_as_none,
            cases::insert_refuses_an_existing_id,
            cases::concurrent_inserts_of_one_id_admit_exactly_one,
            cases::ids_are_unique_under_concurrency,
            cases::stale_version_gets_conflict_with_the_current_record,
            cases::compare_and_swap_on_a_missing_record_conflicts_with_none,
            cases::terminal_session_refuses_writes,
            cases::delete_is_idempotent,
            cases::concurrent_updates_lose_none,
            cases::two_managers_sharing_the_store_lose_no_update,
            cases::count_tracks_live_records,
            cases::list_pages_through_every_stored_record,
            cases::list_completes_while_records_are_deleted_concurrently,
            cases::remove_expired_takes_only_due_records,
            cases::expired_record_reads_expired_before_any_sweep,
            cases::sweep_runs_expiry_hooks_once_per_session,
            cases::a_healthy_store_is_ready,
            tasks::a_task_is_durable_at_creation_and_bound_to_its_principal,
            tasks::two_replicas_ending_a_task_at_once_agree_on_one_winner,
            tasks::input_asked_on_one_replica_is_answered_on_another,
            tasks::tasks_expire_by_ttl_from_creation,
            scenarios::create_session,
            scenarios::persist_state_between_requests,
            scenarios::concurrent_sessions_are_unique_and_isolated,
            scenarios::recover_after_the_client_is_dropped,
            scenarios::timeout_expires_the_session,
        );
    };
    (@each $make:expr; $($group:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::run($make, $crate::testkit::$group::$case);
            }
        )*
    };
}
