//! `cns dump` and `cns restore`: CRIU over swrk RPC, restored into new
//! namespaces.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cns_engine::preflight::{self, Severity};
use cns_engine::{DumpRequest, DumpStats, ImageDir, Notify, NotifyAction, RestoreRequest, RestoreStats, Swrk};
use serde::{Deserialize, Serialize};

use crate::cli::{CriuFlags, DumpArgs, RestoreArgs};
use crate::monitor::{self, Report};
use crate::store::{self, State, Workload};
use crate::{Ctx, bail_hint, network, recovery};

/// cns's metadata in an image directory (`cns.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub workload: Workload,
    pub cns_version: String,
    pub criu_version: String,
    pub kernel: String,
    pub dumped_at: u64,
    pub tcp_established: bool,
    pub file_locks: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub stats: Option<DumpStats>,
    pub last_restore: Option<RestoreStats>,
}

pub fn read_meta(dir: &Path) -> anyhow::Result<Meta> {
    let p = dir.join(cns_engine::image::META_FILE);
    let text = fs::read_to_string(&p).map_err(|e| {
        crate::error::hinted(format!("{} is not a cns checkpoint ({}: {e})", dir.display(), p.display()), "dump it with `cns dump`, or import an archive with `cns import`")
    })?;
    serde_json::from_str(&text).map_err(|e| crate::error::hinted(format!("{} is corrupt: {e}", p.display()), "dump again"))
}

fn open_dir(p: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(p, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .with_context(|| format!("cannot open {}", p.display()))
}

/// Restore pre-flight facts only cns's metadata knows: CRIU and kernel
/// versions, published ports.
pub fn meta_findings(meta: &Meta, criu: Option<&cns_engine::Criu>, check_ports: bool) -> Vec<preflight::Finding> {
    use preflight::Finding;
    let mut out = Vec::new();
    if let Some(c) = criu {
        let dumped = cns_engine::CriuVersion::parse_version_output(&format!("Version: {}", meta.criu_version));
        match dumped {
            Some(d) if c.version < d => out.push(Finding::new(
                Severity::Warning,
                "criu-version",
                format!("dumped by CRIU {d}, this is {}", c.version),
                "an older CRIU may not read images of a newer one",
                "install the CRIU that dumped it (scripts/install-criu)",
            )),
            _ => out.push(Finding::new(Severity::Ok, "criu-version", format!("dumped by CRIU {}", meta.criu_version), "this CRIU reads the image", "")),
        }
    }
    let kernel = cns_engine::criu::kernel_release();
    if kernel != meta.kernel {
        out.push(Finding::new(
            Severity::Warning,
            "kernel",
            format!("dumped on {}, running {kernel}", meta.kernel),
            "a different kernel can lack features the image uses",
            "run `cns check` here; restore fails clearly if a feature is missing",
        ));
    }
    if check_ports {
        for &(host, _) in &meta.workload.net.publish {
            if std::net::TcpListener::bind(("0.0.0.0", host)).is_err() {
                out.push(Finding::new(Severity::Blocker, "port", format!("host port {host}"), "a published port is taken on this host", "stop what listens there, or restore a copy with --as (copies publish nothing)"));
            }
        }
    }
    out
}

/// Explains a CRIU failure from its log, one sentence and the fix.
fn criu_failure(op: &str, err: cns_engine::RpcError, log: &Path) -> anyhow::Error {
    let text = fs::read_to_string(log).unwrap_or_default();
    if let Some(e) = cns_engine::explain_log(&text) {
        return crate::error::hinted(format!("{op} failed: {} (CRIU log: {})", e.message, log.display()), e.hint);
    }
    let first = cns_engine::explain::first_error(&text).unwrap_or_else(|| err.to_string());
    crate::error::hinted(format!("{op} failed: {first}"), format!("see the CRIU log {}", log.display()))
}

fn criu_stderr(dir: &Path, name: &str) -> Option<fs::File> {
    fs::File::create(dir.join(name)).ok()
}

fn fmt_us(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

pub fn dump(ctx: &Ctx, args: DumpArgs) -> anyhow::Result<i32> {
    store::validate_name(&args.name)?;
    if let Some(pid) = args.pid {
        return adopt::dump_host_tree(ctx, &args, pid);
    }
    ctx.require_root()?;
    let criu = ctx.criu()?;
    let l = ctx.store.try_lock(&args.name)?;
    let mut w = l.load()?;
    let pid = crate::lifecycle::running_pid(&w)?;
    let images = args.images.clone().unwrap_or_else(|| ctx.images_root().join(&w.name));
    let mut flags = args.criu.clone();
    flags.tcp_established |= ctx.config.tcp_established;
    flags.file_locks |= ctx.config.file_locks;
    if args.print_criu_cmdline {
        let mut line = dump_cmdline(&criu.path, pid, &images, &flags, args.leave_running, &dump_externals(&w));
        if args.tcp_skip_in_flight {
            line.push_str(" --tcp-skip-in-flight");
        }
        println!("{line}");
        return Ok(0);
    }
    let mut skip_in_flight = args.tcp_skip_in_flight;
    let mut memory = 0;
    let parent = images.parent().unwrap_or(Path::new("/")).to_path_buf();
    store::mkdir_private(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    if !args.no_preflight {
        let needs = preflight::check_dump(pid, flags.shell_job, &parent);
        for f in &needs.findings {
            match f.severity {
                Severity::Blocker => bail_hint!(f.fix.clone(), "cannot dump {}: {} ({})", w.name, f.message, f.object),
                Severity::Warning if !ctx.quiet => eprintln!("cns: note: {}: {}", f.message, f.fix),
                _ => {}
            }
        }
        flags.tcp_established |= needs.tcp_established;
        flags.file_locks |= needs.file_locks;
        flags.ext_unix_sk |= needs.ext_unix_sk;
        skip_in_flight |= needs.tcp_skip_in_flight;
        memory = needs.memory_bytes;
    }
    // Dump into a staging directory: a failed dump never damages the last good checkpoint.
    let staging = parent.join(format!(".{}.dump-{}", images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    store::mkdir_private(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let dir = open_dir(&staging)?;
    let req = DumpRequest {
        pid,
        images_dir: Some(dir.as_fd()),
        work_dir: Some(dir.as_fd()),
        log_file: cns_engine::image::DUMP_LOG.into(),
        leave_running: args.leave_running,
        tcp_established: flags.tcp_established,
        tcp_skip_in_flight: skip_in_flight,
        ext_unix_sk: flags.ext_unix_sk,
        file_locks: flags.file_locks,
        shell_job: flags.shell_job,
        link_remap: false,
        external: dump_externals(&w),
        notify: true,
    };
    let mut meta = Meta {
        workload: w.clone(),
        cns_version: env!("CARGO_PKG_VERSION").into(),
        criu_version: criu.version.to_string(),
        kernel: cns_engine::criu::kernel_release(),
        dumped_at: store::now(),
        tcp_established: flags.tcp_established,
        file_locks: flags.file_locks,
        ext_unix_sk: flags.ext_unix_sk,
        shell_job: flags.shell_job,
        stats: None,
        last_restore: None,
    };
    let old = parent.join(format!(".{}.old-{}", images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    let mut marker = recovery::Marker::new(false);
    marker.dump = Some(recovery::DumpMark { images: images.clone(), old: None, committed: false });
    recovery::begin(&l.dir, &marker)?;
    let progress = Progress::new(ctx, format!("dumping {}", w.name));
    progress.stage(&format!("freezing the tree (pid {pid})"));
    tracing::debug!("pre-flight done, starting criu");
    let mut committed = false;
    let swrk = Swrk::start(&criu.path, &[], criu_stderr(&staging, "criu-stderr.log"))?;
    recovery::set_criu(&l.dir, swrk.pid() as i32);
    let result = swrk.dump(&req, &mut |n: &Notify| {
        tracing::debug!(step = %n.script, "dump step");
        match n.script.as_str() {
            "pre-dump" => progress.stage(&format!("frozen, dumping memory ({} MiB)", memory >> 20)),
            "post-dump" => {
                // The images are complete and the tree not yet killed: commit
                // the checkpoint now, so a cns killed from here on loses nothing.
                progress.stage("writing the images");
                match commit_checkpoint(&meta, &staging, &images, &old, &l.dir) {
                    Ok(()) => committed = true,
                    Err(e) => return NotifyAction::Abort(format!("cannot commit the checkpoint: {e:#}")),
                }
            }
            _ => {}
        }
        NotifyAction::Continue
    });
    progress.done();
    if let Err(e) = result {
        let failed_log = parent.join(format!("{}.failed-dump.log", w.name));
        if committed {
            // CRIU failed after the images were complete; it resumed the tree.
            // Put the previous checkpoint back.
            let _ = fs::rename(images.join(cns_engine::image::DUMP_LOG), &failed_log);
            let _ = fs::remove_dir_all(&images);
            if old.exists() {
                let _ = fs::rename(&old, &images);
            }
        } else {
            let _ = fs::rename(staging.join(cns_engine::image::DUMP_LOG), &failed_log);
        }
        let _ = fs::remove_dir_all(&staging);
        recovery::end(&l.dir);
        return Err(criu_failure("dump", e, &failed_log));
    }
    if !committed {
        // A CRIU without the post-dump notification: commit now.
        commit_checkpoint(&meta, &staging, &images, &old, &l.dir)?;
    }
    tracing::debug!("criu finished the dump");
    let _ = fs::remove_dir_all(&old);
    let stats = ImageDir::new(&images).dump_stats().ok();
    meta.stats = stats.clone();
    store::write_atomic(&images.join(cns_engine::image::META_FILE), &serde_json::to_vec_pretty(&meta)?, 0o600)?;
    w.images = Some(images.clone());
    if !args.leave_running {
        w.state = State::Dumped;
        w.pid = None;
        w.pid_start = None;
        // The host end of the veth goes with the dumped netns, which the
        // kernel frees asynchronously; deleting it here would cost the dump
        // ~30 ms of RTNL. A restore deletes a lingering one first.
    }
    l.save(&w)?;
    recovery::end(&l.dir);
    drop(l);
    tracing::debug!("checkpoint in place, record saved");
    if !args.leave_running {
        // The monitor records the end of the old tree and exits, freeing
        // published ports; an immediate restore must find them free.
        if let Some(shim) = w.shim_pid.filter(|&p| p != std::process::id() as i32) {
            monitor::wait_gone(shim, w.shim_start, std::time::Duration::from_secs(5));
            tracing::debug!("the old monitor is gone");
        }
    }
    print_dump_stats(ctx, &w.name, &images, stats.as_ref(), args.json);
    Ok(0)
}

/// Moves a complete dump from `staging` to `images`, setting the previous
/// checkpoint aside at `old` (removed when the dump ends, put back if it
/// fails), and marks the dump committed for the recovery sweep.
fn commit_checkpoint(meta: &Meta, staging: &Path, images: &Path, old: &Path, state_dir: &Path) -> anyhow::Result<()> {
    store::write_atomic(&staging.join(cns_engine::image::META_FILE), &serde_json::to_vec_pretty(meta)?, 0o600)?;
    let _ = fs::remove_dir_all(old);
    let had_old = images.exists();
    if had_old {
        fs::rename(images, old).with_context(|| format!("cannot set the old checkpoint {} aside", images.display()))?;
        recovery::update(state_dir, |m| {
            if let Some(d) = m.dump.as_mut() {
                d.old = Some(old.to_path_buf());
            }
        });
    }
    if let Err(e) = fs::rename(staging, images) {
        if had_old {
            let _ = fs::rename(old, images);
        }
        return Err(anyhow::Error::new(e).context(format!("cannot move the checkpoint to {}", images.display())));
    }
    recovery::update(state_dir, |m| {
        if let Some(d) = m.dump.as_mut() {
            d.committed = true;
        }
    });
    Ok(())
}

/// Stages of a long dump or restore on a terminal: one line, rewritten in
/// place, erased when done. Silent when stderr is not a terminal or -q.
struct Progress {
    on: bool,
    what: String,
}

impl Progress {
    fn new(ctx: &Ctx, what: String) -> Progress {
        use std::io::IsTerminal;
        Progress { on: !ctx.quiet && std::io::stderr().is_terminal(), what }
    }

    fn stage(&self, stage: &str) {
        if self.on {
            eprint!("\r\x1b[Kcns: {}: {stage}...", self.what);
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}

fn print_dump_stats(ctx: &Ctx, name: &str, images: &Path, s: Option<&DumpStats>, json: bool) {
    if json {
        let v = serde_json::json!({"name": name, "images": images, "stats": s});
        println!("{v}");
        return;
    }
    if ctx.quiet {
        return;
    }
    match s {
        Some(s) => println!(
            "dumped {name} to {}: freezing {}, frozen {}, memory dump {}, memory write {}, {} pages written, image {:.1} MiB",
            images.display(),
            fmt_us(s.freezing_time_us),
            fmt_us(s.frozen_time_us),
            fmt_us(s.memdump_time_us),
            fmt_us(s.memwrite_time_us),
            s.pages_written,
            s.image_bytes as f64 / (1 << 20) as f64
        ),
        None => println!("dumped {name} to {}", images.display()),
    }
}

/// The key of the log's bind mount in CRIU's external-mount map.
const STDIO_KEY: &str = "cns-stdio";

/// `--external` entries of a dump: the log's bind mount.
fn dump_externals(w: &Workload) -> Vec<String> {
    w.stdio_mount.iter().map(|m| format!("mnt[{}]:{STDIO_KEY}", m.display())).collect()
}

/// `--external` entries of a restore: the new host veth, and the log's bind
/// mount pointed at this copy's own log file.
fn restore_externals(p: &Plan, log: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(h) = &p.net.host_if {
        v.push(format!("veth[{}]:{h}", cns_netns::INNER_IF));
    }
    if p.meta.workload.stdio_mount.is_some() {
        v.push(format!("mnt[{STDIO_KEY}]:{}", log.display()));
    }
    v
}

fn dump_cmdline(criu: &Path, pid: i32, images: &Path, f: &CriuFlags, leave_running: bool, externals: &[String]) -> String {
    let mut v = vec![criu.display().to_string(), "dump".into(), "-t".into(), pid.to_string(), "-D".into(), images.display().to_string()];
    v.extend(["-o", "dump.log", "-v4", "--network-lock", "nftables", "--manage-cgroups=ignore"].map(String::from));
    for e in externals {
        v.push("--external".into());
        v.push(e.clone());
    }
    flag_args(&mut v, f);
    if leave_running {
        v.push("--leave-running".into());
    }
    v.join(" ")
}

fn flag_args(v: &mut Vec<String>, f: &CriuFlags) {
    for (on, s) in [(f.tcp_established, "--tcp-established"), (f.file_locks, "--file-locks"), (f.ext_unix_sk, "--ext-unix-sk"), (f.shell_job, "--shell-job")] {
        if on {
            v.push(s.into());
        }
    }
}

/// The restore plan: everything decided before CRIU starts.
#[derive(Debug, Clone)]
struct Plan {
    new_name: String,
    images: PathBuf,
    meta: Meta,
    flags: CriuFlags,
    net: store::NetConfig,
    log: PathBuf,
    /// The workload's state dir, where the recovery marker lives.
    state_dir: PathBuf,
}

pub fn restore(ctx: &Ctx, args: RestoreArgs) -> anyhow::Result<i32> {
    store::validate_name(&args.name)?;
    if let Some(n) = &args.as_name {
        store::validate_name(n)?;
    }
    crate::run::check_pidfile(&args.pidfile)?;
    ctx.require_root()?;
    let new_name = args.as_name.clone().unwrap_or_else(|| args.name.clone());
    if ctx.store.get(&new_name).is_ok_and(|w| w.live_state() == State::Running) {
        bail_hint!(format!("dump or stop it first, or restore a copy with --as NEW"), "workload {new_name} is running");
    }
    let images = match &args.images {
        Some(d) => d.clone(),
        None => match ctx.store.get(&args.name).ok().and_then(|w| w.images) {
            Some(p) => p,
            None => ctx.images_root().join(&args.name),
        },
    };
    let img = ImageDir::new(&images);
    img.validate().map_err(|e| crate::error::hinted(format!("cannot restore {}: {e}", args.name), "dump it again, or point --images at a complete checkpoint"))?;
    let meta = read_meta(&images)?;
    if meta.workload.name != args.name && args.as_name.is_none() && args.images.is_some() {
        bail_hint!(format!("restore it with --as {}, or under its own name {}", args.name, meta.workload.name), "the images in {} belong to workload {}, not {}", images.display(), meta.workload.name, args.name);
    }
    let criu = ctx.criu()?;
    let mut flags = args.criu.clone();
    flags.tcp_established |= meta.tcp_established;
    flags.file_locks |= meta.file_locks;
    flags.ext_unix_sk |= meta.ext_unix_sk;
    flags.shell_job |= meta.shell_job;

    // Lock or create the target record.
    let existing = ctx.store.exists(&new_name);
    let locked = if existing { ctx.store.try_lock(&new_name)? } else { ctx.store.create(&new_name)? };
    let mut record = if existing {
        let w = locked.load()?;
        match w.live_state() {
            State::Running => bail_hint!(format!("dump or stop it first, or restore a copy with --as NEW"), "workload {new_name} is running"),
            // A workload that exited (or crashed) rolls back to its own
            // checkpoint in place; another name is not overwritten.
            State::Exited | State::Created if w.name != meta.workload.name => {
                bail_hint!(format!("remove it with `cns rm {new_name}` or restore under another name with --as"), "a workload named {new_name} already exists ({})", w.live_state())
            }
            _ => w,
        }
    } else {
        let mut w = meta.workload.clone();
        w.name = new_name.clone();
        w
    };
    let in_place = new_name == meta.workload.name;
    let mut rollback = network::Rollback::new(ctx, &new_name);
    let mut marker = recovery::Marker::new(!existing);
    let res = (|| -> anyhow::Result<(i32, i32, Option<RestoreStats>)> {
        if !args.print_criu_cmdline {
            recovery::begin(&locked.dir, &marker)?;
        }
        // Network: in place keeps address and host name; a copy gets its own.
        let mut net = meta.workload.net.clone();
        if net.mode == "veth" {
            net.host_if = Some(cns_netns::host_veth_name(&new_name));
            if (in_place && !args.new_ip) || args.keep_ip {
                if let Some(a) = &net.addrs {
                    let store = network::lease_store(ctx);
                    store.take(&new_name, a).map_err(|e| {
                        let hint = if in_place { "restore it with --new-ip (established connections are lost)" } else { "restore the copy without --keep-ip" };
                        crate::error::hinted(e.to_string(), hint)
                    })?;
                    if !in_place {
                        rollback.lease = Some(*a);
                    }
                }
            } else {
                let plan = network::NetPlan { mode: "veth".into(), ip: None, publish: vec![] };
                net.addrs = network::lease(ctx, &new_name, &plan)?;
                rollback.lease = net.addrs;
                net.publish.clear();
            }
            if let Some(h) = &net.host_if {
                if let Ok(nl) = cns_netns::Netlink::new() {
                    if in_place {
                        let _ = nl.delete_link(h);
                    } else if nl.link_index(h)?.is_some() {
                        bail_hint!(format!("remove the interface or the workload that owns it"), "host interface {h} already exists");
                    }
                }
            }
        }
        let log = ctx.store.paths.log_file(&new_name);
        // A failed restore leaves no veth, in place or not (CRIU's own
        // cleanup is asynchronous: the netns dies after the restorees).
        rollback.host_if = net.host_if.clone();
        marker.lease = if in_place { None } else { rollback.lease };
        marker.host_if = net.host_if.clone();
        marker.log = (!in_place).then(|| log.clone());
        let plan = Plan {
            new_name: new_name.clone(),
            images: images.clone(),
            meta: meta.clone(),
            flags: flags.clone(),
            net,
            log: log.clone(),
            state_dir: locked.dir.clone(),
        };
        if args.print_criu_cmdline {
            println!("{}", restore_cmdline(&criu.path, &plan, args.pidfile.as_deref()));
            return Ok((0, 0, None));
        }
        if let Some(m) = &meta.workload.stdio_mount {
            // The log's mountpoint must exist in the restored root (the
            // host's /) for pre-flight and for CRIU.
            drop(store::create_private_file(m, false)?);
        }
        if !args.no_preflight {
            let links = cns_netns::Netlink::new().and_then(|n| n.link_names()).unwrap_or_default();
            let host_if = if in_place { None } else { plan.net.host_if.as_deref() };
            for f in preflight::check_image(&img, args.memory_limit.map(|m| m << 20), host_if, &links) {
                if f.severity == Severity::Blocker {
                    bail_hint!(f.fix.clone(), "cannot restore {}: {} ({})", args.name, f.message, f.object);
                }
            }
        }
        recovery::begin(&locked.dir, &marker)?;
        let mut published = Some(crate::publish::bind(&plan.net)?);
        // The copy's log must exist: CRIU bind-mounts it as the workload's stdio.
        drop(store::create_private_file(&log, !in_place)?);
        record.net = plan.net.clone();
        record.log = log.clone();
        let work = || restore_now(&criu.path, &plan);
        let progress = Progress::new(ctx, format!("restoring {new_name}"));
        progress.stage(&format!("restoring {} MiB of memory", img.page_bytes().unwrap_or(0) >> 20));
        let mut shim = std::process::id() as i32;
        let pid = if args.detach {
            let mut w = || {
                work().map(|(pid, _)| {
                    if let Some(p) = published.take() {
                        p.serve(&plan.net);
                    }
                    pid
                }).map_err(|e| {
                    let (m, h) = crate::error::render(&e);
                    (m, h.unwrap_or_default(), crate::error::status_of(&e))
                })
            };
            let (report, monitor) = monitor::spawn_detached(&ctx.store, &new_name, locked.lock_fd(), &mut w)?;
            shim = monitor;
            match report {
                Report::Started { pid } => pid,
                Report::Failed { message, hint, status } => return Err(crate::error::hinted_status(message, hint, status)),
            }
        } else {
            let (pid, _) = work()?;
            if let Some(p) = published.take() {
                p.serve(&plan.net);
            }
            pid
        };
        Ok((pid, shim, ImageDir::new(&images).restore_stats().ok()))
    })();
    let (pid, shim, stats) = match res {
        Ok(v) => v,
        Err(e) => {
            rollback.run();
            recovery::end(&locked.dir);
            if !existing {
                let _ = ctx.store.remove(locked);
                if !in_place {
                    let _ = fs::remove_file(ctx.store.paths.log_file(&new_name));
                }
            }
            return Err(e);
        }
    };
    if args.print_criu_cmdline {
        if !existing {
            let _ = ctx.store.remove(locked);
        }
        return Ok(0);
    }
    record.name = new_name.clone();
    record.state = State::Running;
    record.pid = Some(pid);
    record.pid_start = store::process_start(pid);
    record.shim_pid = Some(shim);
    record.shim_start = store::process_start(shim);
    record.exit_code = None;
    record.images = Some(images.clone());
    record.restored_from = Some(meta.workload.name.clone());
    record.namespaces = crate::spawn::namespace_inodes(pid);
    locked.save(&record)?;
    recovery::end(&locked.dir);
    if stats.is_some() {
        // The checkpoint remembers its last restore (for `cns inspect`).
        let mut m = meta.clone();
        m.last_restore = stats.clone();
        if let Ok(text) = serde_json::to_vec_pretty(&m) {
            let _ = store::write_atomic(&images.join(cns_engine::image::META_FILE), &text, 0o600);
        }
    }
    if let Some(p) = &args.pidfile {
        // An adopted tree's root is a child of the pid namespace's init.
        let root = if meta.workload.adopted { first_child(pid).unwrap_or(pid) } else { pid };
        crate::run::write_pidfile(p, root)?;
    }
    drop(locked);
    if args.json {
        println!("{}", serde_json::json!({"name": new_name, "pid": pid, "stats": stats}));
    } else if !ctx.quiet {
        match &stats {
            Some(s) => println!("restored {new_name} (pid {pid}): forking {}, restore {}, {} pages restored", fmt_us(s.forking_time_us), fmt_us(s.restore_time_us), s.pages_restored),
            None => println!("restored {new_name} (pid {pid})"),
        }
    }
    if args.detach {
        return Ok(0);
    }
    let code = monitor::foreground(pid, &record.log, fs::metadata(&record.log).map(|m| m.len()).unwrap_or(0));
    monitor::record_exit(&ctx.store, &new_name, pid, code);
    Ok(code)
}

fn restore_cmdline(criu: &Path, p: &Plan, pidfile: Option<&Path>) -> String {
    let mut v = vec![criu.display().to_string(), "restore".into(), "-D".into(), p.images.display().to_string()];
    v.extend(["-o", "restore.log", "-v4", "--root", "/", "--restore-detached", "--network-lock", "nftables", "--manage-cgroups=ignore"].map(String::from));
    if let Some(pf) = pidfile {
        v.push("--pidfile".into());
        v.push(pf.display().to_string());
    }
    for e in restore_externals(p, &p.log) {
        v.push("--external".into());
        v.push(e);
    }
    flag_args(&mut v, &p.flags);
    v.join(" ")
}

fn first_child(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Runs the CRIU restore; the restored root becomes a child of the caller.
fn restore_now(criu: &Path, p: &Plan) -> anyhow::Result<(i32, ())> {
    if p.meta.workload.adopted {
        return adopt::restore_host_tree(criu, p.images.as_path(), &p.flags).map(|pid| (pid, ()));
    }
    let dir = open_dir(&p.images)?;
    let log_name = format!("restore-{}.log", p.new_name);
    let log_path = p.images.join(&log_name);
    let req = RestoreRequest {
        images_dir: Some(dir.as_fd()),
        work_dir: Some(dir.as_fd()),
        log_file: log_name,
        tcp_established: p.flags.tcp_established,
        ext_unix_sk: p.flags.ext_unix_sk,
        file_locks: p.flags.file_locks,
        shell_job: p.flags.shell_job,
        link_remap: false,
        sibling: true,
        external: restore_externals(p, &p.log),
        inherit_fd: vec![],
        notify: true,
    };
    let net = p.net.clone();
    let move_address = net.addrs != p.meta.workload.net.addrs;
    let mut hook_err: Option<String> = None;
    let swrk = Swrk::start(criu, &[], criu_stderr(&p.images, &format!("criu-stderr-{}.log", p.new_name)))?;
    recovery::set_criu(&p.state_dir, swrk.pid() as i32);
    let res = swrk.restore(&req, &mut |n: &Notify| {
        if n.script == "setup-namespaces" {
            if let Some(pid) = n.pid {
                recovery::set_root(&p.state_dir, pid);
            }
        }
        if n.script != "post-restore" {
            return NotifyAction::Continue;
        }
        let (Some(host_if), Some(addrs)) = (&net.host_if, &net.addrs) else { return NotifyAction::Continue };
        let r = (|| -> Result<(), cns_netns::NetError> {
            let nl = cns_netns::Netlink::new()?;
            cns_netns::configure_host_end(&nl, host_if, addrs)?;
            if move_address {
                if let Some(pid) = n.pid {
                    let inner = cns_netns::Netlink::for_pid(pid)?;
                    cns_netns::configure_inside(&inner, Some(addrs))?;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => NotifyAction::Continue,
            Err(e) => {
                hook_err = Some(e.to_string());
                NotifyAction::Abort(format!("network setup: {e}"))
            }
        }
    });
    match res {
        Ok(pid) => Ok((pid, ())),
        Err(e) => {
            if let Some(h) = hook_err {
                return Err(crate::error::hinted(format!("restore failed while configuring the network: {h}"), format!("see {}", log_path.display())));
            }
            Err(criu_failure("restore", e, &log_path))
        }
    }
}

mod adopt {
    //! Host process trees that cns did not start (criu-ns's use case):
    //! dumped by host PID, restored inside a fresh pid + mount namespace
    //! whose init runs CRIU, so the tree gets its original PIDs back.

    use super::*;

    pub fn dump_host_tree(ctx: &Ctx, args: &DumpArgs, pid: i32) -> anyhow::Result<i32> {
        ctx.require_root()?;
        if pid <= 1 || pid == std::process::id() as i32 {
            bail_hint!("give the PID of the tree's root process", "cannot adopt pid {pid}");
        }
        if store::process_start(pid).is_none() {
            bail_hint!("check the PID with ps", "no process with pid {pid}");
        }
        let criu = ctx.criu()?;
        let images = args.images.clone().unwrap_or_else(|| ctx.images_root().join(&args.name));
        if args.print_criu_cmdline {
            println!("{}", dump_cmdline(&criu.path, pid, &images, &args.criu, args.leave_running, &[]));
            return Ok(0);
        }
        let l = ctx.store.create(&args.name)?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command: Vec<String> = cmdline.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        let w = Workload {
            name: args.name.clone(),
            command,
            env: vec![],
            cwd: None,
            hostname: String::new(),
            created: store::now(),
            state: State::Running,
            pid: Some(pid),
            pid_start: store::process_start(pid),
            shim_pid: None,
            shim_start: None,
            exit_code: None,
            log: ctx.store.paths.log_file(&args.name),
            stdio_mount: None,
            net: store::NetConfig { mode: "host".into(), host_if: None, addrs: None, publish: vec![] },
            cap_drop: vec![],
            seccomp: None,
            images: None,
            adopted: true,
            restored_from: None,
            namespaces: crate::spawn::namespace_inodes(pid),
        };
        l.save(&w)?;
        drop(l);
        let mut a = DumpArgs { name: args.name.clone(), pid: None, leave_running: args.leave_running, tcp_skip_in_flight: args.tcp_skip_in_flight, images: args.images.clone(), criu: args.criu.clone(), no_preflight: args.no_preflight, print_criu_cmdline: false, json: args.json };
        a.pid = None;
        let r = super::dump(ctx, a);
        if r.is_err() {
            if let Ok(l) = ctx.store.lock(&args.name) {
                let _ = ctx.store.remove(l);
            }
        } else if args.leave_running {
            // The host tree is not ours to track: the checkpoint is what we keep.
            if let Ok(l) = ctx.store.lock(&args.name) {
                if let Ok(mut w) = l.load() {
                    w.state = State::Dumped;
                    w.pid = None;
                    let _ = l.save(&w);
                }
            }
        }
        r
    }

    /// Restores an adopted tree: a fresh pid + mount namespace whose init
    /// (PID 1) runs CRIU; the restored root becomes init's child. Returns
    /// the host PID of the restored root.
    pub fn restore_host_tree(criu: &Path, images: &Path, flags: &CriuFlags) -> anyhow::Result<i32> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let flags_ns = nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS;
        let raw = flags_ns.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
        // SAFETY: fork-like clone (no CLONE_VM, NULL stack) in a single-threaded process.
        let ret = unsafe { libc::syscall(libc::SYS_clone, raw, 0usize, 0usize, 0usize, 0usize) };
        if ret < 0 {
            return Err(anyhow::anyhow!("cannot create a pid namespace: {}", nix::Error::last()));
        }
        if ret == 0 {
            drop(r);
            // Dies with cns until the restore is reported (recovery.rs).
            // SAFETY: prctl on ourselves.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let result = (|| -> anyhow::Result<i32> {
                nix::unistd::setsid()?;
                cns_mounts::make_rprivate()?;
                cns_mounts::mount_proc()?;
                let dir = open_dir(images)?;
                let req = RestoreRequest {
                    images_dir: Some(dir.as_fd()),
                    work_dir: Some(dir.as_fd()),
                    log_file: "restore.log".into(),
                    tcp_established: flags.tcp_established,
                    ext_unix_sk: flags.ext_unix_sk,
                    file_locks: flags.file_locks,
                    shell_job: flags.shell_job,
                    sibling: true,
                    ..Default::default()
                };
                let swrk = Swrk::start(criu, &[], criu_stderr(images, "criu-stderr-restore.log"))?;
                swrk.restore(&req, &mut |_| NotifyAction::Continue).map_err(|e| criu_failure("restore", e, &images.join("restore.log")))
            })();
            let msg = match &result {
                Ok(pid) => format!("ok {pid}"),
                Err(e) => {
                    let (m, h) = crate::error::render(e);
                    format!("err {m}\n{}", h.unwrap_or_default())
                }
            };
            // SAFETY: prctl on ourselves: the pid ns init outlives cns from here.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
            let mut f = fs::File::from(w);
            let _ = std::io::Write::write_all(&mut f, msg.as_bytes());
            drop(f);
            let code = match result {
                Ok(pid) => {
                    crate::spawn::close_fds_from(3, false);
                    crate::spawn::forwarded_signals().thread_block().ok();
                    crate::spawn::init_loop(nix::unistd::Pid::from_raw(pid))
                }
                Err(_) => 1,
            };
            // SAFETY: end of the namespace's init.
            unsafe { libc::_exit(code) }
        }
        drop(w);
        let init = ret as i32;
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut fs::File::from(r), &mut text);
        if let Some(rest) = text.strip_prefix("err ") {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init), None);
            let (m, h) = rest.split_once('\n').unwrap_or((rest, ""));
            return Err(crate::error::hinted(m.to_string(), h.to_string()));
        }
        if !text.starts_with("ok ") {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init), None);
            anyhow::bail!("the restore's namespace init died");
        }
        // The init is what the monitor waits for; its exit is the tree's.
        Ok(init)
    }
}
