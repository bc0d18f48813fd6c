//! The manager's settings.

use std::time::Duration;

use crate::{ExpiryPolicy, RecordWrite};

/// Settings of a [`SessionManager`](crate::SessionManager).
///
/// Start from [`ManagerConfig::default`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use session_core::ManagerConfig;
///
/// let config = ManagerConfig::default()
///     .idle_timeout(Duration::from_secs(600))
///     .max_sessions(Some(50_000));
/// assert_eq!(config.expiry.idle_timeout, Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Default expiry of new sessions (30 minutes idle, no absolute lifetime).
    pub expiry: ExpiryPolicy,
    /// The longest a session may stay `Initializing` (10 s).
    ///
    /// A session created with
    /// [`NewSession::initializing(timeout)`](crate::NewSession::initializing)
    /// must be activated within the smaller of `timeout` and this. The
    /// manager enforces it: the handshake deadline is fixed at creation and
    /// writes do not move it, so from then on reads and writes report
    /// [`Error::Expired`](crate::Error::Expired) and a sweep removes the
    /// session. Transports need no timer of their own. Sessions created
    /// without `initializing` start `Active` and are not affected.
    pub handshake_timeout: Duration,
    /// Cap on live sessions; `None` for no cap (100,000).
    pub max_sessions: Option<usize>,
    /// Largest serialized state in bytes (1 MiB).
    pub max_state_bytes: usize,
    /// Largest serialized metadata in bytes (64 KiB): the owner, protocol
    /// version, `clientInfo` and capabilities a session is created with, which
    /// come from the client. A larger one is refused with
    /// [`Error::MetaTooLarge`](crate::Error::MetaTooLarge).
    pub max_meta_bytes: usize,
    /// How long a closed or expired record is kept, so that a late request
    /// learns the session was closed or expired rather than never existed (5 min).
    /// Zero deletes the record at once: later calls read
    /// [`Error::NotFound`](crate::Error::NotFound), and a store with heavy
    /// session churn does not hold minutes of dead records.
    pub retention: Duration,
    /// A read records activity only if the last one is at least this old
    /// (1 s), and never less often than a tenth of the session's idle timeout.
    /// A session may therefore expire up to this much earlier than its last
    /// read plus its idle timeout; writes always record activity.
    pub touch_interval: Duration,
    /// Records removed or listed per store call when sweeping or clearing
    /// (1,000); 0 counts as 1.
    pub sweep_batch: usize,
    /// Compare-and-swap attempts before an update gives up with
    /// [`Error::Conflict`](crate::Error::Conflict) (10,000); 0 counts as 1.
    pub max_write_attempts: u32,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            expiry: ExpiryPolicy::default(),
            handshake_timeout: Duration::from_secs(10),
            max_sessions: Some(100_000),
            max_state_bytes: 1 << 20,
            max_meta_bytes: 64 << 10,
            retention: RecordWrite::DEFAULT_RETENTION,
            touch_interval: Duration::from_secs(1),
            sweep_batch: 1_000,
            max_write_attempts: 10_000,
        }
    }
}

impl ManagerConfig {
    /// Sets the default idle timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.expiry.idle_timeout = timeout;
        self
    }

    /// Sets the default absolute lifetime.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.expiry.max_lifetime = lifetime;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the cap on live sessions.
    pub fn max_sessions(mut self, max: Option<usize>) -> Self {
        self.max_sessions = max;
        self
    }

    /// Sets the largest serialized state.
    pub fn max_state_bytes(mut self, bytes: usize) -> Self {
        self.max_state_bytes = bytes;
        self
    }

    /// Sets the largest serialized metadata.
    pub fn max_meta_bytes(mut self, bytes: usize) -> Self {
        self.max_meta_bytes = bytes;
        self
    }

    /// Sets how many records one store call sweeps or lists.
    pub fn sweep_batch(mut self, batch: usize) -> Self {
        self.sweep_batch = batch;
        self
    }

    /// Sets how many compare-and-swap attempts a write makes.
    pub fn max_write_attempts(mut self, attempts: u32) -> Self {
        self.max_write_attempts = attempts;
        self
    }

    /// Sets how long terminal records are kept.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the touch interval.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }
}
