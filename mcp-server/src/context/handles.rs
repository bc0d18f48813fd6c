//! [`ScopedHandles`]: the handles of the principal a request runs for.

use super::*;

/// The handles of the principal a request runs for (SEP-2567): mint, read,
/// change and end state that spans requests, in the handle store.
///
/// Its methods return the session layer's errors. A handler answers a
/// failure of the store itself
/// ([`is_unavailable`](session_core::Error::is_unavailable)) with
/// `Err(Rejection::store_unavailable("handle", &e).error_object())`, so the
/// client gets the same 503 and error as for any other store failure.
#[derive(Debug, Clone, Copy)]
pub struct ScopedHandles<'a> {
    pub(super) handles: &'a Handles,
    pub(super) principal: Option<&'a str>,
}

impl ScopedHandles<'_> {
    /// Mints a handle holding `state`, bound to this principal; its id is
    /// `prefix` (1 to 16 lowercase letters and digits), `_`, and 128
    /// random bits.
    ///
    /// # Errors
    ///
    /// As [`Handles::mint`].
    pub async fn mint(
        &self,
        prefix: &str,
        state: SessionState,
    ) -> session_core::Result<SessionRecord> {
        self.handles.mint(prefix, self.principal, state).await
    }

    /// The handle `id`, if this principal may see it.
    ///
    /// # Errors
    ///
    /// As [`Handles::get`]: an unknown id, a malformed one and another
    /// principal's all read as [`session_core::Error::NotFound`].
    pub async fn get(&self, id: &str) -> session_core::Result<SessionRecord> {
        self.handles.get(id, self.principal).await
    }

    /// Changes the handle's state (compare-and-swap, retried; nothing is
    /// lost to concurrent writers).
    ///
    /// # Errors
    ///
    /// As [`Handles::update`].
    pub async fn update<T, F>(
        &self,
        id: &str,
        change: F,
    ) -> session_core::Result<(SessionRecord, T)>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        self.handles.update(id, self.principal, change).await
    }

    /// Merges `patch` into the handle's state one level deep.
    ///
    /// # Errors
    ///
    /// As [`Handles::update_state`].
    pub async fn update_state(
        &self,
        id: &str,
        patch: SessionState,
    ) -> session_core::Result<SessionRecord> {
        self.handles.update_state(id, self.principal, patch).await
    }

    /// Ends the handle.
    ///
    /// # Errors
    ///
    /// As [`Handles::delete`].
    pub async fn delete(&self, id: &str) -> session_core::Result<()> {
        self.handles.delete(id, self.principal).await
    }
}
