//! PID 1 of a workload's pid namespace: a small init that reaps every
//! child, forwards signals to the command and exits with its status. The
//! same loop serves the namespace init of an adopted tree's restore.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The signals init forwards to CMD; also blocked in monitors.
pub fn forwarded_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

/// Exit code for a wait status, shell style.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// PID 1's duty: reap every child, forward signals to `main`, and exit with
/// `main`'s status once it is gone. Signals are blocked and taken with
/// sigwaitinfo, so init holds no extra fd (nothing more for CRIU to dump).
pub fn init_loop(main: Pid) -> i32 {
    let sigs = forwarded_signals();
    loop {
        let sig = match sigs.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(main, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(main) {
                        if let Some(code) = exit_code(st) {
                            return code;
                        }
                    }
                }
            }
        }
    }
}

/// Blocks the signals cns forwards to a workload, in this thread. Call it
/// while the process is single-threaded: threads started later inherit the
/// mask, so no signal meant for the workload can land on one of them.
pub fn block_forwarded() -> crate::error::Result<()> {
    forwarded_signals().thread_block().map_err(|e| crate::error::Error::wrap("cannot block signals", e))
}
