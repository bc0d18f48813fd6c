//! `RedisStore` against the store test kit, each test on its own
//! `redis-server` (started on a free loopback port, stopped afterwards).

use session_store::testkit::Fixture;
use session_store::testkit::redis::RedisServer;
use session_store::{RedisOptions, RedisStore};

session_store::store_tests!(|| async {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), RedisOptions::default()).expect("a Redis URL");
    Fixture::with_guard(store, server)
});
