//! The accept loop behind [`McpServer::serve_http`](crate::McpServer::serve_http):
//! one hyper HTTP/1.1 connection per socket, and a graceful close that
//! costs a connection nothing until it is asked for.
//!
//! A connection reads one flag when it is polled anyway; only at shutdown
//! are all of them woken to read it. (A shutdown future raced against each
//! connection would be polled on every wake-up of every connection.)

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Endpoint;

/// Accepts connections on `listener` and serves each with `endpoint` until
/// `shutdown` resolves; then closes the listener and returns the open
/// connections.
pub(super) async fn accept_until(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Connections {
    let closing = Arc::new(Closing::default());
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap what has ended, so the set holds open connections only.
        while tasks.try_join_next().is_some() {}
        match accepted {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                let registration = closing.register();
                tasks.spawn(serve_connection(tcp, endpoint.clone(), registration));
            }
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait for some to
                // free up rather than spin.
                tracing::error!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    drop(listener);
    Connections { closing, tasks }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Serves one connection until it ends, or closes it gracefully (after the
/// response in progress) once `registration` says so.
async fn serve_connection(tcp: TcpStream, endpoint: Endpoint, registration: Registration) {
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            endpoint.answer(request)
        });
    let mut connection = pin!(
        http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(tcp), service)
    );
    let mut closing = false;
    let served = std::future::poll_fn(|cx| {
        if !closing {
            registration.waker.register(cx.waker());
            if registration.closing.asked.load(Ordering::Acquire) {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
        connection.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = served {
        tracing::debug!("connection ended: {e}");
    }
}

/// The connections still open when the listener closed.
pub(super) struct Connections {
    closing: Arc<Closing>,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Asks every connection to close after its response in progress and
    /// waits for them, for up to `limit`; those still open then are dropped.
    pub(super) async fn close(mut self, limit: Duration) {
        self.closing.ask();
        let all_closed = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all_closed).await.is_err() {
            tracing::warn!(
                open = self.tasks.len(),
                "connections still open after the shutdown grace: dropping them"
            );
            self.tasks.abort_all();
        }
    }
}

/// Whether connections are asked to close, and how to wake each to see it.
#[derive(Debug, Default)]
struct Closing {
    asked: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl Closing {
    fn register(self: &Arc<Self>) -> Registration {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.wakers.lock().insert(number, waker.clone());
        Registration {
            closing: self.clone(),
            number,
            waker,
        }
    }

    fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        for waker in self.wakers.lock().values() {
            waker.wake();
        }
    }
}

/// One connection's place in [`Closing`], given up when the connection
/// ends.
struct Registration {
    closing: Arc<Closing>,
    number: u64,
    waker: Arc<AtomicWaker>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.closing.wakers.lock().remove(&self.number);
    }
}
