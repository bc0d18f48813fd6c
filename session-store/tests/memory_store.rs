//! `MemoryStore` against the store test kit.

use session_store::MemoryStore;
use session_store::testkit::Fixture;

session_store::store_tests!(|| async { Fixture::new(MemoryStore::new()) });

mod memory_only {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use session_core::SessionStore;
    use session_store::MemoryStore;
    use session_store::testkit::cases::{T0, record};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a Tokio runtime")
    }

    /// A delete racing the insert of the same record never makes the count
    /// go below zero (it would read as about `usize::MAX`, and the cap on
    /// sessions would refuse every creation). A race test: with the count
    /// changed outside the shard lock it fails in most runs, not all; with
    /// the count changed under the lock it cannot fail.
    #[test]
    fn count_never_wraps_when_a_delete_races_the_insert() {
        const ROUNDS: usize = 20_000;
        let store = Arc::new(MemoryStore::new());
        let records: Arc<Vec<_>> = Arc::new((0..ROUNDS).map(|_| record(T0)).collect());
        let inserted = Arc::new(AtomicUsize::new(0));
        let inserter = {
            let (store, records, inserted) = (store.clone(), records.clone(), inserted.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                for (i, r) in records.iter().enumerate() {
                    rt.block_on(store.insert(r)).unwrap();
                    inserted.store(i + 1, Ordering::Release);
                    // Wait until the deleter took it, so at most one is stored.
                    while rt.block_on(store.load(r.id())).unwrap().is_some() {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let rt = runtime();
        let mut highest = 0;
        for r in records.iter() {
            // Delete as soon as the record is there, racing the insert's
            // bookkeeping, and look at the count at once.
            while !rt.block_on(store.delete(r.id())).unwrap() {
                std::hint::spin_loop();
            }
            highest = highest.max(rt.block_on(store.count()).unwrap());
        }
        inserter.join().unwrap();
        assert_eq!(inserted.load(Ordering::Acquire), ROUNDS);
        assert!(
            highest <= 1,
            "count read {highest} with at most one record stored"
        );
        assert_eq!(rt.block_on(store.count()).unwrap(), 0);
    }

    /// A listing with a huge limit returns everything and reserves nothing
    /// for the limit; a zero limit returns an empty, final page.
    #[test]
    fn listing_limits_at_the_extremes() {
        let rt = runtime();
        let store = MemoryStore::new();
        for _ in 0..5 {
            rt.block_on(store.insert(&record(T0))).unwrap();
        }
        let page = rt.block_on(store.list(None, usize::MAX)).unwrap();
        assert_eq!(page.records.len(), 5);
        assert_eq!(page.next, None);
        let page = rt.block_on(store.list(None, 0)).unwrap();
        assert!(page.records.is_empty() && page.next.is_none());
        let page = rt.block_on(store.list(None, 5)).unwrap();
        assert_eq!(page.records.len(), 5);
        let rest = rt.block_on(store.list(page.next.as_deref(), 5)).unwrap();
        assert!(rest.records.is_empty() && rest.next.is_none());
    }
}
