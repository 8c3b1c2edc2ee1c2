//! A dump: plan (the CRIU options, decided without touching anything),
//! pre-flight, then CRIU into a staging directory that is committed at
//! post-dump (commit.rs), then the record.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use cns_engine::preflight::{self, Severity};
use cns_engine::{CriuFlags, CriuOptions, Dirs, DumpStats, ImageDir, Notify, NotifyAction, Swrk};

use crate::checkpoint::commit::Staging;
use crate::checkpoint::failure::{criu_failure, criu_stderr, open_dir};
use crate::checkpoint::meta::{META_FILE, Meta};
use crate::checkpoint::STDIO_KEY;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::recovery;
use crate::runtime::{Events, Runtime};
use crate::workload::{Locked, Workload};

/// What to dump and how.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The workload (with `adopt_pid`: the name to give the checkpoint).
    pub name: String,
    /// Image directory (default: the images root / NAME).
    pub images: Option<PathBuf>,
    pub leave_running: bool,
    /// Drop connections still waiting in a listen queue.
    pub tcp_skip_in_flight: bool,
    /// CRIU switches asked for (pre-flight and the config add to them).
    pub flags: CriuFlags,
    /// Skip the pre-flight check.
    pub no_preflight: bool,
    /// Action scripts run at each of CRIU's stages (hooks.rs).
    pub action_scripts: Vec<PathBuf>,
}

/// What a dump produced.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    pub name: String,
    pub images: PathBuf,
    pub stats: Option<DumpStats>,
}

/// Everything decided before anything is frozen.
#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub name: String,
    pub pid: i32,
    pub criu: cns_engine::Criu,
    pub options: CriuOptions,
    pub action_scripts: Vec<PathBuf>,
    /// A rootfs workload's upper layer, saved into the checkpoint while
    /// the tree is frozen.
    pub rootfs_upper: Option<PathBuf>,
    /// A migration's dump: the tree is left stopped, and resumed by the
    /// sweep if the command dies before the destination runs it.
    pub migrating: bool,
    /// fds CRIU inherits at their own numbers (a migration's page-server socket).
    pub inherit: Vec<std::os::fd::RawFd>,
}

impl DumpPlan {
    /// The equivalent plain `criu dump` command line.
    pub fn command_line(&self) -> String {
        self.options.command_line(&self.criu.path, None).join(" ")
    }
}

/// `--external` entries of a dump: the log's bind mount, the user's bind
/// mounts and a rootfs workload's init.
fn dump_externals(w: &Workload) -> Vec<String> {
    let mut v: Vec<String> = w.stdio_mount.iter().map(|m| format!("mnt[{}]:{STDIO_KEY}", m.display())).collect();
    v.extend(crate::confine::dump_externals(&w.confine));
    v
}

/// Decides the dump of `w` (running, root `pid`). No side effects.
pub fn plan(rt: &Runtime, opts: &DumpOptions, w: &Workload, pid: i32) -> Result<DumpPlan> {
    let criu = rt.criu()?;
    let images = opts.images.clone().unwrap_or_else(|| rt.default_images(&w.name));
    let mut o = CriuOptions::dump(pid, images);
    o.leave_running = opts.leave_running;
    o.tcp_skip_in_flight = opts.tcp_skip_in_flight;
    o.flags = opts.flags.union(CriuFlags { tcp_established: rt.config.tcp_established, file_locks: rt.config.file_locks, ..Default::default() });
    o.external = dump_externals(w);
    crate::checkpoint::hooks::check(&opts.action_scripts)?;
    let rootfs_upper = w.confine.rootfs.as_ref().map(|lower| crate::confine::rootfs::layers(&rt.store.paths.lib, &w.name, lower).upper);
    Ok(DumpPlan { name: w.name.clone(), pid, criu, options: o, action_scripts: opts.action_scripts.clone(), rootfs_upper, migrating: false, inherit: vec![] })
}

/// The plan for a dump of the workload `opts.name`, for printing.
pub fn plan_for(rt: &Runtime, opts: &DumpOptions) -> Result<DumpPlan> {
    let w = rt.store.get(&opts.name)?;
    let pid = w.running_pid()?;
    plan(rt, opts, &w, pid)
}

/// Dumps the workload `opts.name`.
pub fn dump(rt: &Runtime, opts: &DumpOptions, events: &dyn Events) -> Result<DumpOutcome> {
    rt.require_root()?;
    let l = rt.store.try_lock(&opts.name)?;
    let w = l.load()?;
    let pid = w.running_pid()?;
    if let Some(daemon) = crate::checkpoint::lazy::pending(&l.dir) {
        return Err(Error::new(ErrorKind::State, format!("workload {} is still receiving its memory from a lazy restore (lazy-pages daemon pid {daemon})", w.name))
            .with_hint("wait until its memory is in (the daemon exits), then dump"));
    }
    let plan = plan(rt, opts, &w, pid)?;
    // The dumped tree's monitor records its end after this returns; a
    // restore waits for it (restore.rs), not the dump.
    dump_locked(rt, &l, w, plan, opts.no_preflight, events)
}

/// The steps of a dump, with the workload locked.
pub fn dump_locked(rt: &Runtime, l: &Locked, mut w: Workload, plan: DumpPlan, no_preflight: bool, events: &dyn Events) -> Result<DumpOutcome> {
    let images = plan.options.images.clone();
    let left_running = plan.options.leave_running || plan.options.leave_stopped;
    let stats = dump_to(rt, l, &w, plan, no_preflight, events)?;
    w.mark_dumped(images.clone(), left_running);
    l.save(&w)?;
    recovery::end(&l.dir);
    Ok(DumpOutcome { name: w.name.clone(), images, stats })
}

/// Pre-flight, CRIU into a staging directory, the checkpoint committed at
/// `plan.options.images` with its metadata. The record is not touched
/// (the caller says what the dump means for it); the recovery marker is
/// left for the caller to end.
pub fn dump_to(rt: &Runtime, l: &Locked, w: &Workload, mut plan: DumpPlan, no_preflight: bool, events: &dyn Events) -> Result<Option<DumpStats>> {
    let images = plan.options.images.clone();
    check_destination(&images)?;
    let mut staging = Staging::create(&images, &l.dir)?;
    // CRIU starts first: loading it takes it about as long as the
    // pre-flight takes cns, and the two overlap. A refusal ends it unasked.
    let swrk = match Swrk::start(&plan.criu.path, &plan.inherit, criu_stderr(&staging.dir, "criu-stderr.log")) {
        Ok(s) => s,
        Err(e) => {
            staging.abandon(&rt.failed_dump_log(&w.name));
            return Err(criu_failure("dump", e, &rt.failed_dump_log(&w.name)));
        }
    };
    let memory = if no_preflight {
        Ok(0)
    } else {
        preflight_dump(&mut plan, w, events)
    };
    let memory = match memory {
        Ok(m) => m,
        Err(e) => {
            swrk.cancel();
            staging.abandon(&rt.failed_dump_log(&w.name));
            return Err(e);
        }
    };
    let meta = Meta::new(w, &plan.criu, plan.options.flags);
    let mut marker = recovery::Marker::new(false);
    marker.dump = Some(recovery::DumpMark { images: images.clone(), old: None, committed: false });
    if plan.migrating {
        marker.resume_stopped = true;
        marker.root = Some(plan.pid);
        marker.root_start = crate::process::stat::process_start(plan.pid);
    }
    marker.criu = Some(swrk.pid() as i32);
    marker.criu_start = crate::process::stat::process_start(swrk.pid() as i32);
    if let Err(e) = recovery::begin(&l.dir, &marker) {
        swrk.cancel();
        staging.abandon(&rt.failed_dump_log(&w.name));
        return Err(e);
    }
    staging.prewrite(&meta);
    let result = run_criu(&plan, swrk, &mut staging, &meta, memory, events);
    events.done();
    if let Err(e) = result {
        let failed_log = rt.failed_dump_log(&w.name);
        staging.abandon(&failed_log);
        recovery::end(&l.dir);
        return Err(criu_failure("dump", e, &failed_log));
    }
    if !staging.committed() {
        // A CRIU without the post-dump notification: commit now.
        staging.commit(&meta)?;
    }
    staging.finish();
    // CRIU's own statistics image (stats-dump) is the record of them:
    // `cns inspect` reads it, and cns.json is not written again (replacing
    // a file on ext4 flushes it: most of a millisecond of every dump).
    Ok(ImageDir::new(&images).dump_stats().ok())
}

/// The checkpoint goes where nothing of anyone else's is: the destination
/// is absent or an earlier cns checkpoint (its `cns.json` is the marker),
/// and not a symlink. Its parent is created 0700 when missing; an existing
/// parent is left exactly as it is.
pub fn check_destination(images: &Path) -> Result<()> {
    match fs::symlink_metadata(images) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::wrap(format!("cannot use {}", images.display()), e)),
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(Error::new(ErrorKind::Exists, format!("{} exists and is not a cns checkpoint directory", images.display()))
                .with_hint("give --images a path that does not exist yet (cns creates it), or an earlier cns checkpoint"));
        }
        Ok(_) if !images.join(META_FILE).is_file() => {
            return Err(Error::new(ErrorKind::Exists, format!("{} exists and is not a cns checkpoint: cns will not replace what it did not write", images.display()))
                .with_hint("give --images a path that does not exist yet (cns creates it), or an earlier cns checkpoint"));
        }
        Ok(_) => {}
    }
    let parent = images.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::files::mkdir_private(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(())
}

/// Pre-flight: refuses what would make CRIU fail and turns on the CRIU
/// switches the tree needs. Returns the memory to dump, in bytes.
fn preflight_dump(plan: &mut DumpPlan, w: &Workload, events: &dyn Events) -> Result<u64> {
    let parent = plan.options.images.parent().unwrap_or(Path::new("/")).to_path_buf();
    let needs = preflight::check_dump(plan.pid, plan.options.flags.shell_job, &parent);
    for f in &needs.findings {
        match f.severity {
            Severity::Blocker => {
                return Err(Error::new(ErrorKind::Blocked, format!("cannot dump {}: {} ({})", w.name, f.message, f.object)).with_hint(f.fix.clone()));
            }
            Severity::Warning => events.note(&format!("{}: {}", f.message, f.fix)),
            Severity::Ok => {}
        }
    }
    let o = &mut plan.options;
    o.flags = o.flags.union(CriuFlags {
        tcp_established: needs.tcp_established,
        file_locks: needs.file_locks,
        ext_unix_sk: needs.ext_unix_sk,
        link_remap: needs.link_remap,
        evasive_devices: needs.evasive_devices,
        ..Default::default()
    });
    o.tcp_skip_in_flight |= needs.tcp_skip_in_flight;
    if let Some(g) = needs.ghost_limit {
        // Round up to the next MiB; CRIU takes a 32-bit limit.
        o.ghost_limit = Some(u32::try_from(g.div_ceil(1 << 20) << 20).unwrap_or(u32::MAX));
    }
    Ok(needs.memory_bytes)
}

/// CRIU's dump into the staging directory, committing at post-dump.
fn run_criu(plan: &DumpPlan, swrk: Swrk, staging: &mut Staging, meta: &Meta, memory: u64, events: &dyn Events) -> Result<(), cns_engine::RpcError> {
    let what = format!("dumping {}", plan.name);
    events.stage(&what, &format!("freezing the tree (pid {})", plan.pid));
    let dir = match open_dir(&staging.dir) {
        Ok(d) => d,
        Err(e) => {
            swrk.cancel();
            return Err(cns_engine::RpcError::Protocol { op: "DUMP", what: e.one_line() });
        }
    };
    let dirs = Dirs { images: Some(dir.as_fd()), work: Some(dir.as_fd()) };
    // The dump is complete at CRIU's answer; its exit is not waited for.
    let res = swrk.dump(&plan.options, dirs, &mut |n: &Notify| {
        if let Err(e) = crate::checkpoint::hooks::run(&plan.action_scripts, &n.script, n.pid.or(Some(plan.pid)), &plan.name, &plan.options.images) {
            return NotifyAction::Abort(e);
        }
        match n.script.as_str() {
            "pre-dump" => events.stage(&what, &format!("frozen, dumping memory ({} MiB)", memory >> 20)),
            "post-dump" => {
                // The images are complete and the tree not yet killed: commit
                // the checkpoint now, so a cns killed from here on loses nothing.
                events.stage(&what, "writing the images");
                if let Some(upper) = &plan.rootfs_upper {
                    let dest = staging.dir.join(crate::confine::rootfs::UPPER_ARCHIVE);
                    if let Err(e) = crate::confine::rootfs::archive_upper(upper, &dest) {
                        return NotifyAction::Abort(format!("cannot save the root file system: {}", e.one_line()));
                    }
                }
                if let Err(e) = staging.commit(meta) {
                    return NotifyAction::Abort(format!("cannot commit the checkpoint: {}", e.one_line()));
                }
            }
            _ => {}
        }
        NotifyAction::Continue
    });
    res.map(cns_engine::rpc::Exiting::reap_in_background)
}
