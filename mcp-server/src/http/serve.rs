//! The accept loop behind [`McpServer::serve_http`](crate::McpServer::serve_http):
//! one hyper HTTP/1.1 connection per socket, kept in a table that bounds
//! them and times them out.
//!
//! Every connection is in one of three phases, which only its own task
//! changes (the reaper and the accept loop only read them):
//!
//! - **head**: waiting for a request head, from the moment it opened or its
//!   first byte of a new head arrived. Closed when the head takes longer
//!   than `header_timeout` (a client that sends half a request line, or
//!   nothing, does not hold a connection forever).
//! - **idle**: a keep-alive connection between requests. Closed after
//!   `idle_connection_timeout`.
//! - **busy**: a request in progress, from its head until its response body
//!   is done (an SSE stream is busy for as long as it lasts: streams keep
//!   their own rules, keep-alive comments and lifetime). Never cut; its
//!   request body must arrive within `header_timeout` of the head (408
//!   otherwise, `post.rs`), so a withheld body does not keep it busy.
//!
//! A connection asked to close while waiting for a head closes at once; an
//! idle one closes gracefully, since the end of its last response may still
//! be on its way to a slow reader, and is dropped if that takes longer than
//! `header_timeout`.
//!
//! Open connections are capped below the process's open-file limit, so the
//! server never runs out of descriptors. At the cap a new connection is
//! admitted by closing the oldest connection that is not busy; only when
//! every connection is busy is the new one refused (503). A client holding
//! thousands of idle or half-sent connections therefore locks nobody out:
//! its connections are the ones that make room.
//!
//! A connection reads its close flag when it is polled anyway; it is woken
//! only when asked to close (a shutdown future raced against each
//! connection would be polled on every wake-up of every connection).

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use futures_util::FutureExt as _;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Endpoint;
use crate::config::HttpConfig;
use crate::limits::open_file_limit;

/// Accepts connections on `listener` and serves each with `endpoint` until
/// `shutdown` resolves; then closes the listener and returns the open
/// connections.
pub(super) async fn accept_until(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Connections {
    let limits = Limits::new(&endpoint.0.config, open_file_limit());
    tracing::info!(
        max_connections = limits.cap,
        header_timeout = ?limits.header,
        idle_connection_timeout = ?limits.idle,
        "accepting connections"
    );
    let open = endpoint
        .0
        .dispatcher
        .metrics()
        .map(|m| m.connections().clone());
    let table = Arc::new(Table::new(limits, open));
    let reaper = tokio::spawn(reap(Arc::downgrade(&table)));
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap each connection as it ends, before accepting more: a
            // finished task keeps its allocation (the size of a
            // connection's whole state) until it is joined.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => match table.admit() {
                Some(registration) => {
                    let _ = tcp.set_nodelay(true);
                    tasks.spawn(serve_connection(tcp, endpoint.clone(), registration));
                }
                None => table.refuse(&tcp),
            },
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) if is_out_of_descriptors(&e) => {
                // Below the cap this means something else holds
                // descriptors: make room rather than spin, and say so.
                table.warn(|| {
                    tracing::warn!(
                        "cannot accept a connection: {e}; closing the oldest idle connection"
                    );
                });
                table.evict_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::error!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    Connections {
        table,
        tasks,
        reaper,
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (the process's limit) and ENFILE (the system's).
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Serves one connection until it ends, or until its entry in the table is
/// asked to close: at once when it is not busy, gracefully (after the
/// response in progress) when it is.
async fn serve_connection(tcp: TcpStream, endpoint: Endpoint, registration: Registration) {
    let close_limit = endpoint.0.config.header_timeout;
    let conn = registration.conn.clone();
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let busy = Busy::begin(&conn);
            endpoint.answer(request).map(move |answer| {
                answer.map(|response| response.map(|body| Tracked { body, _busy: busy }))
            })
        })
    };
    let io = TokioIo::new(Watched {
        tcp,
        conn: conn.clone(),
    });
    let mut connection = pin!(
        http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
    );
    let mut graceful = false;
    // An idle connection asked to close may still be writing the end of its
    // last response (hyper lets go of a body before its last bytes reach
    // the socket): it closes gracefully, within this deadline.
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let served = std::future::poll_fn(|cx| {
        if !graceful {
            conn.waker.register(cx.waker());
            match conn.close.load(Ordering::Acquire) {
                // Waiting for a head (its own task is the only one that
                // changes that): it owes nobody anything, so it closes now.
                CLOSE_NOW if conn.phase() == HEAD => return Poll::Ready(Ok(())),
                CLOSE_NOW => {
                    graceful = true;
                    if conn.phase() == IDLE {
                        deadline = Some(Box::pin(tokio::time::sleep(close_limit)));
                    }
                    connection.as_mut().graceful_shutdown();
                }
                CLOSE_GRACEFULLY => {
                    graceful = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ => {}
            }
        }
        if let Some(deadline) = deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ok(()));
        }
        connection.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = served {
        tracing::debug!("connection ended: {e}");
    }
    drop(registration);
}

/// The connections still open when the listener closed.
pub(super) struct Connections {
    table: Arc<Table>,
    tasks: JoinSet<()>,
    reaper: tokio::task::JoinHandle<()>,
}

impl Connections {
    /// Asks every connection to close after its response in progress and
    /// waits for them, for up to `limit`; those still open then are dropped.
    pub(super) async fn close(mut self, limit: Duration) {
        self.table.close_all();
        let all_closed = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all_closed).await.is_err() {
            tracing::warn!(
                open = self.tasks.len(),
                "connections still open after the shutdown grace: dropping them"
            );
            self.tasks.abort_all();
        }
        self.reaper.abort();
    }
}

/// The bounds on connections, from [`HttpConfig`] and the open-file limit.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    idle: Duration,
    cap: usize,
}

impl Limits {
    fn new(config: &HttpConfig, open_files: Option<u64>) -> Self {
        let ceiling = open_files.map_or(usize::MAX, connection_ceiling);
        let cap = match config.max_connections {
            Some(asked) if asked > ceiling => {
                tracing::warn!(
                    asked,
                    ceiling,
                    "max_connections is above what the open-file limit allows: capped lower"
                );
                ceiling
            }
            Some(asked) => asked.max(1),
            None => ceiling,
        };
        Limits {
            header: config.header_timeout,
            idle: config.idle_connection_timeout,
            cap,
        }
    }
}

/// How many connections `open_files` descriptors allow: the limit less a
/// reserve for the stores' files and sockets, the listener, the runtime
/// and a few accepts in flight.
fn connection_ceiling(open_files: u64) -> usize {
    let reserve = 32 + open_files / 16;
    usize::try_from(open_files.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

/// A connection's phases (see the module doc).
const HEAD: u8 = 0;
const IDLE: u8 = 1;
const BUSY: u8 = 2;

/// What a connection is asked to do.
const KEEP: u8 = 0;
const CLOSE_GRACEFULLY: u8 = 1;
const CLOSE_NOW: u8 = 2;

/// One open connection, as its task and the table see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// When the table started, for [`Conn::since`].
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds from `epoch` to the start of the current phase.
    since: AtomicU64,
    /// Requests in progress (more than one only while a pipelined response
    /// is still being written).
    busy: AtomicU32,
    close: AtomicU8,
    waker: AtomicWaker,
}

impl Conn {
    /// Starts `phase` now. The time is stored before the phase (which
    /// readers load first, with `Acquire`), so that a reader never pairs a
    /// new phase with the previous phase's start.
    fn enter(&self, phase: u8) {
        self.since.store(millis(self.epoch), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A request in progress on a connection, from its head to the end of its
/// response body.
struct Busy(Arc<Conn>);

impl Busy {
    fn begin(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        conn.phase.store(BUSY, Ordering::Release);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.enter(IDLE);
        }
    }
}

/// A response body that keeps its connection busy until it is done.
struct Tracked<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, watched for the first bytes of a new request head on an
/// idle connection (which start the header timeout).
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.phase() == IDLE {
            self.conn.enter(HEAD);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Every open connection, with the count of those not asked to close.
#[derive(Debug)]
struct Table {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
    closing: AtomicBool,
    /// When the last rate-limited warning was logged (ms from `epoch`, plus
    /// one so that 0 means never).
    warned: AtomicU64,
    /// The open-connections gauge, if metrics are on.
    open: Option<prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
    next: u64,
    /// Connections not asked to close: what the cap counts.
    live: usize,
}

impl Table {
    fn new(limits: Limits, open: Option<prometheus_client::metrics::gauge::Gauge>) -> Self {
        Table {
            limits,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            closing: AtomicBool::new(false),
            warned: AtomicU64::new(0),
            open,
        }
    }

    /// A place for a new connection: at the cap, made by closing the oldest
    /// connection that is not busy; `None` when every one is busy.
    fn admit(self: &Arc<Self>) -> Option<Registration> {
        let mut inner = self.inner.lock();
        if inner.live >= self.limits.cap && !Self::evict_oldest(&mut inner) {
            return None;
        }
        inner.next += 1;
        let conn = Arc::new(Conn {
            id: inner.next,
            epoch: self.epoch,
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(millis(self.epoch)),
            busy: AtomicU32::new(0),
            close: AtomicU8::new(if self.closing.load(Ordering::Relaxed) {
                CLOSE_GRACEFULLY
            } else {
                KEEP
            }),
            waker: AtomicWaker::new(),
        });
        inner.conns.insert(conn.id, conn.clone());
        if conn.close.load(Ordering::Relaxed) == KEEP {
            inner.live += 1;
        }
        if let Some(open) = &self.open {
            open.inc();
        }
        Some(Registration {
            table: self.clone(),
            conn,
        })
    }

    /// Closes the oldest connection that is not busy, if there is one.
    fn evict_one(&self) -> bool {
        Self::evict_oldest(&mut self.inner.lock())
    }

    fn evict_oldest(inner: &mut Inner) -> bool {
        let oldest = inner
            .conns
            .values()
            .filter(|c| c.close.load(Ordering::Relaxed) == KEEP && c.phase() != BUSY)
            .min_by_key(|c| (c.since.load(Ordering::Relaxed), c.id))
            .cloned();
        match oldest {
            Some(conn) => {
                Self::ask(inner, &conn, CLOSE_NOW);
                true
            }
            None => false,
        }
    }

    /// Asks `conn` to close (`how`); it no longer counts against the cap.
    fn ask(inner: &mut Inner, conn: &Conn, how: u8) {
        if conn.close.swap(how, Ordering::AcqRel) == KEEP {
            inner.live -= 1;
        }
        conn.waker.wake();
    }

    /// Refuses a connection when every open one is busy: a plain 503 that
    /// tells the client when to come back, written if the socket takes it
    /// at once.
    fn refuse(&self, tcp: &TcpStream) {
        const BODY: &str = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Service Unavailable: every connection the server can hold is busy"}}"#;
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = tcp.try_write(response.as_bytes());
        self.warn(|| {
            tracing::warn!(
                max_connections = self.limits.cap,
                "refusing connections: every connection is busy"
            );
        });
    }

    /// Runs `log` at most once a second.
    fn warn(&self, log: impl FnOnce()) {
        let now = millis(self.epoch) + 1;
        let last = self.warned.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 1000)
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log();
        }
    }

    /// Asks every connection to close after its response in progress.
    fn close_all(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        let conns: Vec<Arc<Conn>> = inner.conns.values().cloned().collect();
        for conn in conns {
            if conn.close.load(Ordering::Relaxed) == KEEP {
                Self::ask(&mut inner, &conn, CLOSE_GRACEFULLY);
            }
        }
    }

    /// Closes the connections past their phase's timeout.
    fn sweep(&self) {
        let now = millis(self.epoch);
        let header = u64::try_from(self.limits.header.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.limits.idle.as_millis()).unwrap_or(u64::MAX);
        let mut inner = self.inner.lock();
        let expired: Vec<Arc<Conn>> = inner
            .conns
            .values()
            .filter(|c| {
                let limit = match c.phase() {
                    HEAD => header,
                    IDLE => idle,
                    _ => return false,
                };
                c.close.load(Ordering::Relaxed) == KEEP
                    && now.saturating_sub(c.since.load(Ordering::Relaxed)) >= limit
            })
            .cloned()
            .collect();
        for conn in &expired {
            Self::ask(&mut inner, conn, CLOSE_NOW);
        }
    }
}

/// One connection's place in the [`Table`], given up when the connection
/// ends.
struct Registration {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.table.inner.lock();
        inner.conns.remove(&self.conn.id);
        if let Some(open) = &self.table.open {
            open.dec();
        }
        if self.conn.close.load(Ordering::Relaxed) == KEEP {
            inner.live -= 1;
        }
        if inner.conns.is_empty() {
            // Give back the table's own memory after a spike.
            inner.conns.shrink_to_fit();
        }
    }
}

/// Closes connections past their timeouts, a few times per timeout, until
/// the table is gone.
async fn reap(table: std::sync::Weak<Table>) {
    let period = match table.upgrade() {
        Some(t) => (t.limits.header.min(t.limits.idle) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(table) = table.upgrade() else { return };
        table.sweep();
    }
}

#[cfg(test)]
mod tests;
