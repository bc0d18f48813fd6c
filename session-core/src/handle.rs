//! Explicit state handles (SEP-2567): server-minted ids for state that spans
//! requests, passed by the model as ordinary tool arguments.
//!
//! A handle is kept exactly like a session: a [`SessionRecord`] with an id,
//! an owner, a JSON object of state, an idle deadline and a version that
//! every write compares and swaps. [`Handles`] is a [`SessionManager`] over a
//! store of their own (so a handle can never be named as a session, nor a
//! session as a handle), with two rules of its own:
//!
//! - ids carry 128 random bits from a CSPRNG behind a short prefix that says
//!   what they name (`ctr_3f1c…`), since without authentication a handle is
//!   a bearer token;
//! - every read and write is made on behalf of a principal, and a handle
//!   bound to another principal reads as unknown ([`Error::NotFound`]).
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{Handles, ManagerConfig, ManualClock, SessionState, SessionStore};
//!
//! // `store`: any store (in `session-store`: `MemoryStore`, `FileStore`,
//! // `RedisStore::with_prefix`), not the one the sessions are in.
//! async fn demo(store: Arc<dyn SessionStore>) -> Result<(), session_core::Error> {
//! let handles = Handles::new(store, Arc::new(ManualClock::default()), ManagerConfig::default());
//! let basket = handles.mint("bsk", Some("alice"), SessionState::new()).await?;
//! let id = basket.id().as_str();
//! handles.update(id, Some("alice"), |state| {
//!     state.insert("items".into(), serde_json::json!(["apple"]));
//! }).await?;
//! // Bob cannot see Alice's basket, not even that it exists.
//! assert!(handles.get(id, Some("bob")).await.is_err());
//! Ok(())
//! }
//! ```

use std::sync::Arc;

use crate::{
    Clock, Error, ManagerConfig, NewSession, Result, SessionId, SessionManager, SessionRecord,
    SessionState, SessionStore,
};

/// Random bits in every handle id.
pub const HANDLE_RANDOM_BITS: u32 = 128;

/// The longest prefix a handle id may carry.
pub const MAX_HANDLE_PREFIX_LEN: usize = 16;

/// Hex digits of a handle id's random part.
const RANDOM_HEX: usize = (HANDLE_RANDOM_BITS / 4) as usize;

/// Durable, principal-bound handles in a store of their own.
#[derive(Debug)]
pub struct Handles {
    manager: SessionManager,
}

impl Handles {
    /// Handles kept in `store` (which must not be the sessions' store),
    /// reading time from `clock`, under `config` (its idle timeout is the
    /// handles' idle timeout, its cap the cap on live handles).
    pub fn new(store: Arc<dyn SessionStore>, clock: Arc<dyn Clock>, config: ManagerConfig) -> Self {
        Handles {
            manager: SessionManager::new(store, clock, config),
        }
    }

    /// The manager underneath: sweeping, counting, hooks.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// Whether `prefix` may start a handle id: 1 to
    /// [`MAX_HANDLE_PREFIX_LEN`] lowercase ASCII letters and digits.
    pub fn valid_prefix(prefix: &str) -> bool {
        (1..=MAX_HANDLE_PREFIX_LEN).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }

    /// A fresh id: `prefix`, `_`, and 128 random bits in lowercase hex.
    fn generate(prefix: &str) -> SessionId {
        let bits: u128 = rand::random();
        SessionId::parse(&format!("{prefix}_{bits:032x}")).expect("a handle id is visible ASCII")
    }

    /// Reads an id from outside: `None` unless it has the shape of a minted
    /// handle id (so no other record of the store can be named through it).
    pub fn parse(id: &str) -> Option<SessionId> {
        let (prefix, random) = id.rsplit_once('_')?;
        let well_formed = Self::valid_prefix(prefix)
            && random.len() == RANDOM_HEX
            && random
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| SessionId::parse(id).ok()).flatten()
    }

    /// Mints a handle bound to `owner` (`None`: anyone without a principal)
    /// holding `state`, live until it goes unused for the idle timeout.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] for a prefix [`valid_prefix`](Self::valid_prefix)
    /// refuses; otherwise as [`SessionManager::create`] ([`Error::LimitReached`]
    /// at the cap, [`Error::StateTooLarge`], [`Error::Backend`]).
    pub async fn mint(
        &self,
        prefix: &str,
        owner: Option<&str>,
        state: SessionState,
    ) -> Result<SessionRecord> {
        if !Self::valid_prefix(prefix) {
            return Err(Error::InvalidId(crate::InvalidSessionId::BadCharacter {
                position: 0,
            }));
        }
        let mut new = NewSession::new().state(state);
        if let Some(owner) = owner {
            new = new.owner(owner);
        }
        self.manager
            .create_with(new, || Self::generate(prefix))
            .await
    }

    /// The handle `id` as `principal` may see it, recording activity.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a malformed id, an unknown one, or one bound to
    /// another principal; [`Error::Expired`] once it went unused too long
    /// (then, with no retention configured, it is gone); [`Error::Backend`].
    pub async fn get(&self, id: &str, principal: Option<&str>) -> Result<SessionRecord> {
        let id = Self::parse(id).ok_or(Error::NotFound)?;
        self.manager.resume(&id, principal).await
    }

    /// Changes the handle's state with `change` (compare-and-swap, retried on
    /// conflict like [`SessionManager::update`], so concurrent writers from
    /// any process lose nothing).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), and [`Error::StateTooLarge`] or
    /// [`Error::Conflict`] as [`SessionManager::update`].
    pub async fn update<T, F>(
        &self,
        id: &str,
        principal: Option<&str>,
        change: F,
    ) -> Result<(SessionRecord, T)>
    where
        F: FnMut(&mut SessionState) -> T + Send,
        T: Send,
    {
        let id = Self::parse(id).ok_or(Error::NotFound)?;
        self.manager.update_as(&id, principal, change).await
    }

    /// Merges `patch` into the handle's state one level deep (a `null` value
    /// removes the key).
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub async fn update_state(
        &self,
        id: &str,
        principal: Option<&str>,
        patch: SessionState,
    ) -> Result<SessionRecord> {
        self.update(id, principal, |state| {
            for (key, value) in &patch {
                if value.is_null() {
                    state.remove(key);
                } else {
                    state.insert(key.clone(), value.clone());
                }
            }
        })
        .await
        .map(|(record, ())| record)
    }

    /// Ends a handle: it reads as unknown from then on.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn delete(&self, id: &str, principal: Option<&str>) -> Result<()> {
        let record = self.get(id, principal).await?;
        self.manager.close_from(record).await.map(|_| ())
    }

    /// Removes handles past their deadline, at a cost in proportion to what
    /// expired; returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] from the store.
    pub async fn sweep(&self) -> Result<usize> {
        self.manager.sweep().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_a_prefix_and_128_random_bits() {
        let a = Handles::generate("ctr");
        let b = Handles::generate("ctr");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("ctr_"));
        assert_eq!(a.as_str().len(), "ctr_".len() + 32);
        assert_eq!(Handles::parse(a.as_str()), Some(a));
    }

    #[test]
    fn only_minted_shapes_parse() {
        let random = "0123456789abcdef0123456789abcdef";
        assert!(Handles::parse(&format!("ctr_{random}")).is_some());
        for bad in [
            random.to_string(),
            format!("_{random}"),
            format!("CTR_{random}"),
            format!("ctr_{}", &random[1..]),
            format!("ctr_{random}0"),
            format!("ctr_{}", random.to_uppercase()),
            format!("a-b_{random}"),
            format!("{}_{random}", "x".repeat(MAX_HANDLE_PREFIX_LEN + 1)),
            "mcp-request-state-key".into(),
            String::new(),
        ] {
            assert_eq!(Handles::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_are_short_lowercase_words() {
        assert!(Handles::valid_prefix("ctr"));
        assert!(Handles::valid_prefix("h2"));
        assert!(!Handles::valid_prefix(""));
        assert!(!Handles::valid_prefix("Ctr"));
        assert!(!Handles::valid_prefix("c_t"));
        assert!(!Handles::valid_prefix(
            &"a".repeat(MAX_HANDLE_PREFIX_LEN + 1)
        ));
    }
}
