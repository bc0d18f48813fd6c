//! Callbacks for owners of per-session resources.

use std::fmt::Debug;

use crate::SessionRecord;

/// Told when a session ends, so whoever holds resources for it (open streams,
/// pending requests, timers) can release them.
///
/// Hooks run synchronously inside the manager call that ended the session, on
/// the manager that performed the transition; keep them short (send on a
/// channel, cancel a token). When several managers share a store, each hears
/// only about the sessions it ended itself.
pub trait SessionHook: Send + Sync + Debug + 'static {
    /// The session was closed.
    fn on_closed(&self, record: &SessionRecord) {
        let _ = record;
    }

    /// The session expired, by time or on purpose.
    fn on_expired(&self, record: &SessionRecord) {
        let _ = record;
    }
}
