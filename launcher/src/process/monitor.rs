//! The host side of a running workload: the monitor waits for the root
//! process, keeps its exit status, and in the foreground streams the log and
//! forwards SIGINT/SIGTERM/SIGHUP to it.

use std::io::{Read, Seek, SeekFrom, Write};

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::error::{EXIT_CNS, ErrorKind, Result};
use crate::process::init::{exit_code, forwarded_signals};
use crate::process::report::Report;

/// Starts a workload with `work`: in the foreground as this process's child
/// (signals for it blocked first), or under a detached monitor that hands
/// the root's exit to `on_exit`. A monitor's failure report becomes an
/// error of `kind`. Returns the root and its monitor (this process in the
/// foreground).
pub fn start(
    detach: bool,
    lock_fd: std::os::fd::RawFd,
    kind: ErrorKind,
    work: &mut dyn FnMut() -> Result<i32>,
    on_exit: &mut dyn FnMut(i32, i32),
) -> Result<(i32, i32)> {
    if !detach {
        // Blocked before any forwarder thread exists, so no signal meant
        // for the workload lands on one (foreground() takes them).
        crate::process::init::block_forwarded()?;
        return Ok((work()?, std::process::id() as i32));
    }
    let (report, monitor) = spawn_detached(lock_fd, work, on_exit)?;
    Ok((report.into_result(kind)?, monitor))
}

/// Forks a detached monitor. In the monitor, `work` starts the workload and
/// returns the root's PID (or an error); the monitor reports that through a
/// pipe, then waits for the root and hands its exit code to `on_exit`. The
/// caller gets the report and the monitor's PID.
pub fn spawn_detached(
    lock_fd: std::os::fd::RawFd,
    work: &mut dyn FnMut() -> Result<i32>,
    on_exit: &mut dyn FnMut(i32, i32),
) -> Result<(Report, i32)> {
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
            // Before work() starts any thread (the port forwarders): a
            // SIGTERM to the monitor must never land on a forwarder.
            let _ = forwarded_signals().thread_block();
            let report = match work() {
                Ok(pid) => Report::Started { pid },
                Err(e) => Report::failed(&e),
            };
            // From here the monitor outlives the command (cleared before the
            // report, which the command may act on and exit right away).
            // SAFETY: prctl on ourselves.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
            report.send(w);
            let code = match report {
                Report::Started { pid } => {
                    let code = wait_root(pid);
                    on_exit(pid, code);
                    0
                }
                Report::Failed { .. } => 1,
            };
            // SAFETY: the monitor ends here without running the CLI's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let report = Report::receive(r).unwrap_or_else(|| Report::Failed {
                message: "the monitor process died before reporting".into(),
                hint: "run with -v and see the workload's log".into(),
                status: EXIT_CNS,
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
/// gone, through a pidfd so no PID reuse can fool it.
pub fn wait_gone(pid: i32, start: Option<u64>, timeout: std::time::Duration) -> bool {
    match crate::process::handle::Process::open(pid, start) {
        Some(p) => p.wait_exit(timeout),
        None => true,
    }
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
            Err(_) => return EXIT_CNS,
        }
    }
}

/// Foreground: streams `log` to `out` from `offset`, forwards signals to
/// `pid` (a child of this process), and returns its exit code once it is
/// gone.
pub fn foreground(pid: i32, log: &Path, offset: u64, out: &mut dyn Write) -> i32 {
    let sigs = forwarded_signals();
    let _ = sigs.thread_block();
    let mut file = std::fs::File::open(log).ok();
    if let Some(f) = file.as_mut() {
        let _ = f.seek(SeekFrom::Start(offset));
    }
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
                return EXIT_CNS;
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
    let sigs = forwarded_signals();
    let _ = sigs.thread_block();
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    return code;
                }
            }
            Err(_) => return EXIT_CNS,
        }
        if let Some(sig) = timed_wait(&sigs, 50) {
            if sig != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(child, sig);
            }
        }
    }
}
