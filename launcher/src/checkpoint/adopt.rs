//! Host process trees that cns did not start (criu-ns's use case): dumped
//! by host PID, restored inside a fresh pid + mount namespace whose init
//! runs CRIU, so the tree gets its original PIDs back.

use std::os::fd::AsFd;
use std::path::Path;

use cns_engine::{CriuOptions, Dirs, NotifyAction, Swrk};
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};

use crate::checkpoint::dump::{self, DumpOptions, DumpOutcome};
use crate::checkpoint::failure::{criu_failure, criu_stderr, open_dir};
use crate::error::{Error, ErrorKind, Result};
use crate::process::report::Report;
use crate::process::stat::{namespace_inodes, process_start};
use crate::runtime::{Events, Runtime};
use crate::workload::{NetConfig, NetMode, State, Workload};

/// Refuses PIDs that cannot be a tree's root.
pub fn check_pid(pid: i32) -> Result<()> {
    if pid <= 1 || pid == std::process::id() as i32 {
        return Err(Error::invalid(format!("cannot adopt pid {pid}"), "give the PID of the tree's root process"));
    }
    if process_start(pid).is_none() {
        return Err(Error::new(ErrorKind::NotFound, format!("no process with pid {pid}")).with_hint("check the PID with ps"));
    }
    Ok(())
}

/// The plan of an adoption's dump, for printing.
pub fn plan(rt: &Runtime, opts: &DumpOptions, pid: i32) -> Result<dump::DumpPlan> {
    check_pid(pid)?;
    dump::plan(rt, opts, &record(rt, &opts.name, pid), pid)
}

/// The record of an adopted tree.
fn record(rt: &Runtime, name: &str, pid: i32) -> Workload {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = cmdline.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    Workload {
        name: name.to_string(),
        command,
        env: vec![],
        cwd: None,
        hostname: String::new(),
        created: crate::files::now(),
        state: State::Running,
        pid: Some(pid),
        pid_start: process_start(pid),
        shim_pid: None,
        shim_start: None,
        exit_code: None,
        log: rt.store.paths.log_file(name),
        stdio_mount: None,
        net: NetConfig { mode: NetMode::Host, host_if: None, addrs: None, publish: vec![], outbound: false },
        cap_drop: vec![],
        seccomp: None,
        images: None,
        adopted: true,
        restored_from: None,
        namespaces: namespace_inodes(pid),
        confine: Default::default(),
    }
}

/// Dumps the host tree rooted at `pid` as a new checkpoint `opts.name`.
/// The host tree is not cns's to track: only the checkpoint is kept.
pub fn dump_host_tree(rt: &Runtime, pid: i32, opts: &DumpOptions, events: &dyn Events) -> Result<DumpOutcome> {
    rt.require_root()?;
    check_pid(pid)?;
    let l = rt.store.create(&opts.name)?;
    let w = record(rt, &opts.name, pid);
    let result = l.save(&w).and_then(|()| {
        let plan = dump::plan(rt, opts, &w, pid)?;
        dump::dump_locked(rt, &l, w.clone(), plan, opts.no_preflight, events)
    });
    match result {
        Err(e) => {
            let _ = rt.store.remove(l);
            Err(e)
        }
        Ok(out) => {
            let mut w = l.load()?;
            w.mark_checkpoint_only(out.images.clone());
            l.save(&w)?;
            Ok(out)
        }
    }
}

/// Restores an adopted tree: a fresh pid + mount namespace whose init
/// (PID 1) runs CRIU; the restored root becomes init's child. Returns the
/// host PID of that init (what the monitor waits for; its exit is the tree's).
pub fn restore_host_tree(criu: &Path, images: &Path, flags: cns_engine::CriuFlags) -> Result<i32> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let child = match crate::process::clone::fork_into(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS) {
        Err(e) => return Err(Error::wrap("cannot create a pid namespace", e)),
        Ok(ForkResult::Child) => {
            drop(r);
            namespace_init(criu, images, flags, w)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(w);
    match Report::receive(r) {
        Some(Report::Started { .. }) => Ok(child.as_raw()),
        Some(failed) => {
            let _ = nix::sys::wait::waitpid(child, None);
            failed.into_result(ErrorKind::Criu)
        }
        None => {
            let _ = nix::sys::wait::waitpid(child, None);
            Err(Error::new(ErrorKind::Criu, "the restore's namespace init died"))
        }
    }
}

/// PID 1 of the adopted tree's new pid namespace: restores the tree under
/// itself, reports, then serves as its init.
fn namespace_init(criu: &Path, images: &Path, flags: cns_engine::CriuFlags, report: std::os::fd::OwnedFd) -> ! {
    // Dies with cns until the restore is reported (recovery.rs).
    // SAFETY: prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let result = (|| -> Result<i32> {
        nix::unistd::setsid()?;
        cns_mounts::make_rprivate()?;
        cns_mounts::mount_proc()?;
        let dir = open_dir(images)?;
        let mut o = CriuOptions::restore(images, "restore.log");
        o.flags = flags;
        o.notify = false;
        let swrk = Swrk::start(criu, &[], criu_stderr(images, "criu-stderr-restore.log"))?;
        let dirs = Dirs { images: Some(dir.as_fd()), work: Some(dir.as_fd()) };
        // Reaped here (dropped): this init reaps every child from here on.
        swrk.restore(&o, dirs, &[], &mut |_| NotifyAction::Continue).map(|(pid, _exiting)| pid).map_err(|e| criu_failure("restore", e, &images.join("restore.log")))
    })();
    // SAFETY: prctl on ourselves: the pid ns init outlives cns from here.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    let code = match result {
        Ok(pid) => {
            Report::Started { pid }.send(report);
            crate::process::spawn::close_fds_from(3, false);
            let _ = crate::process::init::forwarded_signals().thread_block();
            crate::process::init::init_loop(Pid::from_raw(pid))
        }
        Err(e) => {
            Report::failed(&e).send(report);
            1
        }
    };
    // SAFETY: end of the namespace's init; no destructors of the parent's state.
    unsafe { libc::_exit(code) }
}
