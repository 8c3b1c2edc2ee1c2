//! Running a command inside a running workload's namespaces (`cns exec`).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use crate::error::{Context, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, Error, ErrorKind, Result};
use crate::process::handle::Process;

/// What to run inside the workload, and the confinement of the workload's
/// own command that it gets too.
#[derive(Debug, Clone)]
pub struct EnterSpec<'a> {
    /// The workload's name, for messages.
    pub name: &'a str,
    pub command: &'a [String],
    pub env: &'a [(String, String)],
    /// The capabilities the workload dropped.
    pub cap_drop: &'a crate::process::security::CapDrop,
    /// The workload's seccomp filter.
    pub seccomp: Option<&'a seccompiler::BpfProgram>,
    /// The workload's user.
    pub user: Option<&'a crate::confine::user::User>,
    /// The workload's cgroup directories (its limits hold for what exec starts too).
    pub cgroups: Vec<std::path::PathBuf>,
    /// Set no_new_privs (the workload's command has it).
    pub no_new_privs: bool,
    /// The process whose working directory the command starts in (the
    /// workload's command); `None`: the root's.
    pub cwd_of: Option<i32>,
}

/// Joins the namespaces of `root` (its user, ipc, uts, net, pid, time,
/// cgroup, then mount namespace, and its root directory and cwd), forks,
/// and runs `spec` there. Returns the command's exit status. `root` is
/// held by pidfd: namespaces are opened and then the handle is checked to
/// be alive, so they belong to that very process.
pub fn run_inside(root: &Process, spec: &EnterSpec<'_>) -> Result<i32> {
    let pid = root.pid();
    let order = ["user", "ipc", "uts", "net", "pid", "time", "cgroup", "mnt"];
    let mut fds = Vec::new();
    for ns in order {
        let path = format!("/proc/{pid}/ns/{ns}");
        match std::fs::File::open(&path) {
            Ok(f) => {
                let same = std::fs::metadata(format!("/proc/self/ns/{ns}")).ok().map(|m| m.ino()) == f.metadata().ok().map(|m| m.ino());
                if !same {
                    fds.push((ns, f));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::wrap(format!("cannot open {path}"), e)),
        }
    }
    // The workload's cgroup is joined through files opened here, in the
    // host's mount namespace (a workload with a root of its own has no
    // /sys/fs/cgroup), by the forked child, before it execs.
    let cgroups = spec
        .cgroups
        .iter()
        .map(|d| std::fs::OpenOptions::new().write(true).open(d.join("cgroup.procs")).with_context(|| format!("cannot open the cgroup {} of {}", d.display(), spec.name)))
        .collect::<Result<Vec<_>>>()?;
    let rootdir = std::fs::File::open(format!("/proc/{pid}/root")).with_context(|| format!("cannot open the root of {}", spec.name))?;
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", spec.cwd_of.unwrap_or(pid))).unwrap_or_else(|_| "/".into());
    if root.exited() {
        return Err(Error::new(ErrorKind::State, format!("workload {} stopped while cns was entering it", spec.name)));
    }
    for (ns, f) in &fds {
        nix::sched::setns(f.as_fd(), CloneFlags::empty()).with_context(|| format!("cannot join the {ns} namespace of {}", spec.name))?;
    }
    nix::unistd::fchdir(&rootdir).context("cannot enter the workload's root")?;
    nix::unistd::chroot(".").context("cannot enter the workload's root")?;
    let _ = nix::unistd::chdir(&cwd);
    // Joining a pid or time namespace applies to children: fork.
    // SAFETY: single-threaded; the child only execs or _exits.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            for mut f in cgroups {
                // "0": the writing process itself.
                if let Err(e) = std::io::Write::write_all(&mut f, b"0") {
                    fail("joining the workload's cgroup", e);
                }
            }
            exec_child(spec)
        }
        ForkResult::Parent { child } => Ok(crate::process::monitor::foreground_wait(child)),
    }
}

/// Reports a setup failure of the child on stderr and ends it.
fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "cns: exec: {what}: {e}");
    // SAFETY: leaving the forked child without running destructors.
    unsafe { libc::_exit(crate::error::EXIT_CNS) }
}

fn exec_child(spec: &EnterSpec<'_>) -> ! {
    use std::io::Write;
    for (k, v) in spec.env {
        // SAFETY: single-threaded child before exec.
        unsafe { std::env::set_var(k, v) };
    }
    // Only stdio crosses into the workload.
    crate::process::spawn::close_fds_from(3, true);
    if let Err(e) = spec.cap_drop.apply() {
        fail("dropping capabilities", e);
    }
    if let Err(e) = spec.user.map_or(Ok(()), |u| u.apply()) {
        fail("becoming the workload's user", e);
    }
    if spec.no_new_privs {
        // SAFETY: prctl on ourselves with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            fail("setting no_new_privs", nix::Error::last());
        }
    }
    let args: Vec<std::ffi::CString> = spec.command.iter().filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok()).collect();
    // The workload's seccomp filter last, as close to exec as in `run`.
    if let Some(prog) = spec.seccomp {
        if let Err(e) = seccompiler::apply_filter(prog) {
            fail("installing the workload's seccomp filter", e);
        }
    }
    let e = match args.first() {
        Some(p) => nix::unistd::execvp(p, &args).err(),
        None => None,
    };
    let first = spec.command.first().map(String::as_str).unwrap_or("");
    let _ = writeln!(std::io::stderr(), "cns: exec {first}: {}", e.map_or("failed".into(), |e| e.desc().to_string()));
    let code = if e == Some(nix::Error::ENOENT) { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXEC };
    // SAFETY: leaving the forked child without running destructors.
    unsafe { libc::_exit(code) }
}
