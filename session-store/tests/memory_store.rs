//! `MemoryStore` against the store test kit.

use session_store::MemoryStore;
use session_store::testkit::Fixture;

session_store::store_tests!(|| async { Fixture::new(MemoryStore::new()) });
