//! `FileStore` against the store test kit, each test in a fresh directory.

use session_store::FileStore;
use session_store::testkit::Fixture;

session_store::store_tests!(|| async {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FileStore::open(dir.path()).expect("open a fresh store");
    Fixture::with_guard(store, dir)
});
