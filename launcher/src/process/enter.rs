//! Running a command inside a running workload's namespaces (`cns exec`).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use crate::error::{Context, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, Error, ErrorKind, Result};
use crate::process::handle::Process;

/// What to run inside the workload.
#[derive(Debug, Clone)]
pub struct EnterSpec<'a> {
    /// The workload's name, for messages.
    pub name: &'a str,
    pub command: &'a [String],
    pub env: &'a [(String, String)],
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
    let rootdir = std::fs::File::open(format!("/proc/{pid}/root")).with_context(|| format!("cannot open the root of {}", spec.name))?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
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
        ForkResult::Child => exec_child(spec),
        ForkResult::Parent { child } => Ok(crate::process::monitor::foreground_wait(child)),
    }
}

fn exec_child(spec: &EnterSpec<'_>) -> ! {
    use std::io::Write;
    for (k, v) in spec.env {
        // SAFETY: single-threaded child before exec.
        unsafe { std::env::set_var(k, v) };
    }
    let args: Vec<std::ffi::CString> = spec.command.iter().filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok()).collect();
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
