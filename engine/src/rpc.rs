//! `criu swrk` over CRIU's protobuf RPC.
//!
//! One swrk process per operation (CRIU refuses `keep_open` for
//! CHECK/DUMP/RESTORE). Directories travel as fds open in this process: CRIU
//! reads them through `/proc/<peer>/fd/<n>` (the `images_dir` string form fails
//! under swrk). fds named in `inherit_fd` must be in CRIU's own fd table, so
//! they are inherited across the exec at the same number.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use prost::Message;

use crate::options::{CriuOptions, Operation};
use crate::proto::{CriuOpts, CriuReq, CriuReqType, CriuResp, CriuVersion};

/// CRIU log verbosity cns asks for (CRIU's -v4): the log is what explains a failure.
pub const LOG_LEVEL: i32 = 4;

/// Failures talking to CRIU.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot create the CRIU socketpair: {0}")]
    Socket(#[source] nix::Error),
    #[error("cannot start {path} swrk: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("cannot send the {op} request to CRIU: {source}")]
    Send { op: &'static str, source: nix::Error },
    #[error("cannot read CRIU's answer to {op}: {source}")]
    Recv { op: &'static str, source: nix::Error },
    #[error("CRIU closed the connection during {op} (it exited{status})")]
    Closed { op: &'static str, status: String },
    #[error("cannot decode CRIU's answer to {op}: {source}")]
    Decode { op: &'static str, source: prost::DecodeError },
    #[error("CRIU {op} failed{}{}", errno_text(*.errno), errmsg_text(.errmsg))]
    Failed { op: &'static str, errno: Option<i32>, errmsg: Option<String> },
    #[error("{hook} step failed: {message}")]
    Hook { hook: String, message: String },
    #[error("unexpected answer from CRIU to {op}: {what}")]
    Protocol { op: &'static str, what: String },
}

fn errno_text(errno: Option<i32>) -> String {
    match errno {
        Some(e) if e != 0 => format!(" ({})", nix::errno::Errno::from_raw(e).desc()),
        _ => String::new(),
    }
}

fn errmsg_text(msg: &Option<String>) -> String {
    match msg {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// One notify callback from CRIU (`notify_scripts`).
#[derive(Debug, Clone)]
pub struct Notify {
    /// CRIU's name of the step: `pre-dump`, `post-dump`, `network-lock`,
    /// `network-unlock`, `setup-namespaces`, `post-setup-namespaces`,
    /// `pre-restore`, `post-restore`, `pre-resume`, `post-resume`, ...
    pub script: String,
    /// The pid CRIU reports with it (the restored root for restore steps).
    pub pid: Option<i32>,
}

/// What the notify handler wants CRIU to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAction {
    Continue,
    /// Abort the operation: CRIU rolls back (a dump leaves the tree running).
    Abort(String),
    /// Go on, and count the operation as done without waiting for CRIU's
    /// answer: for a restore at `post-resume`, after which CRIU only tears
    /// down its own state (its cgroup yard, its plugins) and cannot fail
    /// what it restored. The restored root is the pid of `setup-namespaces`
    /// and `post-restore`.
    Finish,
}

/// The image and work directories of one operation, as fds open in the
/// caller (CRIU reads them through `/proc/<caller>/fd/<n>`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dirs<'a> {
    pub images: Option<BorrowedFd<'a>>,
    pub work: Option<BorrowedFd<'a>>,
}

/// A mount made in a private mount namespace of CRIU's own before it
/// starts: a restore's root that must not appear in the host's mount table
/// (it lives on in the restored tree's namespace only).
#[derive(Debug, Clone)]
pub struct PrivateMount {
    pub source: String,
    pub target: std::path::PathBuf,
    pub fstype: String,
    pub data: String,
}

/// Makes `cmd` keep `fds` open across its exec, at their own numbers (they
/// must stay open in the caller until the child has exec'd).
pub fn keep_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe,
    // on fds the caller keeps open until the child has exec'd.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// PrivateMounts as C strings, made before the fork (pre_exec may not allocate).
struct CMount {
    source: std::ffi::CString,
    target: std::ffi::CString,
    fstype: std::ffi::CString,
    data: std::ffi::CString,
}

fn c_mounts(mounts: &[PrivateMount]) -> Result<Vec<CMount>, RpcError> {
    let c = |s: &[u8]| std::ffi::CString::new(s).map_err(|_| RpcError::Protocol { op: "START", what: "a mount path holds a NUL byte".into() });
    mounts
        .iter()
        .map(|m| Ok(CMount { source: c(m.source.as_bytes())?, target: c(m.target.as_os_str().as_encoded_bytes())?, fstype: c(m.fstype.as_bytes())?, data: c(m.data.as_bytes())? }))
        .collect()
}

/// A `criu swrk` connection for one operation.
#[derive(Debug)]
pub struct Swrk {
    child: CriuProcess,
    sock: OwnedFd,
}

/// The swrk process: spawned like posix_spawn(3) (the common case), or
/// forked when it needs steps of its own before the exec.
#[derive(Debug)]
enum CriuProcess {
    Spawned(nix::unistd::Pid),
    Forked(Child),
}

impl CriuProcess {
    fn id(&self) -> u32 {
        match self {
            CriuProcess::Spawned(p) => p.as_raw() as u32,
            CriuProcess::Forked(c) => c.id(),
        }
    }

    /// Reaps it; its exit status, as text, for an error message.
    fn wait(&mut self) -> Option<String> {
        match self {
            CriuProcess::Forked(c) => c.wait().ok().map(|s| s.to_string()),
            CriuProcess::Spawned(p) => loop {
                let mut raw = 0;
                // SAFETY: waitpid(2) on our own child, into a local.
                match unsafe { libc::waitpid(p.as_raw(), &mut raw, 0) } {
                    -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                    -1 => break None,
                    // Worded as std::process::Child::wait's status is.
                    _ => {
                        let status: std::process::ExitStatus = std::os::unix::process::ExitStatusExt::from_raw(raw);
                        break Some(status.to_string());
                    }
                }
            },
        }
    }
}

/// A CRIU that has given its final answer and is exiting. Dropped, it is
/// reaped (waiting for it); [`Exiting::reap_in_background`] reaps it from a
/// thread instead, so the caller goes on at once: CRIU's exit (its address
/// space torn down) takes about a millisecond after its last answer here,
/// and nothing the caller does next depends on it.
#[derive(Debug)]
pub struct Exiting(Option<CriuProcess>, Option<OwnedFd>);

impl Exiting {
    /// Reaps CRIU in a thread of its own (if this process exits first, CRIU
    /// goes to init, which reaps it).
    pub fn reap_in_background(mut self) {
        if let Some(mut c) = self.0.take() {
            let sock = self.1.take();
            // A thread that cannot be made leaves CRIU to be reaped when
            // this process exits.
            let _ = std::thread::Builder::new().name("criu-reaper".into()).spawn(move || {
                let _ = c.wait();
                drop(sock);
            });
        }
    }
}

impl Drop for Exiting {
    fn drop(&mut self) {
        // The socket stays open while CRIU exits: a CRIU not waited for
        // (NotifyAction::Finish) still sends its answer, into the buffer.
        if let Some(mut c) = self.0.take() {
            let _ = c.wait();
        }
    }
}

/// Starts `criu swrk FD` with posix_spawn(3): glibc's vfork-style clone, so
/// nothing of this process is copied (a fork copied its page tables, and
/// each of its pages written afterwards faulted). Stdin and stdout are
/// /dev/null, stderr is `stderr` (or /dev/null), each of `keep` stays open at
/// its own number (a dup2 onto itself clears close-on-exec), the signal mask
/// is empty and SIGPIPE default, as std::process::Command would leave them.
fn posix_spawn_criu(criu: &Path, sock: RawFd, keep: &[RawFd], stderr: Option<&std::fs::File>) -> io::Result<nix::unistd::Pid> {
    use std::ffi::CString;
    let nul = |s: &[u8]| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"));
    let prog = nul(criu.as_os_str().as_encoded_bytes())?;
    let args = [nul(criu.as_os_str().as_encoded_bytes())?, nul(b"swrk")?, nul(sock.to_string().as_bytes())?];
    let mut argv: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    argv.push(std::ptr::null_mut());
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr() as *mut libc::c_char).collect();
    envp.push(std::ptr::null_mut());
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(r)) };
    // SAFETY: the file actions and attributes are initialised before use and
    // destroyed on every path below; every pointer handed to posix_spawn
    // (program, argv, envp, the /dev/null path) outlives the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let res = (|| {
            let null = c"/dev/null".as_ptr();
            check(libc::posix_spawn_file_actions_addopen(&mut fa, 0, null, libc::O_RDONLY, 0))?;
            check(libc::posix_spawn_file_actions_addopen(&mut fa, 1, null, libc::O_WRONLY, 0))?;
            match stderr {
                Some(f) => check(libc::posix_spawn_file_actions_adddup2(&mut fa, f.as_raw_fd(), 2))?,
                None => check(libc::posix_spawn_file_actions_addopen(&mut fa, 2, null, libc::O_WRONLY, 0))?,
            }
            for &fd in keep {
                check(libc::posix_spawn_file_actions_adddup2(&mut fa, fd, fd))?;
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut dfl: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut dfl);
            libc::sigaddset(&mut dfl, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &dfl))?;
            check(libc::posix_spawnattr_setflags(&mut attr, (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(&mut pid, prog.as_ptr(), &fa, &attr, argv.as_ptr(), envp.as_ptr()))?;
            Ok(nix::unistd::Pid::from_raw(pid))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut fa);
        res
    }
}

impl Swrk {
    /// Starts `criu swrk`, handing it `inherit` at their own fd numbers.
    /// CRIU's stderr goes to `stderr` (a file in the work dir) when given.
    pub fn start(criu: &Path, inherit: &[RawFd], stderr: Option<std::fs::File>) -> Result<Swrk, RpcError> {
        Swrk::start_with_mounts(criu, inherit, stderr, &[])
    }

    /// [`Swrk::start`], with CRIU in a private mount namespace holding
    /// `mounts` (none: CRIU stays in the caller's).
    pub fn start_with_mounts(criu: &Path, inherit: &[RawFd], stderr: Option<std::fs::File>, mounts: &[PrivateMount]) -> Result<Swrk, RpcError> {
        let cmounts = c_mounts(mounts)?;
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(RpcError::Socket)?;
        let theirs_raw = theirs.as_raw_fd();
        let mut keep: Vec<RawFd> = inherit.to_vec();
        keep.push(theirs_raw);
        // CRIU outlives a caller that dies (it is not killed with it): a CRIU
        // killed while its parasite code runs inside the tree can leave the
        // tree wedged. With notifications on, a CRIU whose caller is gone
        // fails its next notification (EPIPE; CRIU ignores SIGPIPE) and
        // rolls back cleanly: a dump resumes the tree instead of killing it
        // (post-dump always comes before the kill), a restore kills what it
        // made. launcher/src/recovery.rs waits for it before cleaning up.
        if cmounts.is_empty() {
            let pid = posix_spawn_criu(criu, theirs_raw, &keep, stderr.as_ref()).map_err(|source| RpcError::Spawn { path: criu.to_path_buf(), source })?;
            drop(theirs);
            return Ok(Swrk { child: CriuProcess::Spawned(pid), sock: ours });
        }
        let mut cmd = Command::new(criu);
        cmd.arg("swrk").arg(theirs_raw.to_string()).stdin(Stdio::null()).stdout(Stdio::null());
        match stderr {
            Some(f) => cmd.stderr(f),
            None => cmd.stderr(Stdio::null()),
        };
        keep_fds(&mut cmd, keep);
        // SAFETY: the closure only calls unshare(2) and mount(2), which are
        // async-signal-safe, on C strings allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // unshare(2) and mount(2) are plain system calls on strings
                // made before the fork.
                if libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) < 0 {
                    return Err(io::Error::last_os_error());
                }
                for m in &cmounts {
                    if libc::mount(m.source.as_ptr(), m.target.as_ptr(), m.fstype.as_ptr(), 0, m.data.as_ptr().cast()) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| RpcError::Spawn { path: criu.to_path_buf(), source })?;
        drop(theirs);
        let child = CriuProcess::Forked(child);
        Ok(Swrk { child, sock: ours })
    }

    /// PID of the swrk process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends a swrk that was never asked anything (the caller started it
    /// early, to overlap CRIU's start-up with its own checks, and the checks
    /// refused): closing the socket makes CRIU exit, and it is reaped here.
    pub fn cancel(self) {
        let Swrk { mut child, sock } = self;
        drop(sock);
        let _ = child.wait();
    }

    fn send(&self, op: &'static str, req: &CriuReq) -> Result<(), RpcError> {
        let buf = req.encode_to_vec();
        socket::send(self.sock.as_raw_fd(), &buf, MsgFlags::MSG_NOSIGNAL)
            .map_err(|source| RpcError::Send { op, source })?;
        Ok(())
    }

    fn recv(&mut self, op: &'static str) -> Result<CriuResp, RpcError> {
        let mut buf = vec![0u8; 1 << 16];
        let n = loop {
            match socket::recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => return Err(RpcError::Recv { op, source }),
                Ok(n) => break n,
            }
        };
        if n == 0 {
            let status = match self.child.wait() {
                Some(s) => format!(" with {s}"),
                None => String::new(),
            };
            return Err(RpcError::Closed { op, status });
        }
        CriuResp::decode(&buf[..n]).map_err(|source| RpcError::Decode { op, source })
    }

    /// Sends `req` and serves notify callbacks until the final answer;
    /// CRIU is reaped before this returns.
    fn call(self, op: &'static str, req: CriuReq, on_notify: &mut dyn FnMut(&Notify) -> NotifyAction) -> Result<CriuResp, RpcError> {
        self.call_exiting(op, req, on_notify)?.0.ok_or(RpcError::Protocol { op, what: "finished before CRIU answered".into() })
    }

    /// [`Swrk::call`], with a successful CRIU left exiting for the caller
    /// to reap (a failed one is reaped here). No answer when the handler
    /// finished the operation ([`NotifyAction::Finish`]).
    fn call_exiting(
        mut self,
        op: &'static str,
        req: CriuReq,
        on_notify: &mut dyn FnMut(&Notify) -> NotifyAction,
    ) -> Result<(Option<CriuResp>, Exiting), RpcError> {
        self.send(op, &req)?;
        let mut hook_error: Option<RpcError> = None;
        let resp = loop {
            let resp = self.recv(op)?;
            if resp.r#type() == CriuReqType::Notify {
                let n = resp.notify.clone().unwrap_or_default();
                let notify = Notify { script: n.script.unwrap_or_default(), pid: n.pid };
                tracing::debug!(step = %notify.script, pid = ?notify.pid, "criu notify");
                let action = on_notify(&notify);
                let (ok, finish) = match action {
                    NotifyAction::Continue => (true, false),
                    NotifyAction::Finish => (true, true),
                    NotifyAction::Abort(message) => {
                        hook_error = Some(RpcError::Hook { hook: notify.script.clone(), message });
                        (false, false)
                    }
                };
                let reply = CriuReq {
                    r#type: CriuReqType::Notify as i32,
                    notify_success: Some(ok),
                    ..Default::default()
                };
                self.send(op, &reply)?;
                if finish {
                    break None;
                }
                continue;
            }
            break Some(resp);
        };
        let Swrk { child, sock } = self;
        let Some(resp) = resp else {
            return Ok((None, Exiting(Some(child), Some(sock))));
        };
        drop(sock);
        let exiting = Exiting(Some(child), None);
        if let Some(e) = hook_error {
            return Err(e);
        }
        if !resp.success {
            return Err(RpcError::Failed { op, errno: resp.cr_errno, errmsg: resp.cr_errmsg.clone() });
        }
        Ok((Some(resp), exiting))
    }

    /// Asks CRIU for its version.
    pub fn version(self) -> Result<CriuVersion, RpcError> {
        let req = CriuReq { r#type: CriuReqType::Version as i32, ..Default::default() };
        let resp = self.call("VERSION", req, &mut |_| NotifyAction::Continue)?;
        resp.version.ok_or(RpcError::Protocol { op: "VERSION", what: "no version in the answer".into() })
    }

    /// CRIU's own kernel check (`criu check`).
    pub fn check(self, work_dir: Option<BorrowedFd<'_>>, log_file: &str) -> Result<(), RpcError> {
        let opts = CriuOpts {
            images_dir_fd: -1,
            work_dir_fd: work_dir.map(|f| f.as_raw_fd()),
            log_file: Some(log_file.to_string()),
            log_level: Some(LOG_LEVEL),
            ..Default::default()
        };
        let req = CriuReq { r#type: CriuReqType::Check as i32, opts: Some(opts), ..Default::default() };
        self.call("CHECK", req, &mut |_| NotifyAction::Continue).map(|_| ())
    }

    /// Dumps a tree described by `opts` (an [`Operation::Dump`]).
    /// Returns the exiting CRIU for the caller to reap.
    pub fn dump(self, opts: &CriuOptions, dirs: Dirs<'_>, on_notify: &mut dyn FnMut(&Notify) -> NotifyAction) -> Result<Exiting, RpcError> {
        if opts.op != Operation::Dump {
            return Err(RpcError::Protocol { op: "DUMP", what: "restore options given to a dump".into() });
        }
        let req = CriuReq { r#type: CriuReqType::Dump as i32, opts: Some(opts.to_rpc(dirs.images, dirs.work, &[])), ..Default::default() };
        self.call_exiting("DUMP", req, on_notify).map(|(_, exiting)| exiting)
    }

    /// One pre-copy round (an [`Operation::PreDump`]): the tree's memory,
    /// the tree left running.
    pub fn pre_dump(self, opts: &CriuOptions, dirs: Dirs<'_>) -> Result<(), RpcError> {
        if opts.op != Operation::PreDump {
            return Err(RpcError::Protocol { op: "PRE_DUMP", what: "other options given to a pre-dump".into() });
        }
        let req = CriuReq { r#type: CriuReqType::PreDump as i32, opts: Some(opts.to_rpc(dirs.images, dirs.work, &[])), ..Default::default() };
        self.call("PRE_DUMP", req, &mut |_| NotifyAction::Continue).map(|_| ())
    }

    /// Whether the kernel tracks the pages a process writes (soft-dirty),
    /// which pre-copy needs: CRIU's FEATURE_CHECK for mem_track.
    pub fn tracks_memory(self) -> Result<bool, RpcError> {
        let req = CriuReq { r#type: CriuReqType::FeatureCheck as i32, features: Some(crate::proto::CriuFeatures { mem_track: Some(true), lazy_pages: None }), ..Default::default() };
        // The answer is successful when the check ran; the verdict is in features.
        let resp = self.call("FEATURE_CHECK", req, &mut |_| NotifyAction::Continue)?;
        Ok(resp.features.and_then(|f| f.mem_track).unwrap_or(false))
    }

    /// Restores a tree described by `opts` (an [`Operation::Restore`]);
    /// returns the host pid of the restored root and the exiting CRIU for
    /// the caller to reap. `inherit` are (key, fd)
    /// pairs: CRIU gives the restored tree `fd` wherever the image had a
    /// file whose path (without the leading `/`) is `key`; the fds must
    /// have been handed to [`Swrk::start`].
    pub fn restore(
        self,
        opts: &CriuOptions,
        dirs: Dirs<'_>,
        inherit: &[(String, BorrowedFd<'_>)],
        on_notify: &mut dyn FnMut(&Notify) -> NotifyAction,
    ) -> Result<(i32, Exiting), RpcError> {
        if opts.op != Operation::Restore {
            return Err(RpcError::Protocol { op: "RESTORE", what: "dump options given to a restore".into() });
        }
        let req = CriuReq { r#type: CriuReqType::Restore as i32, opts: Some(opts.to_rpc(dirs.images, dirs.work, inherit)), ..Default::default() };
        let mut root = None;
        let (resp, exiting) = self.call_exiting("RESTORE", req, &mut |n: &Notify| {
            if n.pid.is_some() {
                root = n.pid;
            }
            on_notify(n)
        })?;
        let pid = match resp {
            Some(r) => r.restore.map(|r| r.pid),
            None => root,
        };
        let pid = pid.ok_or(RpcError::Protocol { op: "RESTORE", what: "no pid in the answer".into() })?;
        Ok((pid, exiting))
    }
}

/// Raw fds of `inherit` entries, for [`Swrk::start`].
pub fn raw_fds<'a>(fds: impl IntoIterator<Item = &'a BorrowedFd<'a>>) -> Vec<RawFd> {
    fds.into_iter().map(|f| f.as_fd().as_raw_fd()).collect()
}
