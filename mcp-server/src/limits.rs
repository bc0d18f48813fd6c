//! The process's open-file limit, which bounds how many connections the
//! HTTP server holds open.

use std::io;

/// The process's open-file limit (its soft limit), if it has one.
pub(crate) fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|&soft| soft != rlimit::INFINITY)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the process's open-file limit (its soft limit) as far as its hard
/// limit allows and returns the new soft limit, so that the connection cap
/// of [`McpServer::serve_http`], which stays below it, is as high as the
/// system allows. The binary calls it at start; a library user may too.
///
/// [`McpServer::serve_http`]: crate::McpServer::serve_http
///
/// # Errors
///
/// The system's error if the limit cannot be read or set.
pub fn raise_open_file_limit() -> io::Result<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX)
    }
    #[cfg(not(unix))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no open-file limit on this platform",
        ))
    }
}
