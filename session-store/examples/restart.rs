//! A session that outlives its process.
//!
//! Creates a session in a `FileStore`, writes state into it, stops the store
//! as a restart would, opens the directory again and resumes the session by
//! id, with its state. Then it shows expiry: a session with a one-second idle
//! timeout is refused once the second has passed.
//!
//! ```text
//! cargo run -p session-store --example restart [-- DIR]
//! ```
//!
//! `DIR` defaults to a fresh temporary directory; pass one to keep the files
//! and run the example again: the sessions of earlier runs are still there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_core::{Error, ManagerConfig, NewSession, SessionManager, SessionStore};
use session_store::{FileStore, SystemClock};

fn manager(store: Arc<FileStore>) -> SessionManager {
    SessionManager::new(store, Arc::new(SystemClock), ManagerConfig::default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp;
    let dir = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };

    println!("1. opening a file store in {}", dir.display());
    let store = Arc::new(FileStore::open(&dir)?);
    println!(
        "   found {} sessions from earlier runs",
        store.recovery().sessions
    );
    let sessions = manager(store.clone());

    let session = sessions
        .create(
            NewSession::new()
                .client_info(json!({"name": "restart-example", "version": "1.0"}))
                .capabilities(json!({"tools": {}})),
        )
        .await?;
    let id = session.id().clone();
    println!(
        "2. created session {id} (status {}, expires {})",
        session.stored_status(),
        session.expires_at()
    );

    let patch = serde_json::from_value(json!({"counter": 5, "lastTool": "list_nodes"}))?;
    let updated = sessions.update_state(&id, patch).await?;
    println!(
        "3. wrote state {} (version {}); the write is on disk once this returns",
        serde_json::Value::Object(updated.state().clone()),
        updated.version()
    );

    drop(sessions);
    drop(store);
    println!("4. stopped the store, as a restart would");

    let store = Arc::new(FileStore::open(&dir)?);
    let report = store.recovery();
    println!(
        "5. reopened: {} sessions loaded in {:.1} ms, {} damaged",
        report.sessions,
        report.elapsed.as_secs_f64() * 1e3,
        report.corrupt.len()
    );
    let sessions = manager(store.clone());
    let resumed = sessions.resume(&id, None).await?;
    println!(
        "6. resumed session {id}: status {}, state {}, client {}",
        resumed.stored_status(),
        serde_json::Value::Object(resumed.state().clone()),
        resumed.meta().client_info_value()
    );

    let short = sessions
        .create(NewSession::new().idle_timeout(Duration::from_secs(1)))
        .await?;
    println!(
        "7. created session {} with a 1 s idle timeout; waiting 1.1 s",
        short.id()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match sessions.get(short.id()).await {
        Err(Error::Expired) => println!("8. it reads as expired, before any sweep ran"),
        other => println!("8. unexpected: {other:?}"),
    }
    println!(
        "9. {} live sessions remain in the store",
        store.count().await?
    );
    Ok(())
}
