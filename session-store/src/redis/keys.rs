//! Key names. One session's keys share the hash tag `{<id>}`, so they live
//! in one Redis Cluster slot.

use session_core::{SessionId, StreamId};

/// Builds key names under a prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The record of a session.
    pub(crate) fn record(&self, id: &SessionId) -> String {
        format!("{}:{{{}}}:s", self.prefix, id)
    }

    /// A `SCAN` pattern matching every record.
    pub(crate) fn record_pattern(&self) -> String {
        format!("{}:{{*}}:s", self.prefix)
    }

    /// The session id of a record key.
    pub(crate) fn id_of(&self, key: &str) -> Option<SessionId> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        SessionId::parse(rest.strip_suffix("}:s")?).ok()
    }

    /// Sorted set of every record by deadline.
    pub(crate) fn deadlines(&self) -> String {
        format!("{}:deadlines", self.prefix)
    }

    /// Sorted set of live sessions.
    pub(crate) fn live(&self) -> String {
        format!("{}:live", self.prefix)
    }

    /// The events of one stream (a Redis stream).
    pub(crate) fn events(&self, id: &SessionId, stream: &StreamId) -> String {
        format!("{}:{{{}}}:e:{}", self.prefix, id, stream)
    }

    /// The counters that number the events of a session's streams: a hash
    /// from stream name to its last event's number.
    pub(crate) fn counters(&self, id: &SessionId) -> String {
        format!("{}:{{{}}}:c", self.prefix, id)
    }

    /// The streams of a session, by their last event (Redis's time, µs).
    pub(crate) fn streams(&self, id: &SessionId) -> String {
        format!("{}:{{{}}}:streams", self.prefix, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_session_hash_tag_and_round_trip() {
        let keys = Keys::new("mcp");
        let id = SessionId::parse("abc123").unwrap();
        let record = keys.record(&id);
        assert_eq!(record, "mcp:{abc123}:s");
        assert_eq!(keys.id_of(&record), Some(id.clone()));
        assert_eq!(
            keys.events(&id, &StreamId::standalone()),
            "mcp:{abc123}:e:g"
        );
        assert!(keys.streams(&id).contains("{abc123}"));
        assert_eq!(keys.counters(&id), "mcp:{abc123}:c");
        assert_eq!(keys.id_of("other:{abc123}:s"), None);
    }
}
