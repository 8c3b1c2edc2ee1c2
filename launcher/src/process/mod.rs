//! Processes: the one clone helper, the workload's setup and its init, the
//! host-side monitor, capabilities and seccomp, entering a running
//! workload, and the pidfd handle every signal and wait goes through.
//! Nothing here knows about the workload store.

pub mod clone;
pub mod enter;
pub mod handle;
pub mod init;
pub mod monitor;
pub mod report;
pub mod security;
pub mod spawn;
pub mod stat;

pub use handle::Process;
pub use report::Report;

/// Kills a tree this command started and could not record, and reaps it
/// when it is this process's child (a foreground start).
pub fn kill_started(pid: i32, start: Option<u64>) {
    handle::kill_and_wait(pid, start, std::time::Duration::from_secs(5));
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Puts a tree left stopped by the dump back to work: CRIU's network lock
/// goes, every task gets SIGCONT.
pub fn resume_stopped(root: i32) {
    if let Ok(tables) = cns_netns::nft::criu_lock_tables(root) {
        for t in tables {
            let _ = cns_netns::nft::delete_table(Some(root), &t);
        }
    }
    for p in cns_engine::preflight::tree_pids(root) {
        // SAFETY: kill(2) with SIGCONT on the tasks of the tree cns dumped.
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
}

