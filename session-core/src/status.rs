//! The session lifecycle: `Initializing → Active → Expired | Closed`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a session is in its lifecycle.
///
/// ```text
/// Initializing ──activate──▶ Active
///      │                       │
///      ├──────expire──────────▶├──▶ Expired  (terminal)
///      └──────close───────────▶└──▶ Closed   (terminal)
/// ```
///
/// Nothing writes to a session in a terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionStatus {
    /// Created by `initialize`; waiting for `notifications/initialized`.
    Initializing,
    /// Usable.
    Active,
    /// Past its deadline, or expired on purpose. Terminal.
    Expired,
    /// Closed by the client or the server. Terminal.
    Closed,
}

impl SessionStatus {
    /// Whether the status admits no further change.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Expired | SessionStatus::Closed)
    }

    /// The lowercase name used on the wire and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Initializing => "initializing",
            SessionStatus::Active => "active",
            SessionStatus::Expired => "expired",
            SessionStatus::Closed => "closed",
        }
    }

    /// Checks that moving from `self` to `to` is a legal transition.
    ///
    /// # Errors
    ///
    /// [`Error::Expired`] or [`Error::Closed`] when `self` is terminal (nothing
    /// leaves a terminal status), and [`Error::InvalidTransition`] for a move the
    /// state machine does not have (for example `Active → Initializing`).
    pub fn transition(self, to: SessionStatus) -> Result<SessionStatus, Error> {
        use SessionStatus::*;
        match (self, to) {
            (Expired, _) => Err(Error::Expired),
            (Closed, _) => Err(Error::Closed),
            (Initializing, Active | Expired | Closed) | (Active, Expired | Closed) => Ok(to),
            (from, to) => Err(Error::InvalidTransition { from, to }),
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SessionStatus::*;
    use super::*;

    const ALL: [SessionStatus; 4] = [Initializing, Active, Expired, Closed];

    #[test]
    fn only_the_documented_transitions_are_legal() {
        let legal = [
            (Initializing, Active),
            (Initializing, Expired),
            (Initializing, Closed),
            (Active, Expired),
            (Active, Closed),
        ];
        for from in ALL {
            for to in ALL {
                let result = from.transition(to);
                if legal.contains(&(from, to)) {
                    assert_eq!(result.ok(), Some(to), "{from} -> {to}");
                } else {
                    assert!(result.is_err(), "{from} -> {to} must be rejected");
                }
            }
        }
    }

    #[test]
    fn terminal_statuses_report_themselves() {
        assert!(matches!(Expired.transition(Active), Err(Error::Expired)));
        assert!(matches!(Closed.transition(Closed), Err(Error::Closed)));
        assert!(matches!(
            Active.transition(Initializing),
            Err(Error::InvalidTransition { .. })
        ));
        assert_eq!(serde_json::to_string(&Active).unwrap(), "\"active\"");
    }
}
