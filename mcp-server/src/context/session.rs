//! A request's legacy session: [`SessionHandle`], and how a session is
//! read when the store refuses the write that records activity.

use super::*;

/// The session `id` as stored now, recording activity on it
/// ([`SessionManager::get`]); when the store fails, as [`untouched`] reads
/// it: a read is not failed by the write that records activity.
pub(crate) async fn current(
    manager: &SessionManager,
    id: &SessionId,
) -> session_core::Result<SessionRecord> {
    match manager.get(id).await {
        Err(e) if e.is_unavailable() => Box::pin(untouched(manager, id, None, e)).await,
        read => read,
    }
}

/// How long [`untouched`] waits for its read: a store that serves reads
/// answers within it; one that is frozen must not add more than this to
/// the client's wait (its own reply timeout, 2 s for Redis, came first).
const UNTOUCHED_READ_LIMIT: Duration = Duration::from_millis(100);

/// Warnings about sessions served without recording their activity.
static UNTOUCHED: crate::error::Throttle = crate::error::Throttle::new(Duration::from_secs(10));

/// After the store failed with `failure` while a session was read and its
/// activity recorded: the session as stored, read once more without
/// writing (within [`UNTOUCHED_READ_LIMIT`]) and checked as
/// [`SessionManager::resume`] checks it (for `principal`, when given). If
/// that read works, the failure was the write that records activity (the
/// store serves reads but refuses writes): the caller serves the request
/// anyway, and whatever the request writes meets the failure itself.
/// `failure` if the read fails too, and at once if the write's outcome is
/// unknown: the store did not answer it (a timeout, a lost connection) and
/// a read would only add its own wait to the client's (a frozen Redis
/// keeps its 503 within the 2 s reply timeout).
pub(crate) async fn untouched(
    manager: &SessionManager,
    id: &SessionId,
    principal: Option<Option<&str>>,
    failure: session_core::Error,
) -> session_core::Result<SessionRecord> {
    use session_core::{Error, SessionStatus, WriteOutcome};
    if failure.outcome() == Some(WriteOutcome::Unknown) {
        return Err(failure);
    }
    let read = tokio::time::timeout(UNTOUCHED_READ_LIMIT, manager.store().load(id)).await;
    let record = match read {
        Ok(Ok(Some(record))) => record,
        Ok(Ok(None)) => return Err(Error::NotFound),
        Ok(Err(_)) | Err(_) => return Err(failure),
    };
    if principal.is_some_and(|principal| record.owner() != principal) {
        return Err(Error::NotFound);
    }
    match record.status_at(manager.clock().now()) {
        SessionStatus::Closed => return Err(Error::Closed),
        // Past its deadline it is expired, recorded so or not.
        SessionStatus::Expired => return Err(Error::Expired),
        _ => {}
    }
    if let Some(suppressed) = UNTOUCHED.allow() {
        tracing::warn!(
            session = %id,
            suppressed,
            "serving a session without recording its activity: the store refused the write: {}",
            crate::error::describe(&failure)
        );
    }
    Ok(record)
}

/// The session a request runs in.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    manager: Arc<SessionManager>,
    record: SessionRecord,
}

impl SessionHandle {
    pub(crate) fn new(manager: Arc<SessionManager>, record: SessionRecord) -> Self {
        SessionHandle { manager, record }
    }

    /// The session's id.
    pub fn id(&self) -> &SessionId {
        self.record.id()
    }

    /// The record as it was when the request started.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The state as stored now (other requests may have changed it since this
    /// one started).
    ///
    /// # Errors
    ///
    /// A JSON-RPC error if the session ended or the store failed (the
    /// store-unavailable error,
    /// [`Rejection::STORE_UNAVAILABLE`](crate::Rejection::STORE_UNAVAILABLE),
    /// which the client gets with HTTP 503 when the handler returns it).
    pub async fn state(&self) -> Result<SessionState, ErrorObject> {
        let record = current(&self.manager, self.id())
            .await
            .map_err(|e| session_error_object(&e))?;
        Ok(record.state().clone())
    }

    /// Changes the state with `change`, which may run more than once when
    /// other requests write concurrently (see
    /// [`SessionManager::update`]); no update is lost.
    ///
    /// # Errors
    ///
    /// A JSON-RPC error if the session ended, the state grew past its limit,
    /// or the store failed (as [`state`](Self::state)).
    pub async fn update<T, F>(&self, change: F) -> Result<(SessionRecord, T), ErrorObject>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        self.manager
            .update(self.id(), change)
            .await
            .map_err(|e| session_error_object(&e))
    }

    /// Merges `patch` into the state one level deep (`null` removes a key).
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub async fn update_state(&self, patch: SessionState) -> Result<SessionRecord, ErrorObject> {
        self.manager
            .update_state(self.id(), patch)
            .await
            .map_err(|e| session_error_object(&e))
    }
}
