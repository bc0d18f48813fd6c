//! When a session stops being usable: idle timeout and absolute lifetime.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// How long a session lives.
///
/// A session expires at the earlier of `last_activity + idle_timeout` and, when
/// set, `created_at + max_lifetime`. The manager applies a default policy to
/// every session; a session may carry its own (see
/// [`NewSession::idle_timeout`](crate::NewSession::idle_timeout)).
///
/// ```
/// use std::time::Duration;
/// use session_core::{ExpiryPolicy, Timestamp};
///
/// let policy = ExpiryPolicy::idle(Duration::from_secs(60))
///     .with_max_lifetime(Duration::from_secs(90));
/// let created = Timestamp::from_millis(0);
/// // Idle deadline first...
/// assert_eq!(policy.deadline(created, created), Timestamp::from_millis(60_000));
/// // ...until the absolute lifetime is nearer.
/// let later = Timestamp::from_millis(50_000);
/// assert_eq!(policy.deadline(created, later), Timestamp::from_millis(90_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryPolicy {
    /// Inactivity after which the session expires.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// Age after which the session expires however active it is.
    #[serde(with = "opt_millis", default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<Duration>,
}

impl ExpiryPolicy {
    /// The default idle timeout: 30 minutes.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// A policy with only an idle timeout.
    pub const fn idle(idle_timeout: Duration) -> Self {
        ExpiryPolicy {
            idle_timeout,
            max_lifetime: None,
        }
    }

    /// The same policy with an absolute lifetime.
    pub const fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// The instant a session created at `created_at` and last used at
    /// `last_activity` expires.
    pub fn deadline(&self, created_at: Timestamp, last_activity: Timestamp) -> Timestamp {
        let idle = last_activity.saturating_add(self.idle_timeout);
        match self.max_lifetime {
            Some(lifetime) => idle.min(created_at.saturating_add(lifetime)),
            None => idle,
        }
    }
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        ExpiryPolicy::idle(Self::DEFAULT_IDLE_TIMEOUT)
    }
}

fn duration_millis(duration: &Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::duration_millis(d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::duration_millis(d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|m| m.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_thirty_minutes_idle_without_lifetime() {
        let policy = ExpiryPolicy::default();
        assert_eq!(policy.idle_timeout, Duration::from_secs(1800));
        assert_eq!(policy.max_lifetime, None);
    }

    #[test]
    fn deadline_saturates_instead_of_overflowing() {
        let policy = ExpiryPolicy::idle(Duration::MAX);
        assert_eq!(
            policy.deadline(Timestamp::from_millis(1), Timestamp::from_millis(1)),
            Timestamp::MAX
        );
    }

    #[test]
    fn serializes_as_milliseconds() {
        let policy =
            ExpiryPolicy::idle(Duration::from_secs(2)).with_max_lifetime(Duration::from_secs(3));
        let json = serde_json::to_value(policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"idle_timeout": 2000, "max_lifetime": 3000})
        );
        assert_eq!(
            serde_json::from_value::<ExpiryPolicy>(json).unwrap(),
            policy
        );
    }
}
