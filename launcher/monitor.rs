//! The host side of a running workload: the monitor waits for the root
//! process, keeps its exit status, and in the foreground streams the log and
//! forwards SIGINT/SIGTERM/SIGHUP to it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::spawn::exit_code;
use crate::store::{State, Store};

/// What a detached monitor reports to the command that forked it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    Started { pid: i32 },
    Failed { message: String, hint: String, status: i32 },
}

/// Forks a detached monitor. In the monitor, `work` starts the workload and
/// returns the root's PID (or an error); the monitor reports that through a
/// pipe, then waits for the root and records its exit. The caller gets the
/// report and the monitor's PID.
pub fn spawn_detached(
    store: &Store,
    name: &str,
    lock_fd: std::os::fd::RawFd,
    work: &mut dyn FnMut() -> Result<i32, (String, String, i32)>,
) -> anyhow::Result<(Report, i32)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: cns is single-threaded here; the child runs the monitor and
    // leaves with _exit.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(r);
            // Until it has reported, the monitor dies with the command that
            // forked it (and CRIU, its child, with it): see recovery.rs.
            // SAFETY: prctl and getppid on ourselves.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            // The inherited lock fd shares the caller's lock: close it (an
            // unlock here would release the caller's lock too).
            // SAFETY: closing our copy of an fd the caller still owns.
            unsafe { libc::close(lock_fd) };
            let _ = nix::unistd::setsid();
            detach_stdio();
            let report = match work() {
                Ok(pid) => Report::Started { pid },
                Err((message, hint, status)) => Report::Failed { message, hint, status },
            };
            let text = serde_json::to_vec(&report).unwrap_or_default();
            // From here the monitor outlives the command (cleared before the
            // report, which the command may act on and exit right away).
            // SAFETY: prctl on ourselves.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
            let mut f = std::fs::File::from(w);
            let _ = f.write_all(&text);
            drop(f);
            let code = match report {
                Report::Started { pid } => {
                    let code = wait_root(pid);
                    record_exit(store, name, pid, code);
                    0
                }
                Report::Failed { .. } => 1,
            };
            // SAFETY: the monitor ends here without running the CLI's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut text = Vec::new();
            let _ = std::fs::File::from(r).read_to_end(&mut text);
            let report = serde_json::from_slice(&text).unwrap_or_else(|_| Report::Failed {
                message: "the monitor process died before reporting".into(),
                hint: "run with -v and see the workload's log".into(),
                status: crate::error::EXIT_CNS,
            });
            if matches!(report, Report::Failed { .. }) {
                let _ = waitpid(child, None);
            }
            Ok((report, child.as_raw()))
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
        for fd in 0..3 {
            // SAFETY: pointing stdio at /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Waits up to `timeout` for `pid` (any process, started at `start`) to be
/// gone, with a pidfd so no PID reuse can fool it.
pub fn wait_gone(pid: i32, start: Option<u64>, timeout: std::time::Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true;
    }
    // SAFETY: the kernel just gave us this fd; we own it from here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if !crate::store::process_matches(pid, start) {
        return true;
    }
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r == 1
}

/// Waits for `pid` (a child of this process) and returns its exit code.
pub fn wait_root(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(st) => {
                if let Some(c) = exit_code(st) {
                    return c;
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return crate::error::EXIT_CNS,
        }
    }
}

/// Records the exit of `pid` unless the workload moved on meanwhile (dumped,
/// restored under a new PID, removed).
pub fn record_exit(store: &Store, name: &str, pid: i32, code: i32) {
    let Ok(l) = store.lock(name) else { return };
    let Ok(mut w) = l.load() else { return };
    if w.state == State::Running && w.pid == Some(pid) {
        w.state = State::Exited;
        w.exit_code = Some(code);
        let _ = l.save(&w);
    }
}

/// Foreground: streams `log` to stdout from `offset`, forwards signals to
/// `pid`, and returns its exit code once it is gone.
pub fn foreground(pid: i32, log: &Path, offset: u64) -> i32 {
    let sigs = crate::spawn::forwarded_signals();
    let _ = sigs.thread_block();
    let mut file = std::fs::File::open(log).ok();
    if let Some(f) = file.as_mut() {
        let _ = f.seek(SeekFrom::Start(offset));
    }
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 1 << 16];
    let mut pump = |file: &mut Option<std::fs::File>| {
        if let Some(f) = file.as_mut() {
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = out.write_all(&buf[..n]);
            }
            let _ = out.flush();
        }
    };
    loop {
        pump(&mut file);
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    pump(&mut file);
                    return code;
                }
            }
            Err(_) => {
                pump(&mut file);
                return crate::error::EXIT_CNS;
            }
        }
        if let Some(sig) = timed_wait(&sigs, 50) {
            if sig != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
        }
    }
}

/// sigtimedwait(2) on `set` for up to `ms` milliseconds.
pub fn timed_wait(set: &SigSet, ms: i64) -> Option<Signal> {
    let ts = libc::timespec { tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000 };
    // SAFETY: set and ts are valid for the call; info may be NULL.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r > 0 { Signal::try_from(r).ok() } else { None }
}


/// Waits for a child while forwarding SIGINT/SIGTERM/SIGHUP to it.
pub fn foreground_wait(child: Pid) -> i32 {
    let sigs = crate::spawn::forwarded_signals();
    let _ = sigs.thread_block();
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    return code;
                }
            }
            Err(_) => return crate::error::EXIT_CNS,
        }
        if let Some(sig) = timed_wait(&sigs, 50) {
            if sig != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(child, sig);
            }
        }
    }
}
