//! A CRIU failure as one sentence and the fix, read from CRIU's log.

use std::fs;
use std::path::Path;

use crate::error::{Error, ErrorKind};

/// Explains a failed CRIU `op` from its log.
pub fn criu_failure(op: &str, err: cns_engine::RpcError, log: &Path) -> Error {
    if let cns_engine::RpcError::Hook { message, .. } = &err {
        // cns itself stopped CRIU (an action script, the commit): that is the cause.
        return Error::new(ErrorKind::Criu, format!("{op} failed: {message}")).with_hint(format!("CRIU rolled back; its log is {}", log.display()));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    if let Some(e) = cns_engine::explain_log(&text) {
        return Error::new(ErrorKind::Criu, format!("{op} failed: {} (CRIU log: {})", e.message, log.display())).with_hint(e.hint);
    }
    let first = cns_engine::explain::first_error(&text).unwrap_or_else(|| err.to_string());
    Error::new(ErrorKind::Criu, format!("{op} failed: {first}")).with_hint(format!("see the CRIU log {}", log.display()))
}

/// A file in `dir` for CRIU's stderr (best effort): private, and never
/// through a symlink planted at its name.
pub fn criu_stderr(dir: &Path, name: &str) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(dir.join(name)).ok()
}

/// Opens a directory to hand to CRIU as an fd.
pub fn open_dir(p: &Path) -> crate::error::Result<std::os::fd::OwnedFd> {
    use crate::error::Context;
    nix::fcntl::open(p, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .with_context(|| format!("cannot open {}", p.display()))
}
