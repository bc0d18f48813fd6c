//! The connection table's rules: the cap, eviction, the timeouts.

use super::*;

#[test]
fn the_cap_keeps_a_reserve_below_the_open_file_limit() {
    assert_eq!(connection_ceiling(256), 208);
    assert_eq!(connection_ceiling(1024), 928);
    assert!(connection_ceiling(20_000) < 19_000);
    assert_eq!(connection_ceiling(10), 1);
    let mut config = HttpConfig::default();
    assert_eq!(Limits::new(&config, Some(256)).cap, 208);
    assert_eq!(Limits::new(&config, None).cap, usize::MAX);
    config.max_connections = Some(100);
    assert_eq!(Limits::new(&config, Some(256)).cap, 100);
    config.max_connections = Some(10_000);
    assert_eq!(Limits::new(&config, Some(256)).cap, 208);
}

fn table(cap: usize) -> Arc<Table> {
    Arc::new(Table::new(
        Limits {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            cap,
        },
        None,
    ))
}

#[test]
fn at_the_cap_the_oldest_connection_that_is_not_busy_makes_room() {
    let table = table(3);
    let a = table.admit().unwrap();
    let b = table.admit().unwrap();
    let c = table.admit().unwrap();
    let busy_a = Busy::begin(&a.conn);
    // b became idle before c: b is the oldest that is not busy.
    b.conn.enter(IDLE);
    b.conn.since.store(0, Ordering::Relaxed);
    c.conn.since.store(5, Ordering::Relaxed);
    let d = table.admit().expect("b makes room");
    assert_eq!(b.conn.close.load(Ordering::Relaxed), CLOSE_NOW);
    assert_eq!(a.conn.close.load(Ordering::Relaxed), KEEP);
    assert_eq!(c.conn.close.load(Ordering::Relaxed), KEEP);
    // Now c (waiting for a head) goes, then nobody: a and d are busy.
    let _busy_d = Busy::begin(&d.conn);
    let e = table.admit().expect("c makes room");
    let _busy_e = Busy::begin(&e.conn);
    assert_eq!(c.conn.close.load(Ordering::Relaxed), CLOSE_NOW);
    assert!(table.admit().is_none(), "every connection is busy");
    // A request that ends frees its connection for the next admission.
    drop(busy_a);
    assert_eq!(a.conn.phase.load(Ordering::Relaxed), IDLE);
    let f = table.admit();
    assert!(f.is_some());
    assert_eq!(a.conn.close.load(Ordering::Relaxed), CLOSE_NOW);
    drop((b, c));
    assert_eq!(table.inner.lock().live, 3);
}

#[test]
fn the_sweep_closes_heads_and_idle_connections_past_their_timeouts_only() {
    // A table that started ten minutes ago, so that phases can have
    // begun in its past.
    let table = Arc::new(Table {
        epoch: Instant::now()
            .checked_sub(Duration::from_secs(600))
            .unwrap(),
        ..Table::new(
            Limits {
                header: Duration::from_millis(100),
                idle: Duration::from_millis(300),
                cap: 10,
            },
            None,
        )
    });
    let head = table.admit().unwrap();
    let idle = table.admit().unwrap();
    let busy = table.admit().unwrap();
    let _request = Busy::begin(&busy.conn);
    idle.conn.enter(IDLE);
    let now = millis(table.epoch);
    // The head started 150 ms ago, the idle time 150 ms ago, the
    // request 10 minutes ago.
    head.conn
        .since
        .store(now.saturating_sub(150), Ordering::Relaxed);
    idle.conn
        .since
        .store(now.saturating_sub(150), Ordering::Relaxed);
    busy.conn.since.store(0, Ordering::Relaxed);
    table.sweep();
    assert_eq!(head.conn.close.load(Ordering::Relaxed), CLOSE_NOW);
    assert_eq!(idle.conn.close.load(Ordering::Relaxed), KEEP);
    assert_eq!(busy.conn.close.load(Ordering::Relaxed), KEEP);
    idle.conn
        .since
        .store(now.saturating_sub(400), Ordering::Relaxed);
    table.sweep();
    assert_eq!(idle.conn.close.load(Ordering::Relaxed), CLOSE_NOW);
    assert_eq!(busy.conn.close.load(Ordering::Relaxed), KEEP);
}
