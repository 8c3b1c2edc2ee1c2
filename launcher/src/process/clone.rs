//! The one clone helper: fork(2) into new namespaces.

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

/// fork(2)-like clone with extra namespace flags: the child continues here
/// with a copy of the parent's memory. Call it only while the process is
/// single-threaded (the child must not depend on other threads' locks), and
/// end every path of the child in exec or `_exit`.
pub fn fork_into(flags: CloneFlags) -> nix::Result<ForkResult> {
    let raw = flags.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
    // SAFETY: a clone without CLONE_VM and with a NULL stack behaves like
    // fork(2): the child gets its own copy of the address space and resumes
    // here. The callers are single-threaded when they call this.
    let ret = unsafe { libc::syscall(libc::SYS_clone, raw, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(nix::Error::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}
