//! A process by handle, not by number: a pidfd opened and then checked
//! against the start time cns recorded. Once open, the handle can never
//! reach another process that reused the PID: every signal and every wait
//! of cns (kill, exec, rm, recovery, the monitor) goes through one.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::stat::{process_matches, process_start};

/// An open handle on one live process.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    fd: OwnedFd,
}

impl Process {
    /// Opens `pid` if it is alive and (when `start` is given) the very
    /// process that started at `start`. The check comes after the pidfd is
    /// open, so the handle cannot be to a process that reused the PID.
    pub fn open(pid: i32, start: Option<u64>) -> Option<Process> {
        if pid <= 0 {
            return None;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this fd; we own it from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !process_matches(pid, start) {
            return None;
        }
        Some(Process { pid, fd })
    }

    /// Opens `pid` as it is now, remembering its start time.
    pub fn open_now(pid: i32) -> Option<Process> {
        let start = process_start(pid)?;
        Process::open(pid, Some(start))
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` through the pidfd.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        // SAFETY: pidfd_send_signal on an fd we own, no siginfo, no flags.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.fd.as_raw_fd(), sig as i32, std::ptr::null::<libc::siginfo_t>(), 0) };
        if r < 0 { Err(nix::Error::last()) } else { Ok(()) }
    }

    /// Whether the process has exited (a zombie counts as exited).
    pub fn exited(&self) -> bool {
        self.poll(0)
    }

    fn poll(&self, ms: i32) -> bool {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        r == 1
    }

    /// Waits up to `timeout` for the process to exit; true when it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            if self.poll(ms) {
                return true;
            }
            if left.is_zero() {
                return false;
            }
        }
    }

    /// SIGKILL and wait up to `timeout` for the exit. Killing a pid
    /// namespace's init ends the whole namespace. True when it is gone.
    pub fn kill_and_wait(&self, timeout: Duration) -> bool {
        let _ = self.signal(Signal::SIGKILL);
        self.wait_exit(timeout)
    }
}

impl AsFd for Process {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Kills the process `pid` started at `start` (if it is still that process)
/// and waits for it; true when it is gone (or was already).
pub fn kill_and_wait(pid: i32, start: Option<u64>, timeout: Duration) -> bool {
    match Process::open(pid, start) {
        Some(p) => p.kill_and_wait(timeout),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_refuses_a_wrong_start_time_and_sees_the_exit() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id() as i32;
        let start = process_start(pid);
        assert!(Process::open(pid, start.map(|s| s + 1)).is_none(), "a different start time must not open");
        let p = Process::open(pid, start).expect("open");
        assert!(!p.exited());
        p.signal(Signal::SIGKILL).expect("kill");
        assert!(p.wait_exit(Duration::from_secs(5)));
        let _ = child.wait();
    }
}
