//! `criu page-server` on a socket the caller carries elsewhere (a
//! migration's channel): the page server's end of a socket pair is handed
//! to CRIU at its own number (`--ps-socket`), the caller keeps the other.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `criu page-server --ps-socket FD -D dir` with `extra` options
/// (`--lazy-pages`, `--prev-images-dir P`), its log `page-server.log` in
/// `dir`. Returns the child (the caller reaps it) and the caller's end of
/// its socket.
pub fn spawn(criu: &Path, dir: &Path, extra: &[&str]) -> std::io::Result<(Child, UnixStream)> {
    let (theirs, ours) = UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(criu);
    cmd.arg("page-server").args(extra).args(["--ps-socket", &fd.to_string(), "-o", "page-server.log", "-v4", "-D"]).arg(dir);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    crate::rpc::keep_fds(&mut cmd, vec![fd]);
    let child = cmd.spawn()?;
    // Only CRIU holds its end now: the stream ends when CRIU does.
    drop(theirs);
    Ok((child, ours))
}
