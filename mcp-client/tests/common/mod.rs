//! A real `mcp-server` (the library, serving HTTP on a loopback port) for the
//! client's end-to-end tests, over either store.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_server::{HttpConfig, McpServer, McpServerBuilder, ServerConfig, demo};
use session_core::SessionStore;
use session_store::{FileStore, MemoryStore};

/// Which store the server keeps its sessions in.
#[derive(Debug, Clone)]
pub enum Store {
    Memory,
    File(PathBuf),
}

/// A running server; `stop` shuts it down and releases its store.
pub struct Server {
    pub url: String,
    pub server: McpServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn open_file_store(dir: &Path) -> FileStore {
    // A store just released by a stopped server may take a moment to close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match FileStore::open(dir) {
            Ok(store) => return store,
            Err(session_store::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot open the file store: {e}"),
        }
    }
}

pub async fn start(store: &Store, config: ServerConfig) -> Server {
    start_with(store, config, |builder| builder).await
}

/// A server with the demo tools and whatever `extend` adds.
pub async fn start_with(
    store: &Store,
    config: ServerConfig,
    extend: impl FnOnce(McpServerBuilder) -> McpServerBuilder,
) -> Server {
    let store: Arc<dyn SessionStore> = match store {
        Store::Memory => Arc::new(MemoryStore::new()),
        Store::File(dir) => Arc::new(open_file_store(dir)),
    };
    serve(
        extend(demo::register(McpServer::builder().store(store)))
            .config(config)
            .build(),
    )
    .await
}

/// Serves `server` over HTTP on a loopback port.
pub async fn serve(server: McpServer) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = server.clone();
    let task = tokio::spawn(async move {
        running
            .serve_http(listener, HttpConfig::default(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Server {
        url,
        server,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
