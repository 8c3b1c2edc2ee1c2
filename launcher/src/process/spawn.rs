//! The run path: clone into fresh namespaces and set the child up so that
//! CRIU can dump it at any moment.
//!
//! Process layout of a workload:
//!
//! ```text
//! monitor (host side: `cns run` in the foreground, or a detached monitor)
//!  └─ init    PID 1 of the new pid ns: a small cns init (session leader,
//!     │       reaps zombies, forwards signals, exits with CMD's status)
//!     └─ CMD  PID 2: the user's command
//! ```
//!
//! The monitor is outside the namespaces and is never part of a dump; the
//! dumped tree is init and everything below it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use seccompiler::BpfProgram;

use crate::error::{EXIT_CANNOT_EXEC, EXIT_CNS, EXIT_NOT_FOUND, Error, ErrorKind};
use crate::process::init::{forwarded_signals, init_loop};
use crate::process::report::Report;
use crate::process::security::CapDrop;

/// Everything the child needs, prepared and validated by the caller.
#[derive(Debug)]
pub struct Spec {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub hostname: String,
    pub log: PathBuf,
    /// An existing empty file: the log is bind-mounted onto it inside the
    /// mount ns and stdout/stderr are opened through it.
    pub stdio_mount: PathBuf,
    pub cap_drop: CapDrop,
    pub seccomp: Option<BpfProgram>,
    /// Inner end of the veth (host end created by the caller's `before_go`).
    pub net: Option<cns_netns::LinkAddrs>,
    /// The binary init re-executes as: cns's static init
    /// (confine::rootfs::static_init), at its host path.
    pub init_binary: PathBuf,
    /// cns's own directories: hidden inside the workload (state, images,
    /// logs) under read-only binds of `mask`, an empty directory.
    pub masked: Vec<PathBuf>,
    pub mask: PathBuf,
    /// cns's directories the workload may see but not change (init's binary, the config).
    pub read_only: Vec<PathBuf>,
    /// Its own root, mounts, read-only root.
    pub layout: cns_mounts::confine::Layout,
    /// A root of its own: `init_binary` is bind-mounted into it (as
    /// confine::INIT_IN_ROOTFS) and run from there.
    pub own_root: bool,
    /// The user CMD runs as.
    pub user: Option<crate::confine::user::User>,
}

/// A failed setup step in the child, reported to the parent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{step} failed: {message}")]
pub struct StepError {
    pub step: String,
    pub message: String,
    pub errno: Option<i32>,
    pub hint: String,
    /// Exit status to use (125 setup, 126 cannot exec, 127 not found).
    pub status: i32,
}

impl StepError {
    fn new(step: &str, err: impl std::fmt::Display, errno: Option<i32>, hint: &str) -> StepError {
        StepError { step: step.into(), message: err.to_string(), errno, hint: hint.into(), status: EXIT_CNS }
    }
}

/// Failures of `start`.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a pipe: {0}")]
    Pipe(nix::Error),
    #[error("cannot create a time namespace: {0}")]
    TimeNs(nix::Error),
    #[error("cannot clone into new namespaces: {0}")]
    Clone(nix::Error),
    #[error("{0}")]
    Parent(Error),
    #[error(transparent)]
    Child(StepError),
}

impl SpawnError {
    pub fn hint(&self) -> String {
        match self {
            SpawnError::Clone(nix::Error::EPERM) | SpawnError::TimeNs(nix::Error::EPERM) => {
                "cns must run as root (CAP_SYS_ADMIN) to create namespaces".into()
            }
            SpawnError::Clone(nix::Error::ENOSPC) => {
                "a namespace limit is reached: see /proc/sys/user/max_*_namespaces".into()
            }
            SpawnError::Clone(nix::Error::EINVAL) => "the kernel lacks one of the namespaces (pid, mnt, net, uts, ipc)".into(),
            SpawnError::TimeNs(_) => "the kernel needs CONFIG_TIME_NS".into(),
            SpawnError::Child(s) => s.hint.clone(),
            _ => "run with -v for details".into(),
        }
    }
}

impl From<SpawnError> for Error {
    fn from(e: SpawnError) -> Error {
        let status = match &e {
            SpawnError::Child(s) => s.status,
            _ => EXIT_CNS,
        };
        let hint = e.hint();
        let message = match &e {
            SpawnError::Child(s) if s.step.is_empty() => s.message.clone(),
            other => other.to_string(),
        };
        Error::new(ErrorKind::Start, format!("cannot start the workload: {message}")).with_hint(hint).with_status(status)
    }
}

/// Namespaces every workload gets (time is added with unshare(2) before the
/// clone: CLONE_NEWTIME does not fit in clone(2)'s flags).
pub fn namespace_flags() -> CloneFlags {
    CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)
}

/// Creates the namespaces and starts init and CMD. In the parent, with the
/// child's host PID: `after_clone` runs while the child drops the host's
/// mounts (file writes only: records that need only its PID; no netlink,
/// see tell_parent); `before_go` once they are gone, before the child's
/// network: it creates the host end of the veth; `after_go` while the child
/// sets up its network inside: the workload's nf_tables rules. CMD starts
/// only once all have returned; an error of any kills the child.
/// Returns the host PID of init once CMD has been exec'd.
pub fn start(
    spec: &Spec,
    after_clone: &mut dyn FnMut(i32) -> crate::error::Result<()>,
    before_go: &mut dyn FnMut(i32) -> crate::error::Result<()>,
    after_go: &mut dyn FnMut(i32) -> crate::error::Result<()>,
) -> Result<i32, SpawnError> {
    // A socket, not a pipe: the child may fail and go before it reads, and
    // the parent's send must then fail (MSG_NOSIGNAL), not raise SIGPIPE.
    let (go_r, go_w) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SpawnError::Pipe)?;
    let (rep_r, rep_w) = pipe()?;
    nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)).map_err(SpawnError::TimeNs)?;
    let mut cpus = CpuSplit::pin_parent();
    let forked = crate::process::clone::fork_into(namespace_flags());
    match forked.map_err(SpawnError::Clone)? {
        ForkResult::Child => {
            drop(go_w);
            drop(rep_r);
            cpus.move_off_parent();
            child_main(spec, go_r, rep_w, cpus)
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(rep_w);
            let pid = child.as_raw();
            // A step of the parent's failed: the child goes.
            let abort = |e: crate::error::Error| -> Result<i32, SpawnError> {
                kill_and_reap(child);
                Err(SpawnError::Parent(e))
            };
            if let Err(e) = after_clone(pid) {
                return abort(e);
            }
            // The child's unmounts come first (see tell_parent); a child
            // that failed before them has its report on the way.
            if !child_unmounted(&go_w) {
                let report = Report::receive(rep_r);
                kill_and_reap(child);
                return Err(child_failed(report));
            }
            if let Err(e) = before_go(pid) {
                return abort(e);
            }
            let _ = nix::sys::socket::send(go_w.as_raw_fd(), b"g", nix::sys::socket::MsgFlags::MSG_NOSIGNAL);
            if let Err(e) = after_go(pid) {
                return abort(e);
            }
            // CMD may start: everything it could depend on is in place.
            let _ = nix::sys::socket::send(go_w.as_raw_fd(), b"c", nix::sys::socket::MsgFlags::MSG_NOSIGNAL);
            drop(go_w);
            cpus.give_back();
            // Nothing comes back when CMD was exec'd (the pipe is close-on-exec).
            let Some(report) = Report::receive(rep_r) else { return Ok(pid) };
            kill_and_reap(child);
            match report {
                Report::Started { .. } => Ok(pid),
                failed => Err(child_failed(Some(failed))),
            }
        }
    }
}

/// The child's set-up and the parent's share of it run side by side, on
/// two CPUs. Left to itself, the kernel started the cloned child on its
/// parent's CPU and woke each of the two on the CPU of the other, so on a
/// small machine they took turns on one CPU while the other idled (ftrace:
/// the parent's records and veth, the child's unmounts and mounts, one
/// after the other). For the few milliseconds of the start, the parent
/// keeps to its CPU and the child to the others; both take their masks
/// back before anything of the workload runs (init and CMD inherit the
/// original). Only a hint: a failure of any of these calls changes nothing
/// else.
struct CpuSplit {
    /// The mask the parent had, and the CPU it was on.
    original: Option<(nix::sched::CpuSet, usize)>,
}

impl CpuSplit {
    /// Pins the calling parent to its CPU (where there is another to use).
    fn pin_parent() -> CpuSplit {
        let me = nix::unistd::Pid::from_raw(0);
        let original = nix::sched::sched_getaffinity(me).ok().and_then(|set| {
            let cpu = nix::sched::sched_getcpu().ok()?;
            let others = (0..nix::sched::CpuSet::count()).any(|c| c != cpu && set.is_set(c).unwrap_or(false));
            let mut only = nix::sched::CpuSet::new();
            only.set(cpu).ok()?;
            (others && nix::sched::sched_setaffinity(me, &only).is_ok()).then_some((set, cpu))
        });
        CpuSplit { original }
    }

    /// In the child: every CPU of the original mask but the parent's.
    fn move_off_parent(&self) {
        if let Some((set, cpu)) = &self.original {
            let mut others = *set;
            if others.unset(*cpu).is_ok() {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &others);
            }
        }
    }

    /// Back to the original mask (parent and child each).
    fn give_back(&mut self) {
        if let Some((set, _)) = self.original.take() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
}

impl Drop for CpuSplit {
    fn drop(&mut self) {
        self.give_back();
    }
}

fn kill_and_reap(child: nix::unistd::Pid) {
    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
}

/// Waits for the child's byte saying the host's mounts are gone.
fn child_unmounted(go: &OwnedFd) -> bool {
    read_byte(go) == Some(b'u')
}

/// The child's failure, from its report (none: it went without one).
fn child_failed(report: Option<Report>) -> SpawnError {
    match report {
        Some(Report::Failed { message, hint, status }) => SpawnError::Child(StepError { step: String::new(), message, errno: None, hint, status }),
        _ => SpawnError::Child(StepError::new("setting up the namespaces", "the child exited without a report", None, "run with -v")),
    }
}

fn report_and_exit(rep: RawFd, err: StepError) -> ! {
    let status = err.status;
    // SAFETY: rep is the report pipe's write end, still open here and owned
    // by nothing else in this child.
    let fd = unsafe { OwnedFd::from_raw_fd(rep) };
    Report::Failed { message: err.to_string(), hint: err.hint.clone(), status }.send(fd);
    // SAFETY: _exit never returns and runs no destructors of the parent's state.
    unsafe { libc::_exit(status) }
}

fn errno_of(e: &nix::Error) -> Option<i32> {
    Some(*e as i32)
}

/// Waits for the parent's next go-ahead byte on `go`.
fn wait_parent(go: &OwnedFd) -> Result<(), StepError> {
    match read_byte(go) {
        Some(_) => Ok(()),
        None => Err(StepError::new("waiting for the parent", "the parent went away", None, "run with -v")),
    }
}

/// The next byte from the other side of the start-up socket, or None once
/// it is gone. (Polling instead of sleeping was tried: a spinning side kept
/// its CPU out of the RCU grace periods the other side's veth creation
/// waits for, and the launch got slower.)
fn read_byte(go: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(go, &mut b) {
            Ok(1) => return Some(b[0]),
            Err(nix::errno::Errno::EINTR) => {}
            _ => return None,
        }
    }
}

/// Tells the parent that the host's mounts are gone from this namespace.
fn tell_parent(go: &OwnedFd) -> Result<(), StepError> {
    match nix::sys::socket::send(go.as_raw_fd(), b"u", nix::sys::socket::MsgFlags::MSG_NOSIGNAL) {
        Ok(1) => Ok(()),
        _ => Err(StepError::new("telling the parent", "the parent went away", None, "run with -v")),
    }
}

/// The whole setup of the workload, in order, inside the new namespaces.
fn setup_namespace(spec: &Spec, go: &OwnedFd) -> Result<(), StepError> {
    // 1. A session of its own: CRIU needs the session leader inside the tree.
    nix::unistd::setsid().map_err(|e| StepError::new("setsid", e, errno_of(&e), "should not happen in a fresh pid ns"))?;
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    // 2. Mounts: private propagation, host-only mounts gone, the root of
    //    its own (or the host's), fresh /proc, private /dev/shm, binds,
    //    tmpfs, read-only.
    let mount_err = |step: &str, e: cns_mounts::MountError| {
        let errno = e.errno().map(|x| x as i32);
        let hint = e.hint();
        StepError::new(step, e, errno, hint)
    };
    cns_mounts::drop_host_mounts(spec.own_root).map_err(|e| mount_err("mount namespace setup", e))?;
    // The parent creates the veth only after this byte: the unmounts above
    // each wait for an RCU grace period, which a CPU busy creating a veth
    // stretched past a millisecond (cns_mounts::drop_host_mounts).
    tell_parent(go)?;
    let prepared = cns_mounts::confine::prepare(&spec.layout).map_err(|e| mount_err("mount namespace setup", e))?;
    let root = prepared.root.clone();
    // 3. Hostname.
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| StepError::new("sethostname", e, errno_of(&e), "hostnames are at most 64 bytes"))?;
    // 4. stdio, opened inside the new mount namespace: stdin /dev/null,
    //    stdout/stderr the log. Nothing may point into the host's mount ns.
    //    The log is reached through a bind mount of its own, which the dump
    //    records as external and a restore maps to each copy's log.
    let stdio = cns_mounts::confine::under(&root, &spec.stdio_mount);
    if spec.own_root {
        create_file(&stdio)?;
    }
    cns_mounts::bind_file(&spec.log, &stdio).map_err(|e| mount_err("bind-mount the log", e))?;
    if spec.own_root {
        // 4a. A root of its own: cns's static init is bind-mounted in, and
        //     the host's tree is detached with pivot_root.
        let target = cns_mounts::confine::under(&root, std::path::Path::new(crate::confine::INIT_IN_ROOTFS));
        create_file(&target)?;
        cns_mounts::bind_file(&spec.init_binary, &target).map_err(|e| mount_err("bind-mount cns's init", e))?;
        prepared.seal().map_err(|e| mount_err("making the root read-only", e))?;
        cns_mounts::confine::pivot(&root).map_err(|e| mount_err("pivot_root", e))?;
        open_stdio(&spec.stdio_mount)?;
        return network_inside(spec, go);
    }
    open_stdio(&spec.stdio_mount)?;
    // 5. cns's own state, images and logs are not the workload's to see or
    //    plant files in; init's binary and the config only to read. (After
    //    stdio: the log is reached through its own bind mount.)
    cns_mounts::mask_dirs(&spec.mask, &spec.masked).map_err(|e| StepError::new("hiding cns's state", &e, e.errno().map(|x| x as i32), e.hint()))?;
    for p in &spec.read_only {
        cns_mounts::bind_readonly(p).map_err(|e| StepError::new("protecting cns's binaries", &e, e.errno().map(|x| x as i32), e.hint()))?;
    }
    // 6. A read-only root, last of the mounts: binds made after it would be
    //    read-only too.
    prepared.seal().map_err(|e| mount_err("making the root read-only", e))?;
    network_inside(spec, go)
}

/// 7. Once the parent has put the veth in place (every step above ran
///    meanwhile, mounts included), the network: lo up (CRIU needs it),
///    eth0 address and default route. Netlink only: the mount namespace,
///    sealed or pivoted by now, plays no part.
fn network_inside(spec: &Spec, go: &OwnedFd) -> Result<(), StepError> {
    wait_parent(go)?;
    let nl = cns_netns::Netlink::new().map_err(|e| StepError::new("netlink", e, None, "is the kernel built with CONFIG_NET?"))?;
    cns_netns::configure_inside(&nl, spec.net.as_ref())
        .map_err(|e| StepError::new("network setup", &e, e.raw_os_error(), "check that the veth reached the namespace"))
}

/// An empty file to mount onto (in the workload's own /dev tmpfs).
fn create_file(p: &std::path::Path) -> Result<(), StepError> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(p).map(drop).map_err(|e| {
        let errno = e.raw_os_error();
        StepError::new(&format!("create {}", p.display()), e, errno, "")
    })
}

fn open_stdio(log: &std::path::Path) -> Result<(), StepError> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let null = open("/dev/null", OFlag::O_RDWR, Mode::empty())
        .map_err(|e| StepError::new("open /dev/null", e, errno_of(&e), "the namespace needs /dev/null"))?;
    // O_WRONLY|O_APPEND: CRIU then skips its size check on restore, so a log
    // that grew after a --leave-running dump restores fine.
    let out = open(log, OFlag::O_WRONLY | OFlag::O_APPEND, Mode::empty())
        .map_err(|e| StepError::new(&format!("open log {}", log.display()), e, errno_of(&e), "check the log directory"))?;
    for (src, dst) in [(null.as_raw_fd(), 0), (out.as_raw_fd(), 1), (out.as_raw_fd(), 2)] {
        // SAFETY: dup2 on fds we own onto the standard fd numbers.
        if unsafe { libc::dup2(src, dst) } < 0 {
            let e = nix::Error::last();
            return Err(StepError::new("dup2 stdio", e, errno_of(&e), ""));
        }
    }
    Ok(())
}

/// Marks (or closes) every fd >= `from`.
pub fn close_fds_from(from: u32, cloexec_only: bool) {
    let flags = if cloexec_only { libc::CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range only affects this process's fd table.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, flags) };
    if r != 0 {
        // Pre-5.9 kernels: close one by one.
        for fd in from..4096 {
            // SAFETY: closing or flagging an fd number; EBADF is harmless.
            unsafe {
                if cloexec_only {
                    libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC);
                } else {
                    libc::close(fd as i32);
                }
            }
        }
    }
}

fn child_main(spec: &Spec, go: OwnedFd, rep: OwnedFd, mut cpus: CpuSplit) -> ! {
    let rep_raw = rep.as_raw_fd();
    std::mem::forget(rep);
    if let Err(e) = setup_namespace(spec, &go) {
        report_and_exit(rep_raw, e);
    }
    // 7b. The parent's records and the workload's nf_tables rules (made
    //     while this process set itself up) come before CMD.
    if let Err(e) = wait_parent(&go) {
        report_and_exit(rep_raw, e);
    }
    drop(go);
    cpus.give_back();
    // 8. Every inherited fd: close-on-exec now (the report pipe must live
    //    until CMD's exec), closed for good in init right after the fork.
    close_fds_from(3, true);
    // 9. Signals are blocked before the fork so none is lost; CMD unblocks.
    let sigs = forwarded_signals();
    let _ = sigs.thread_block();
    match spawn_command(spec, rep_raw) {
        Err(e) => report_and_exit(rep_raw, StepError::new("fork of the command", e, errno_of(&e), "")),
        Ok(child) => {
            // 10. init execs cns's static init from inside the new mount
            //    namespace: a forked image would keep mappings of the host's
            //    mounts, which CRIU cannot dump ("Can't lookup mount"). With
            //    no environment: it needs none, and CMD's (set in our shared
            //    memory by the vfork child) is not init's to carry.
            close_fds_from(3, false);
            let pid = CString::new(child.as_raw().to_string()).unwrap_or_default();
            let init = if spec.own_root { std::path::Path::new(crate::confine::INIT_IN_ROOTFS) } else { spec.init_binary.as_path() };
            let prog = CString::new(init.as_os_str().as_encoded_bytes()).unwrap_or_default();
            let _ = nix::unistd::execve(&prog, &[c"cns-init".to_owned(), pid], &[] as &[&std::ffi::CStr]);
            // exec failed: still be a correct init.
            let code = init_loop(child);
            // SAFETY: the init ends here; _exit skips the copied parent state.
            unsafe { libc::_exit(code) }
        }
    }
}

/// CMD's process, as posix_spawn(3) makes one: clone(2) with CLONE_VM |
/// CLONE_VFORK on a stack of its own, so nothing of this process is copied
/// and this process waits until CMD has exec'd (or failed and exited). A
/// fork copied init's page tables for nothing; launch measured faster
/// without. The child shares this process's memory until then: it only
/// runs `exec_command`, which ends in exec or `_exit` and never returns.
fn spawn_command(spec: &Spec, rep: RawFd) -> nix::Result<nix::unistd::Pid> {
    struct Arg<'a> {
        spec: &'a Spec,
        rep: RawFd,
    }
    extern "C" fn trampoline(p: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `p` is the `Arg` on the parent's stack below; CLONE_VFORK
        // keeps the parent (and that frame) suspended until this child has
        // exec'd or exited.
        let a = unsafe { &*(p as *const Arg<'_>) };
        exec_command(a.spec, a.rep)
    }
    let mut stack = vec![0u8; 256 << 10];
    // The stack grows down from its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let arg = Arg { spec, rep };
    // SAFETY: a fresh stack of our own for the child; the child shares our
    // memory but we are suspended until it execs or exits (CLONE_VFORK), we
    // are single-threaded, and it never returns into our frames. It gets
    // its own fd table, fs and signal handlers (no CLONE_FILES, CLONE_FS,
    // CLONE_SIGHAND).
    let pid = unsafe {
        libc::clone(trampoline, top as *mut libc::c_void, libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, &arg as *const Arg<'_> as *mut libc::c_void)
    };
    drop(stack);
    if pid < 0 { Err(nix::Error::last()) } else { Ok(nix::unistd::Pid::from_raw(pid)) }
}

fn exec_command(spec: &Spec, rep: RawFd) -> ! {
    let _ = SigSet::all().thread_unblock();
    // cns's own umask (077) is for its state; the command gets the usual one.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    for sig in nix::sys::signal::Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: restoring default dispositions before exec.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
        }
    }
    if let Some(cwd) = &spec.cwd {
        if let Err(e) = nix::unistd::chdir(cwd) {
            report_and_exit(rep, StepError::new(&format!("chdir {}", cwd.display()), e, errno_of(&e), "--cwd must exist inside the workload"));
        }
    }
    if let Err(e) = spec.cap_drop.apply() {
        report_and_exit(rep, StepError::new("dropping capabilities", e, None, ""));
    }
    if let Err(e) = spec.user.as_ref().map_or(Ok(()), |u| u.apply()) {
        report_and_exit(rep, StepError::new("becoming the user", e, None, "check --user and --group"));
    }
    for (k, v) in &spec.env {
        // SAFETY: single-threaded child just before exec.
        unsafe { std::env::set_var(k, v) };
    }
    let args: Vec<CString> = match spec.command.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(a) => a,
        Err(_) => report_and_exit(rep, StepError::new("exec", "argument contains a NUL byte", None, "")),
    };
    // Seccomp last, as close to exec as possible.
    if let Some(prog) = &spec.seccomp {
        if let Err(e) = seccompiler::apply_filter(prog) {
            report_and_exit(rep, StepError::new("installing the seccomp filter", e, None, "check the filter allows execve"));
        }
    }
    let err = match args.first() {
        Some(prog) => nix::unistd::execvp(prog, &args).err(),
        None => None,
    };
    let e = err.unwrap_or(nix::Error::EINVAL);
    let mut se = StepError::new(
        &format!("exec {}", spec.command.first().map(String::as_str).unwrap_or("")),
        e,
        errno_of(&e),
        match e {
            nix::Error::ENOENT => "the command was not found in PATH inside the workload",
            nix::Error::EACCES => "the command is not executable",
            _ => "",
        },
    );
    se.status = if e == nix::Error::ENOENT { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXEC };
    report_and_exit(rep, se)
}

