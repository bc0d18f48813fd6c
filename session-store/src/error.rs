//! Errors of opening and running a store, beyond the session contract.

use std::io;
use std::path::{Path, PathBuf};

/// Why a store could not be opened, or stopped working.
///
/// Operations of the [`SessionStore`](session_core::SessionStore) trait report
/// [`session_core::Error`]; this type covers what happens around them (opening
/// a directory, locking it, reading its format). It converts into
/// [`session_core::Error::Backend`] with itself as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another store (in this or another process) has the directory open.
    #[error(
        "{} is in use by another session store (lock file {}); stop the other process or use another directory",
        dir.display(),
        dir.join(crate::file::LOCK_FILE).display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A file in the directory is not in a format this version reads.
    #[error("{}: {detail}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Error> for session_core::Error {
    fn from(error: Error) -> Self {
        session_core::Error::backend(error.to_string(), error)
    }
}
