//! A restore: a pure [`plan`] (validate, decide the name, the address, the
//! host interface and CRIU's options: no lease, no file, no lock) and an
//! [`execute`] step that does it and undoes everything if any step fails.
//! `--print-criu-cmdline` is the plan printed.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use cns_engine::preflight::{self, Severity};
use cns_engine::{CriuFlags, CriuOptions, Dirs, ImageDir, Notify, NotifyAction, RestoreStats, Swrk};
use cns_netns::LinkAddrs;

use crate::checkpoint::STDIO_KEY;
use crate::checkpoint::failure::{criu_failure, criu_stderr, open_dir};
use crate::checkpoint::meta::{Meta, read_meta};
use crate::error::{Error, ErrorKind, Result};
use crate::net::{self, Rollback};
use crate::process::monitor;
use crate::recovery::{self, Marker};
use crate::runtime::{Events, Runtime};
use crate::workload::{Locked, NetConfig, NetMode, State, Workload, validate_name};

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The checkpoint's name (with `images`: the name it was dumped under,
    /// or the name to give it).
    pub name: String,
    /// Restore a copy under this name (the checkpoint is kept).
    pub as_name: Option<String>,
    /// Image directory (default: the checkpoint's recorded one).
    pub images: Option<PathBuf>,
    /// CRIU switches (the dump's own are added).
    pub flags: CriuFlags,
    /// A copy keeps the dumped address.
    pub keep_ip: bool,
    /// An in-place restore takes a fresh address.
    pub new_ip: bool,
    pub no_preflight: bool,
    /// Memory the restore may use, in bytes, for the pre-flight.
    pub memory_limit: Option<u64>,
    /// Restore under a detached monitor instead of as the caller's child.
    pub detach: bool,
    /// Write the host PID of the restored root here.
    pub pidfile: Option<PathBuf>,
    /// Publish ports (`[HOSTIP:]HOSTPORT:PORT`) instead of the checkpoint's
    /// own (an in-place restore keeps its own when none are given; a copy
    /// and an imported checkpoint publish only these).
    pub publish: Vec<String>,
    /// Action scripts run at each of CRIU's stages (hooks.rs).
    pub action_scripts: Vec<PathBuf>,
    /// Post-copy: run at once, memory served on demand (lazy.rs).
    pub lazy: bool,
    /// With `lazy`: the memory comes from a page server (a migration's
    /// source) reached through a socket pair instead of the pages files.
    pub lazy_page_server: Option<crate::checkpoint::lazy::RemotePages>,
    /// Where the checkpoint's root directory is now (`--rootfs`).
    pub rootfs: Option<PathBuf>,
    /// New sources for the checkpoint's bind mounts (`SRC:DST`).
    pub binds: Vec<String>,
    /// No outbound access for the restored workload (see `run --no-outbound`).
    pub no_outbound: bool,
    /// The address to give it (a migration keeps the source's when the
    /// destination has it free).
    pub address: Option<LinkAddrs>,
}

/// A restored, running workload.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    pub pid: i32,
    pub stats: Option<RestoreStats>,
    pub log: PathBuf,
    /// The log's size when the restore began (a foreground caller streams from here).
    pub log_offset: u64,
}

/// Which address the restored workload gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// No veth.
    None,
    /// The dumped address (in place, or a copy with `keep_ip`).
    Keep(LinkAddrs),
    /// A fresh lease from the pool (a copy, or `new_ip`).
    Fresh,
}

/// Everything decided before anything is touched.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub new_name: String,
    pub images: PathBuf,
    pub meta: Meta,
    /// Restoring under the checkpoint's own name.
    pub in_place: bool,
    pub address: Address,
    pub host_if: Option<String>,
    pub log: PathBuf,
    pub criu: cns_engine::Criu,
    pub options: CriuOptions,
    pub pidfile: Option<PathBuf>,
    /// The ports to publish.
    pub publish: Vec<crate::net::Publish>,
    pub action_scripts: Vec<PathBuf>,
    /// A lazy restore's own work dir (its daemon's socket and the logs).
    pub lazy_dir: Option<PathBuf>,
    /// Its remote page server (RestoreOptions::lazy_page_server).
    pub lazy_page_server: Option<crate::checkpoint::lazy::RemotePages>,
    /// Mounts CRIU makes in a private mount namespace of its own: the
    /// overlay root of a workload with a root file system of its own.
    pub private_mounts: Vec<cns_engine::PrivateMount>,
}

impl RestorePlan {
    /// The equivalent plain `criu restore` command line.
    pub fn command_line(&self) -> String {
        self.options.command_line(&self.criu.path, self.pidfile.as_deref()).join(" ")
    }
}

fn running(name: &str) -> Error {
    Error::new(ErrorKind::State, format!("workload {name} is running")).with_hint("dump or stop it first, or restore a copy with --as NEW")
}

/// Decides the restore. Reads the store and the checkpoint; changes nothing.
pub fn plan(rt: &Runtime, opts: &RestoreOptions) -> Result<RestorePlan> {
    validate_name(&opts.name)?;
    if let Some(n) = &opts.as_name {
        validate_name(n)?;
    }
    crate::files::check_pidfile(opts.pidfile.as_deref())?;
    let new_name = opts.as_name.clone().unwrap_or_else(|| opts.name.clone());
    let target = rt.store.get(&new_name).ok();
    if target.as_ref().is_some_and(|w| w.live_state() == State::Running) {
        return Err(running(&new_name));
    }
    let images = match &opts.images {
        Some(d) => d.clone(),
        None => rt.store.get(&opts.name).ok().and_then(|w| w.images).unwrap_or_else(|| rt.default_images(&opts.name)),
    };
    ImageDir::new(&images).validate().map_err(|e| {
        Error::new(ErrorKind::NotFound, format!("cannot restore {}: {e}", opts.name)).with_hint("dump it again, or point --images at a complete checkpoint")
    })?;
    let meta = trusted_meta(rt, opts, &images)?;
    if meta.workload.name != opts.name && opts.as_name.is_none() && opts.images.is_some() {
        return Err(Error::invalid(
            format!("the images in {} belong to workload {}, not {}", images.display(), meta.workload.name, opts.name),
            format!("restore it with --as {}, or under its own name {}", opts.name, meta.workload.name),
        ));
    }
    let in_place = new_name == meta.workload.name;
    if !in_place && target.is_some() {
        return Err(taken(&new_name));
    }
    if let Some(w) = &target {
        check_target(w, &meta)?;
        if let Some(own) = w.images.as_ref().filter(|own| !same_dir(own, &images)) {
            return Err(Error::new(ErrorKind::Exists, format!("workload {new_name} has its own checkpoint at {}, not {}", own.display(), images.display()))
                .with_hint(format!("restore the images as a copy with --as NEW, or remove {new_name} first")));
        }
    }

    let (address, host_if) = match (meta.workload.net.mode, meta.workload.net.addrs) {
        (NetMode::Veth, Some(a)) if (in_place && !opts.new_ip) || opts.keep_ip => (Address::Keep(a), Some(net::host_veth_name(&new_name))),
        (NetMode::Veth, _) => (Address::Fresh, Some(net::host_veth_name(&new_name))),
        _ => (Address::None, None),
    };
    let publish = if !opts.publish.is_empty() {
        if host_if.is_none() {
            return Err(Error::invalid("the checkpoint has no veth: -p needs one", "drop -p"));
        }
        opts.publish.iter().map(|p| net::parse_publish(p)).collect::<Result<Vec<_>>>()?
    } else if in_place && address != Address::Fresh {
        meta.workload.net.publish.clone()
    } else {
        vec![]
    };
    crate::checkpoint::hooks::check(&opts.action_scripts)?;
    if opts.lazy {
        if meta.workload.adopted {
            return Err(Error::invalid("an adopted host tree cannot be restored lazily", "restore it without --lazy"));
        }
        crate::checkpoint::lazy::check_host()?;
    }
    if opts.lazy_page_server.is_some() && !(opts.lazy && opts.detach) {
        return Err(Error::invalid("a remote page server serves only a lazy, detached restore", "restore with lazy and detach"));
    }
    let lazy_dir = opts.lazy.then(|| crate::checkpoint::lazy::work_dir(&images, &new_name));
    let log = rt.store.paths.log_file(&new_name);
    let (options, private_mounts) = criu_options(rt, opts, &meta, &images, &new_name, host_if.as_deref(), &log);
    Ok(RestorePlan { new_name, images, meta, in_place, address, host_if, log, criu: rt.criu()?, options, pidfile: opts.pidfile.clone(), publish, action_scripts: opts.action_scripts.clone(), lazy_dir, lazy_page_server: opts.lazy_page_server, private_mounts })
}

/// The checkpoint's metadata as this host believes it: a checkpoint this
/// host's cns did not record is believed for nothing host-facing; the
/// user's new mount sources and --no-outbound apply.
fn trusted_meta(rt: &Runtime, opts: &RestoreOptions, images: &Path) -> Result<Meta> {
    let mut meta = read_meta(images)?;
    let own = rt.store.get(&meta.workload.name).ok().and_then(|w| w.images).is_some_and(|d| same_dir(&d, images));
    if !own {
        meta.distrust(&rt.store.paths.stdio_mount())?;
        // Outbound access is this host's to give: its default.
        meta.workload.net.outbound = meta.workload.net.mode == NetMode::Veth;
    }
    crate::confine::override_sources(&mut meta.workload.confine, opts.rootfs.as_deref(), &opts.binds, &rt.store.paths.lib, &rt.own_dirs())?;
    if opts.no_outbound {
        meta.workload.net.outbound = false;
    }
    if let (Some(a), NetMode::Veth) = (opts.address, meta.workload.net.mode) {
        meta.workload.net.addrs = Some(a);
    }
    Ok(meta)
}

/// CRIU's options, and the mounts CRIU makes in a private mount namespace
/// of its own (a workload with a root of its own is restored into its
/// overlay, which the host's mount table never shows).
fn criu_options(rt: &Runtime, opts: &RestoreOptions, meta: &Meta, images: &Path, new_name: &str, host_if: Option<&str>, log: &Path) -> (CriuOptions, Vec<cns_engine::PrivateMount>) {
    let mut o = CriuOptions::restore(images, format!("restore-{new_name}.log"));
    o.lazy_pages = opts.lazy;
    o.flags = opts.flags.union(meta.flags);
    // Whether the namespace's traffic is held until network-unlock: with
    // established TCP connections to restore. CRIU itself takes the lock
    // method from the checkpoint's inventory (the dump's, nftables), not
    // from this request, and the dumped ruleset carries its lock table: it
    // deletes that table at network-unlock either way (and waits there for
    // an RCU grace period, plain CRIU alike). What this decides is cns's
    // own side: without it, the host end comes up only at post-restore,
    // when every socket is back (run_criu).
    o.lock_network = o.flags.tcp_established;
    if let Some(h) = &host_if {
        o.external.push(format!("veth[{}]:{h}", cns_netns::INNER_IF));
    }
    if meta.workload.stdio_mount.is_some() {
        o.external.push(format!("mnt[{STDIO_KEY}]:{}", log.display()));
    }
    o.external.extend(crate::confine::restore_externals(&rt.store.paths.lib, &meta.workload.confine));
    let mut private_mounts = vec![];
    if let Some(lower) = &meta.workload.confine.rootfs {
        let l = crate::confine::rootfs::layers(&rt.store.paths.lib, new_name, lower);
        o.root = Some(l.merged.display().to_string());
        private_mounts.push(cns_engine::PrivateMount { source: "cns-rootfs".into(), target: l.merged.clone(), fstype: "overlay".into(), data: l.data() });
    }
    (o, private_mounts)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || fs::canonicalize(a).ok().zip(fs::canonicalize(b).ok()).is_some_and(|(x, y)| x == y)
}

fn taken(name: &str) -> Error {
    Error::new(ErrorKind::Exists, format!("a workload named {name} already exists"))
        .with_hint(format!("restore the copy under a new name, or remove {name} first with `cns rm {name}`"))
}

/// Whether an existing record may be restored over: only a workload's own
/// record, by its own checkpoint.
fn check_target(w: &Workload, meta: &Meta) -> Result<()> {
    match w.live_state() {
        State::Running => Err(running(&w.name)),
        // A workload that exited (or crashed) rolls back to its own
        // checkpoint in place; another name is not overwritten.
        State::Exited | State::Created if w.name != meta.workload.name => Err(Error::new(
            ErrorKind::Exists,
            format!("a workload named {} already exists ({})", w.name, w.live_state()),
        )
        .with_hint(format!("remove it with `cns rm {}` or restore under another name with --as", w.name))),
        _ => Ok(()),
    }
}

/// Restores: plan, then execute.
pub fn restore(rt: &Runtime, opts: &RestoreOptions, events: &dyn Events) -> Result<Restored> {
    rt.require_root()?;
    let plan = plan(rt, opts)?;
    execute(rt, &plan, opts, events)
}

/// A dump returns as soon as its checkpoint is committed; the monitor of
/// the dumped tree may still be recording its end (it needs the lock) and
/// holding its published ports. An in-place restore waits for it here,
/// before taking the lock, so it finds the ports free.
fn wait_old_monitor(rt: &Runtime, name: &str) {
    let Ok(w) = rt.store.get(name) else { return };
    if let (State::Dumped, Some(pid)) = (w.state, w.shim_pid) {
        if pid != std::process::id() as i32 {
            crate::process::monitor::wait_gone(pid, w.shim_start, std::time::Duration::from_secs(5));
        }
    }
}

/// Does what `plan` decided. On failure nothing is left: no process,
/// lease, veth, log or record of its own.
pub fn execute(rt: &Runtime, plan: &RestorePlan, opts: &RestoreOptions, events: &dyn Events) -> Result<Restored> {
    let existing = rt.store.exists(&plan.new_name);
    if existing && !plan.in_place {
        return Err(taken(&plan.new_name));
    }
    if existing {
        wait_old_monitor(rt, &plan.new_name);
    }
    let locked = if existing { rt.store.try_lock(&plan.new_name)? } else { rt.store.create(&plan.new_name)? };
    let mut rollback = Rollback::new(rt, &plan.new_name);
    let res = execute_locked(rt, plan, opts, &locked, existing, &mut rollback, events);
    events.done();
    match res {
        Ok(r) => Ok(r),
        Err(e) => {
            rollback.run();
            recovery::end(&locked.dir);
            if !existing {
                crate::confine::rootfs::remove(&rt.store.paths.lib, &plan.new_name);
                if !plan.meta.workload.confine.limits.is_empty() {
                    crate::confine::cgroup::remove(&plan.new_name);
                }
                let _ = rt.store.remove(locked);
                if !plan.in_place {
                    let _ = fs::remove_file(&plan.log);
                }
            }
            Err(e)
        }
    }
}

fn execute_locked(rt: &Runtime, plan: &RestorePlan, opts: &RestoreOptions, locked: &Locked, existing: bool, rollback: &mut Rollback<'_>, events: &dyn Events) -> Result<Restored> {
    let mut record = if existing {
        let w = locked.load()?;
        check_target(&w, &plan.meta)?;
        w
    } else {
        let mut w = plan.meta.workload.clone();
        w.name = plan.new_name.clone();
        w
    };
    let mut marker = Marker::new(!existing);
    recovery::begin(&locked.dir, &marker)?;
    let net = network(rt, plan, rollback)?;
    // A copy's rules are its own; in place, the dumped workload's stay when
    // they say the same (deleting an nf_tables table waits for an RCU
    // grace period: about 12 ms of every restore here).
    rollback.rules = !plan.in_place;
    let unchanged = existing && record.net.addrs == net.addrs && record.net.outbound == net.outbound && cns_netns::nat::installed().is_ok_and(|t| t.contains(&plan.new_name));
    if !unchanged {
        net::install_rules(rt, &plan.new_name, &net)?;
    }
    marker.lease = if plan.in_place { None } else { rollback.lease };
    marker.host_if = net.host_if.clone();
    marker.log = (!plan.in_place).then(|| plan.log.clone());
    recovery::begin(&locked.dir, &marker)?;
    let published = crate::net::publish::bind(&net)?;
    let log_offset = if plan.in_place { fs::metadata(&plan.log).map(|m| m.len()).unwrap_or(0) } else { 0 };
    events.stage(&format!("restoring {}", plan.new_name), &format!("restoring {} MiB of memory", ImageDir::new(&plan.images).page_bytes().unwrap_or(0) >> 20));
    // The checks and preparations CRIU's request needs run where CRIU
    // starts (the monitor, or this process in the foreground), after it is
    // spawned: CRIU takes about 4 ms to load before it reads its request,
    // and these take most of a millisecond. A refusal ends it unasked.
    let mut prepare = || {
        prepare_stdio(rt, plan)?;
        prepare_rootfs(rt, plan)?;
        let limits = plan.meta.workload.confine.limits;
        if !limits.is_empty() {
            crate::confine::cgroup::create(&plan.new_name, &limits)?;
        }
        if !opts.no_preflight {
            crate::confine::missing_sources(&plan.meta.workload.confine)?;
            preflight_restore(rt, plan, opts)?;
        }
        // The copy's log must exist: CRIU bind-mounts it as the workload's stdio.
        drop(crate::files::create_private_file(&plan.log, !plan.in_place)?);
        Ok(())
    };
    let (pid, shim) = start(rt, plan, &net, published, locked, opts.detach, &mut prepare)?;
    let stats = ImageDir::new(&plan.images).restore_stats().ok();
    record.net = net;
    record.log = plan.log.clone();
    record.mark_running(pid, shim);
    record.images = Some(plan.images.clone());
    record.restored_from = Some(plan.meta.workload.name.clone());
    let recorded = locked.save(&record).and_then(|()| match &opts.pidfile {
        // An adopted tree's root is a child of the pid namespace's init.
        Some(p) => crate::files::write_pidfile(p, if plan.meta.workload.adopted { crate::process::stat::first_child(pid).unwrap_or(pid) } else { pid }),
        None => Ok(()),
    });
    if let Err(e) = recorded {
        // Nothing runs that is not recorded (the caller rolls back the rest).
        crate::process::kill_started(pid, record.pid_start);
        return Err(e);
    }
    recovery::end(&locked.dir);
    Ok(Restored { name: plan.new_name.clone(), pid, stats, log: plan.log.clone(), log_offset })
}

/// Leases the address and clears the host interface name. In place keeps
/// address and host name; a copy gets its own.
fn network(rt: &Runtime, plan: &RestorePlan, rollback: &mut Rollback<'_>) -> Result<NetConfig> {
    let mut net = plan.meta.workload.net.clone();
    net.host_if = plan.host_if.clone();
    if let Some(h) = &net.host_if {
        net::check_host_if(rt, &plan.new_name, h)?;
    }
    match plan.address {
        Address::None => return Ok(net),
        Address::Keep(a) => {
            rt.leases().take(&plan.new_name, &a).map_err(|e| {
                let hint = if plan.in_place { "restore it with --new-ip (established connections are lost)" } else { "restore the copy without --keep-ip" };
                Error::invalid(e.to_string(), hint)
            })?;
            if !plan.in_place {
                rollback.lease = Some(a);
            }
        }
        Address::Fresh => {
            let p = net::NetPlan { mode: NetMode::Veth, ip: None, publish: vec![], outbound: net.outbound };
            net.addrs = net::lease(rt, &plan.new_name, &p)?;
            rollback.lease = net.addrs;
        }
    }
    net.publish = plan.publish.clone();
    if let Some(h) = &net.host_if {
        if let Ok(nl) = cns_netns::Netlink::new() {
            if plan.in_place {
                // The dumped tree's host end may linger (its netns dies asynchronously).
                net::remove_stale_host_end(&nl, h)?;
            } else if nl.link_index(h)?.is_some() {
                return Err(Error::new(ErrorKind::Exists, format!("host interface {h} already exists")).with_hint("remove the interface or the workload that owns it"));
            }
        }
    }
    // A failed restore leaves no veth, in place or not (CRIU's own cleanup
    // is asynchronous: the netns dies after the restorees).
    rollback.host_if = net.host_if.clone();
    Ok(net)
}

/// The log's mountpoint, and the empty directory the masks over cns's own
/// directories bind, must exist in the restored root (the host's /) for
/// pre-flight and for CRIU. (A workload with a root of its own has it in
/// its own /dev, which the checkpoint carries.)
fn prepare_stdio(rt: &Runtime, plan: &RestorePlan) -> Result<()> {
    if plan.meta.workload.confine.rootfs.is_some() {
        return Ok(());
    }
    // The masks over cns's directories are binds of it (a checkpoint taken
    // before 2026-12-04 has tmpfs masks, which CRIU makes itself).
    crate::confine::mask_dir(&rt.store.paths.lib)?;
    if let Some(m) = &plan.meta.workload.stdio_mount {
        drop(crate::files::create_private_file(m, false)?);
    }
    Ok(())
}

/// A workload with a root of its own gets fresh layers holding the
/// checkpoint's changes to its root (in place too: the dumped state, not
/// whatever came after a --leave-running dump), and cns's static init.
fn prepare_rootfs(rt: &Runtime, plan: &RestorePlan) -> Result<()> {
    let Some(lower) = &plan.meta.workload.confine.rootfs else { return Ok(()) };
    crate::confine::rootfs::static_init(&rt.store.paths.lib, &rt.store.paths.state)?;
    crate::confine::rootfs::create(&rt.store.paths.lib, &plan.new_name)?;
    let upper = crate::confine::rootfs::layers(&rt.store.paths.lib, &plan.new_name, lower).upper;
    let archive = plan.images.join(crate::confine::rootfs::UPPER_ARCHIVE);
    if !archive.is_file() {
        return Err(Error::new(ErrorKind::NotFound, format!("the checkpoint lacks {}: the changes to the workload's root", crate::confine::rootfs::UPPER_ARCHIVE))
            .with_hint("dump the workload again"));
    }
    crate::confine::rootfs::extract_upper(&archive, &upper)
}

fn preflight_restore(rt: &Runtime, plan: &RestorePlan, opts: &RestoreOptions) -> Result<()> {
    let host_if = if plan.in_place { None } else { plan.host_if.as_deref() };
    // The host's links matter only for a copy's new host interface name.
    let links = match host_if {
        Some(_) => cns_netns::Netlink::new().and_then(|n| n.link_names()).unwrap_or_default(),
        None => vec![],
    };
    let layers = plan.meta.workload.confine.rootfs.as_ref().map(|lower| crate::confine::rootfs::layers(&rt.store.paths.lib, &plan.new_name, lower));
    let layer_paths: Vec<&Path> = layers.iter().flat_map(|l| [l.upper.as_path(), l.lower.as_path()]).collect();
    for f in preflight::check_image(&ImageDir::new(&plan.images), opts.memory_limit, host_if, &links, &layer_paths) {
        if f.severity == Severity::Blocker {
            return Err(Error::new(ErrorKind::Blocked, format!("cannot restore {}: {} ({})", opts.name, f.message, f.object)).with_hint(f.fix.clone()));
        }
    }
    Ok(())
}

/// Runs CRIU, in a detached monitor or as the caller's child, after
/// `prepare` (run where CRIU runs, once CRIU is loading). Returns the
/// restored root and the monitor (the caller itself in the foreground).
fn start(rt: &Runtime, plan: &RestorePlan, net: &NetConfig, published: crate::net::publish::Published, locked: &Locked, detach: bool, prepare: &mut dyn FnMut() -> Result<()>) -> Result<(i32, i32)> {
    let state_dir = locked.dir.as_path();
    let mut published = Some(published);
    let mut work = || {
        // A root of its own is mounted in CRIU's namespace as CRIU starts:
        // its layers must be ready first.
        let early = !plan.meta.workload.adopted && plan.private_mounts.is_empty();
        let swrk = if early { Some(spawn_criu(plan, state_dir)?) } else { None };
        let ready = prepare().and_then(|()| match &plan.lazy_dir {
            Some(dir) => crate::checkpoint::lazy::start(&plan.criu.path, &plan.images, dir, state_dir, plan.lazy_page_server).map(Some),
            None => Ok(None),
        });
        let daemon = match ready {
            Ok(d) => d,
            Err(e) => {
                // Refused before CRIU was asked anything: it ends unasked.
                if let Some(s) = swrk {
                    s.cancel();
                }
                return Err(e);
            }
        };
        let pid = match run_criu(plan, net, state_dir, swrk) {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(d) = daemon {
                    crate::checkpoint::lazy::abandon(d, state_dir);
                }
                return Err(e);
            }
        };
        if let Some(d) = daemon {
            let w = crate::checkpoint::lazy::Watch {
                name: plan.new_name.clone(),
                root: pid,
                root_start: crate::process::stat::process_start(pid),
                log: plan.log.clone(),
                state_dir: state_dir.to_path_buf(),
            };
            crate::checkpoint::lazy::watch(d, w);
        }
        if let Some(p) = published.take() {
            p.serve(net);
        }
        Ok(pid)
    };
    let mut on_exit = |pid: i32, code: i32| {
        crate::checkpoint::lazy::finish_watchers();
        rt.store.record_exit(&plan.new_name, pid, code)
    };
    monitor::start(detach, locked.lock_fd(), ErrorKind::Criu, &mut work, &mut on_exit)
}

/// CRIU in swrk mode, waiting for its request; its restored root will be
/// a child of the caller.
fn spawn_criu(plan: &RestorePlan, state_dir: &Path) -> Result<Swrk> {
    let swrk = Swrk::start_with_mounts(&plan.criu.path, &[], criu_stderr(&plan.images, &format!("criu-stderr-{}.log", plan.new_name)), &plan.private_mounts)?;
    recovery::set_criu(state_dir, swrk.pid() as i32);
    Ok(swrk)
}

/// The CRIU restore, by `early` when CRIU was started already (an adopted
/// host tree's has its own); the restored root becomes a child of the
/// caller.
fn run_criu(plan: &RestorePlan, net: &NetConfig, state_dir: &Path, early: Option<Swrk>) -> Result<i32> {
    if plan.meta.workload.adopted {
        return crate::checkpoint::adopt::restore_host_tree(&plan.criu.path, &plan.images, plan.options.flags);
    }
    let swrk = match early {
        Some(s) => s,
        None => spawn_criu(plan, state_dir)?,
    };
    let dir = open_dir(&plan.images)?;
    // A lazy restore works in its own dir: its daemon's socket is there.
    let work_path = plan.lazy_dir.clone().unwrap_or_else(|| plan.images.clone());
    let work = open_dir(&work_path)?;
    let log_path = work_path.join(&plan.options.log_file);
    let move_address = net.addrs != plan.meta.workload.net.addrs;
    let mut hook_err: Option<String> = None;
    // The host end of the veth (made by CRIU) is configured while CRIU
    // restores memory, from post-setup-namespaces on, in a thread; the
    // post-restore notification, which CRIU waits on (and whose failure
    // kills what it restored), collects it. Under CRIU's network lock the
    // link comes up in the thread: the lock holds the namespace's traffic
    // until network-unlock. Without the lock the thread only addresses it
    // and post-restore brings it up, when every socket is back: nothing
    // reaches the namespace before (a connection attempt meanwhile finds no
    // route, never a half-restored listener).
    let mut host_end: Option<std::thread::JoinHandle<Result<Option<u32>, cns_netns::NetError>>> = None;
    let read_only = crate::confine::read_only_binds(&plan.meta.workload.confine);
    let dirs = Dirs { images: Some(dir.as_fd()), work: Some(work.as_fd()) };
    let res = swrk.restore(&plan.options, dirs, &[], &mut |n: &Notify| {
        if let ("setup-namespaces", Some(pid)) = (n.script.as_str(), n.pid) {
            if let Err(e) = at_setup_namespaces(plan, state_dir, pid) {
                hook_err = Some(format!("entering the workload's cgroup: {}", e.one_line()));
                return NotifyAction::Abort(e.one_line());
            }
        }
        if let Err(e) = crate::checkpoint::hooks::run(&plan.action_scripts, &n.script, n.pid, &plan.new_name, &plan.images) {
            hook_err = Some(e.clone());
            return NotifyAction::Abort(e);
        }
        if n.script == "post-setup-namespaces" {
            host_end = configure_host_end_in_background(net, plan.options.lock_network);
        }
        // The tree runs; what CRIU does after post-resume is its own
        // cleanup (about half a millisecond), not waited for.
        if n.script == "post-resume" {
            return NotifyAction::Finish;
        }
        if n.script != "post-restore" {
            return NotifyAction::Continue;
        }
        if let (false, Some(pid)) = (read_only.is_empty(), n.pid) {
            if let Err(e) = cns_mounts::confine::remount_read_only_in(pid, &read_only) {
                hook_err = Some(format!("restoring the read-only bind mounts: {e}"));
                return NotifyAction::Abort(format!("read-only mounts: {e}"));
            }
        }
        match network_at_post_restore(net, host_end.take(), move_address, n.pid) {
            Ok(()) => NotifyAction::Continue,
            Err(e) => {
                hook_err = Some(format!("configuring the network: {e}"));
                NotifyAction::Abort(format!("network setup: {e}"))
            }
        }
    });
    // CRIU's cleanup and exit are not waited for, except a lazy restore's:
    // its CRIU works in the directory the daemon's watcher removes (a suite
    // run once found it left when the watcher ran while CRIU was exiting).
    res.map(|(pid, exiting)| {
        if plan.lazy_dir.is_some() {
            drop(exiting);
        } else {
            exiting.reap_in_background();
        }
        pid
    })
    .map_err(|e| match hook_err {
        Some(h) => Error::new(ErrorKind::Criu, format!("restore failed: {h}")).with_hint(format!("see {}", log_path.display())),
        None => criu_failure("restore", e, &log_path),
    })
}

/// At setup-namespaces: the root is recorded for recovery, and goes into
/// its own cgroup before it forks the tree or gets a page.
fn at_setup_namespaces(plan: &RestorePlan, state_dir: &Path, pid: i32) -> Result<()> {
    recovery::set_root(state_dir, pid);
    if plan.meta.workload.confine.limits.is_empty() {
        return Ok(());
    }
    crate::confine::cgroup::enter(&plan.new_name, pid)
}

/// At post-restore: the host end's configuration (from its thread, or here
/// for a CRIU without post-setup-namespaces), the link up, and the address
/// inside for a workload that moved.
fn network_at_post_restore(net: &NetConfig, host_end: Option<std::thread::JoinHandle<Result<Option<u32>, cns_netns::NetError>>>, move_address: bool, pid: Option<i32>) -> Result<(), cns_netns::NetError> {
    let host_end = match host_end {
        Some(h) => h.join().unwrap_or_else(|_| Err(cns_netns::NetError::Request { op: "configuring the host end", source: std::io::Error::other("its thread panicked") })),
        None => configure_host_end(net, true),
    };
    let down = host_end?;
    if let Some(idx) = down {
        cns_netns::Netlink::new().and_then(|nl| nl.set_up(idx))?;
    }
    configure_network(net, move_address, pid)
}

/// From post-setup-namespaces on: the host end of the veth (made by CRIU)
/// gets its address, and with `up` is brought up, in a thread of its own.
fn configure_host_end_in_background(net: &NetConfig, up: bool) -> Option<std::thread::JoinHandle<Result<Option<u32>, cns_netns::NetError>>> {
    net.host_if.as_ref()?;
    let net = net.clone();
    Some(std::thread::spawn(move || configure_host_end(&net, up)))
}

/// The host end of the veth gets its address, and with `up` is brought up;
/// otherwise its index is returned for the caller to bring it up.
fn configure_host_end(net: &NetConfig, up: bool) -> Result<Option<u32>, cns_netns::NetError> {
    let (Some(host_if), Some(addrs)) = (&net.host_if, &net.addrs) else { return Ok(None) };
    let nl = cns_netns::Netlink::new()?;
    if up {
        cns_netns::configure_host_end(&nl, host_if, addrs)?;
        return Ok(None);
    }
    cns_netns::address_host_end(&nl, host_if, addrs).map(Some)
}

/// At post-restore: a workload that moved to a new address gets it inside
/// (its host end was configured meanwhile: configure_host_end_in_background).
fn configure_network(net: &NetConfig, move_address: bool, pid: Option<i32>) -> Result<(), cns_netns::NetError> {
    let (Some(_), Some(addrs)) = (&net.host_if, &net.addrs) else { return Ok(()) };
    if let (true, Some(pid)) = (move_address, pid) {
        let inner = cns_netns::Netlink::for_pid(pid)?;
        cns_netns::configure_inside(&inner, Some(addrs))?;
    }
    Ok(())
}
