//! The event store's directory: the same naming, locking and syncing as the
//! session store's, with files of its own extension.

pub(super) use crate::file::dir::{EVENTS, Entry, create_synced, lock, probe, sync_dir};
