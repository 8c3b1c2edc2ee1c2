//! `cns restore --lazy`: the tree runs at once while CRIU's lazy-pages
//! daemon serves its memory from the image. cns owns the daemon: it starts
//! it next to the restore (in the monitor of a detached restore), and a
//! watcher thread reaps it. Until every page is in, the workload's state
//! dir holds a `lazy` marker (dump refuses then). If the daemon dies before
//! it is done, the tree would hang on its next page fault: the watcher
//! kills it and says so in its log.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cns_engine::lazy::Daemon;

use crate::error::{Error, ErrorKind, Result};

/// The marker a lazily restored workload carries until its memory is in.
pub const MARKER: &str = "lazy";

/// The per-restore work directory of a lazy restore of `name` from `images`
/// (several copies of one image each have their own daemon and socket).
pub fn work_dir(images: &Path, name: &str) -> PathBuf {
    images.join(format!(".lazy-{name}"))
}

/// The two ends of a socket pair to a remote page server. Only with
/// `detach`: the monitor hands `daemon_end` to the lazy-pages daemon and
/// closes both its copies (so the stream ends when the daemon or the
/// caller does); the caller closes its `daemon_end` after the restore and
/// carries the stream on `caller_end`.
#[derive(Debug, Clone, Copy)]
pub struct RemotePages {
    pub daemon_end: std::os::fd::RawFd,
    pub caller_end: std::os::fd::RawFd,
}

/// Refuses a lazy restore this host cannot do, in one line.
pub fn check_host() -> Result<()> {
    match cns_engine::lazy::host_problem() {
        Some((what, fix)) => Err(Error::new(ErrorKind::Blocked, what).with_hint(fix)),
        None => Ok(()),
    }
}

/// Starts the daemon for a restore whose work dir is `work`; with
/// `remote` (only in a detached monitor: see RemotePages), the memory comes
/// from the page server at the other end, and this process's copies of the
/// pair are closed once the daemon has its end (so the stream ends with
/// the daemon, or with the caller that carries it).
pub fn start(criu: &Path, images: &Path, work: &Path, state_dir: &Path, remote: Option<RemotePages>) -> Result<Daemon> {
    if let Some(r) = remote {
        // SAFETY: the monitor's inherited copy of the caller's end, unused here.
        unsafe { libc::close(r.caller_end) };
    }
    let page_server = remote.map(|r| r.daemon_end);
    let _ = fs::remove_dir_all(work);
    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
        .create(work)
        .map_err(|e| Error::wrap(format!("cannot create {}", work.display()), e))?;
    let d = Daemon::start(criu, images, work, page_server);
    if let Some(fd) = page_server {
        // SAFETY: the monitor's inherited copy, which nothing else here uses.
        unsafe { libc::close(fd) };
    }
    let d = d.map_err(|e| Error::new(ErrorKind::Criu, e))?;
    let _ = crate::files::write_transient(&state_dir.join(MARKER), format!("{}\n", d.pid()).as_bytes(), 0o600);
    Ok(d)
}

/// The restore failed: the daemon goes.
pub fn abandon(mut d: Daemon, state_dir: &Path) {
    let _ = d.child.kill();
    let _ = d.child.wait();
    let _ = fs::remove_file(state_dir.join(MARKER));
    let _ = fs::remove_dir_all(&d.work_dir);
}

/// What the watcher needs to act on the restored tree.
#[derive(Debug, Clone)]
pub struct Watch {
    pub name: String,
    pub root: i32,
    pub root_start: Option<u64>,
    pub log: PathBuf,
    pub state_dir: PathBuf,
}

/// Watcher threads of this process, with their daemon's pid.
static WATCHERS: std::sync::Mutex<Vec<(u32, std::thread::JoinHandle<()>)>> = std::sync::Mutex::new(Vec::new());

/// Reaps the daemon in a thread: done, the marker goes; dead before it was
/// done, the tree is killed (it would hang on its next page fault, or run
/// on with pages that never came) and its log says why.
pub fn watch(mut d: Daemon, w: Watch) {
    let pid = d.pid();
    let spawned = std::thread::Builder::new().name("lazy-pages".into()).spawn(move || {
        let status = d.child.wait();
        let ok = status.as_ref().is_ok_and(|s| s.success());
        if !ok {
            let why = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            crate::process::handle::kill_and_wait(w.root, w.root_start, Duration::from_secs(5));
            note(&w.log, &format!("cns: the lazy-pages daemon of {} died ({why}) before the workload's memory was in; the workload was killed", w.name));
        }
        let _ = fs::remove_file(w.state_dir.join(MARKER));
        let _ = fs::remove_dir_all(&d.work_dir);
    });
    match spawned {
        Ok(h) => {
            if let Ok(mut ws) = WATCHERS.lock() {
                ws.push((pid, h));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch the lazy-pages daemon"),
    }
}

/// The restored tree is gone: a daemon still serving it goes too, and every
/// watcher finishes (its note written) before the exit is recorded.
pub fn finish_watchers() {
    let ws = WATCHERS.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    for (pid, h) in ws {
        if !h.is_finished() {
            // Our own child, not yet reaped by its watcher: the PID is still its.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = h.join();
    }
}

fn note(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "{line}");
    }
}

/// The daemon still serving `state_dir`'s workload, if any.
pub fn pending(state_dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(state_dir.join(MARKER)).ok()?.trim().parse().ok()?;
    crate::process::stat::process_matches(pid, None).then_some(pid)
}
