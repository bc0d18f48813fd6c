//! [`SystemClock`]: the operating system's wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

use session_core::{Clock, Timestamp};

/// The wall clock, in milliseconds since the Unix epoch.
///
/// A clock set before 1970 reads as the epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(millis)
    }
}
