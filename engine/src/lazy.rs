//! Post-copy restore on one host: CRIU's lazy-pages daemon serves a
//! restored tree's memory from the image directory, on demand (through
//! userfaultfd) and in the background, so the tree runs before its memory
//! is in. The daemon is a child of the caller, who reaps it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CRIU stalls without it (its own F_SETPIPE_SZ fails silently): a lazy
/// restore needs `fs.pipe-max-size` of at least this.
pub const MIN_PIPE_MAX: u64 = 4 << 20;

/// The socket CRIU's restore and the daemon meet on, in the work dir.
pub const SOCKET: &str = "lazy-pages.socket";

/// Why this host cannot do a lazy restore, if it cannot.
pub fn host_problem() -> Option<(String, String)> {
    let pipe_max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if pipe_max < MIN_PIPE_MAX {
        return Some((
            format!("a lazy restore needs fs.pipe-max-size of at least {} MiB; it is {} KiB here", MIN_PIPE_MAX >> 20, pipe_max >> 10),
            format!("raise it (cns never changes a host sysctl for you): sysctl -w fs.pipe-max-size={MIN_PIPE_MAX}"),
        ));
    }
    // SAFETY: userfaultfd(2) with flags only; the fd it returns is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Some((format!("userfaultfd is not available here ({e})"), "a lazy restore needs a kernel with CONFIG_USERFAULTFD".into()));
    }
    // SAFETY: closing the fd userfaultfd(2) just returned.
    unsafe { libc::close(fd as i32) };
    None
}

/// A running lazy-pages daemon.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub work_dir: PathBuf,
}

impl Daemon {
    /// Starts `criu lazy-pages` serving `images`, its socket and log in
    /// `work_dir`, and waits until it listens. With `page_server`, a socket
    /// connected to a page server elsewhere (a migration's source), the
    /// memory comes from there instead of the image's pages files; the
    /// caller keeps that fd open until this returns.
    pub fn start(criu: &Path, images: &Path, work_dir: &Path, page_server: Option<std::os::fd::RawFd>) -> Result<Daemon, String> {
        let mut cmd = Command::new(criu);
        cmd.arg("lazy-pages").arg("-D").arg(images).arg("-W").arg(work_dir).args(["-o", "lazy-pages.log", "-v4"]);
        if let Some(fd) = page_server {
            cmd.args(["--page-server", "--ps-socket", &fd.to_string()]);
            crate::rpc::keep_fds(&mut cmd, vec![fd]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} lazy-pages: {e}", criu.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !work_dir.join(SOCKET).exists() {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("CRIU's lazy-pages daemon exited at start ({st}); see {}", work_dir.join("lazy-pages.log").display()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("CRIU's lazy-pages daemon did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Daemon { child, work_dir: work_dir.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
