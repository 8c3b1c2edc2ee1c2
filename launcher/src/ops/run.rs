//! `run`: validate everything, then start the workload in fresh
//! namespaces (process/spawn.rs), under a detached monitor or as the
//! caller's child.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::net::{self, NetPlan, Rollback};
use crate::process::monitor;
use crate::process::security::{self, CapDrop};
use crate::process::spawn::{self, Spec};
use crate::recovery::{self, Marker};
use crate::runtime::Runtime;
use crate::workload::{Locked, NetConfig, NetMode, State, Workload, generate_name, validate_name};

/// What to start.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Workload name (default: generated).
    pub name: Option<String>,
    pub command: Vec<String>,
    /// `K=V` pairs.
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Hostname inside (default: the name).
    pub hostname: Option<String>,
    /// Capabilities to drop (`CAP_NET_RAW`, `net_raw`, `all`).
    pub cap_drop: Vec<String>,
    /// A seccompiler JSON filter.
    pub seccomp: Option<PathBuf>,
    pub net: NetMode,
    /// `A.B.C.D[/30|/31]`.
    pub ip: Option<String>,
    /// `HOSTPORT:PORT`.
    pub publish: Vec<String>,
    /// Start under a detached monitor instead of as the caller's child.
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    /// Root file system, bind and tmpfs mounts, read-only root.
    pub confine: crate::confine::ConfineOptions,
    /// Keep the veth workload from reaching past the host (no NAT).
    pub no_outbound: bool,
}

impl RunOptions {
    /// Options for `command` with every default.
    pub fn new(command: Vec<String>) -> RunOptions {
        RunOptions {
            name: None,
            command,
            env: vec![],
            cwd: None,
            hostname: None,
            cap_drop: vec![],
            seccomp: None,
            net: NetMode::Veth,
            ip: None,
            publish: vec![],
            detach: false,
            pidfile: None,
            confine: Default::default(),
            no_outbound: false,
        }
    }
}

/// A started workload.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
}

/// Parses `K=V` pairs.
pub fn parse_env(values: &[String]) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::invalid(format!("invalid --env {kv:?}"), "use --env NAME=VALUE")),
        })
        .collect()
}

/// The options, validated before anything changes on the machine.
struct Checked {
    name: String,
    env: Vec<(String, String)>,
    hostname: String,
    cap_drop: CapDrop,
    seccomp: Option<seccompiler::BpfProgram>,
    net: NetPlan,
    confine: crate::confine::Confinement,
    /// A resolv.conf to write before the start (see check).
    resolv: Option<(PathBuf, String)>,
}

fn check(opts: &RunOptions, lib: &std::path::Path, own: &[PathBuf]) -> Result<Checked> {
    let name = match &opts.name {
        Some(n) => {
            validate_name(n)?;
            n.clone()
        }
        None => generate_name(),
    };
    if opts.command.is_empty() {
        return Err(Error::invalid("no command to run", "give it after --, e.g. cns run -- sleep 10"));
    }
    let env = parse_env(&opts.env)?;
    let cap_drop = security::parse_cap_drop(&opts.cap_drop)?;
    let seccomp = opts.seccomp.as_deref().map(security::compile_seccomp).transpose()?;
    let hostname = opts.hostname.clone().unwrap_or_else(|| name.clone());
    if hostname.is_empty() || hostname.len() > 64 {
        return Err(Error::invalid(format!("invalid hostname {hostname:?}"), "use 1-64 characters"));
    }
    if let Some(cwd) = opts.cwd.as_ref().filter(|c| !c.is_absolute()) {
        return Err(Error::invalid(format!("--cwd {} is not absolute", cwd.display()), "give an absolute path"));
    }
    let net = net::plan(opts.net, opts.ip.as_deref(), &opts.publish, opts.no_outbound)?;
    crate::files::check_pidfile(opts.pidfile.as_deref())?;
    let mut confine = crate::confine::check(&opts.confine, own)?;
    // A host whose resolver is a loopback stub: the workload gets the
    // stub's upstream servers, bind-mounted read-only (dumped and restored
    // as any bind).
    let resolv = (net.outbound && confine.rootfs.is_none()).then(|| crate::confine::rootfs::host_root_resolv_conf(lib)).flatten();
    if let Some((path, _)) = &resolv {
        if !confine.mounts.iter().any(|m| m.dst() == std::path::Path::new("/etc/resolv.conf")) {
            confine.mounts.push(cns_mounts::confine::Mount::Bind { src: path.clone(), dst: "/etc/resolv.conf".into(), read_only: true });
        }
    }
    Ok(Checked { name, env, hostname, cap_drop, seccomp, net, confine, resolv })
}

/// Starts a workload.
pub fn run(rt: &Runtime, opts: &RunOptions) -> Result<Started> {
    let c = check(opts, &rt.store.paths.lib, &rt.own_dirs())?;
    rt.require_root()?;
    let locked = rt.store.create(&c.name)?;
    let mut rollback = Rollback::new(rt, &c.name);
    match start_locked(rt, opts, &c, &locked, &mut rollback) {
        Ok(s) => Ok(s),
        Err(e) => {
            rollback.run();
            crate::confine::rootfs::remove(&rt.store.paths.lib, &c.name);
            if !c.confine.limits.is_empty() {
                crate::confine::cgroup::remove(&c.name);
            }
            let _ = rt.store.remove(locked);
            let _ = std::fs::remove_file(rt.store.paths.log_file(&c.name));
            Err(e)
        }
    }
}

fn start_locked(rt: &Runtime, opts: &RunOptions, c: &Checked, locked: &Locked, rollback: &mut Rollback<'_>) -> Result<Started> {
    let name = &c.name;
    let mut marker = Marker::new(true);
    recovery::begin(&locked.dir, &marker)?;
    let lease = net::lease(rt, name, &c.net)?;
    rollback.lease = lease;
    let host_if = lease.as_ref().map(|_| net::host_veth_name(name));
    if let Some(h) = &host_if {
        net::check_host_if(rt, name, h)?;
    }
    // A failed run leaves no veth (the kernel's own cleanup of a dead
    // netns is asynchronous).
    rollback.host_if = host_if.clone();
    let log = rt.store.paths.log_file(name);
    marker.lease = lease;
    marker.host_if = host_if.clone();
    marker.log = Some(log.clone());
    recovery::begin(&locked.dir, &marker)?;
    crate::files::create_private_file(&log, true)?;
    let stdio_mount = prepare_root(rt, c)?;
    let mut w = Workload {
        name: name.clone(),
        command: opts.command.clone(),
        env: opts.env.clone(),
        cwd: opts.cwd.clone(),
        hostname: c.hostname.clone(),
        created: crate::files::now(),
        state: State::Created,
        pid: None,
        pid_start: None,
        shim_pid: None,
        shim_start: None,
        exit_code: None,
        log: log.clone(),
        stdio_mount: Some(stdio_mount.clone()),
        net: NetConfig { mode: c.net.mode, host_if, addrs: lease, publish: c.net.publish.clone(), outbound: c.net.outbound },
        cap_drop: opts.cap_drop.clone(),
        seccomp: opts.seccomp.clone(),
        images: None,
        adopted: false,
        restored_from: None,
        namespaces: Default::default(),
        confine: c.confine.clone(),
    };
    let spec = spec(rt, opts, c, &w, stdio_mount)?;
    let net_cfg = w.net.clone();
    // Recorded as running while the child sets itself up (its PID and
    // namespaces are final from the clone on; until then the recovery
    // marker alone says what to undo), not after CMD's exec: a short
    // command is then not kept waiting on cns's bookkeeping. The
    // nf_tables rules are made meanwhile too (CMD starts after them; their
    // first install registers the host's NAT and conntrack hooks, most of a
    // millisecond). A failure to start rolls all of it back as before.
    rollback.rules = true;
    let mut record = |pid: i32| -> Result<()> {
        w.mark_running(pid, std::process::id() as i32);
        locked.save(&w)?;
        recovery::set_root(&locked.dir, pid);
        Ok(())
    };
    let mut rules = |_: i32| net::install_rules(rt, name, &net_cfg);
    let (pid, monitor) = launch(rt, &spec, &net_cfg, &c.confine.limits, locked, opts.detach, &mut record, &mut rules)?;
    if w.pid != Some(pid) {
        // Detached: the monitor recorded it; this process learns it here.
        w.mark_running(pid, monitor);
    }
    let recorded = match &opts.pidfile {
        Some(p) => crate::files::write_pidfile(p, pid),
        None => Ok(()),
    };
    if let Err(e) = recorded {
        // Nothing runs that is not recorded: the caller rolls back the
        // address and the record, so the tree goes too.
        crate::process::kill_started(pid, w.pid_start);
        return Err(e);
    }
    recovery::end(&locked.dir);
    Ok(Started { name: name.clone(), pid, log })
}

/// Where the log is mounted inside: a workload with a root of its own
/// gets its layers (and a resolv.conf that works) and the log in its own
/// /dev; on the host's root, an empty file under cns's lib dir.
fn prepare_root(rt: &Runtime, c: &Checked) -> Result<PathBuf> {
    if let Some((path, text)) = &c.resolv {
        crate::confine::rootfs::write_resolv_conf(path, text)?;
    }
    let Some(lower) = &c.confine.rootfs else {
        let m = rt.store.paths.stdio_mount();
        drop(crate::files::create_private_file(&m, false)?);
        return Ok(m);
    };
    crate::confine::rootfs::create(&rt.store.paths.lib, &c.name)?;
    if c.net.outbound {
        crate::confine::rootfs::seed_resolv_conf(&crate::confine::rootfs::layers(&rt.store.paths.lib, &c.name, lower).upper)?;
    }
    Ok(PathBuf::from(crate::confine::LOG_IN_ROOTFS))
}

/// What the child needs to set the workload up.
fn spec(rt: &Runtime, opts: &RunOptions, c: &Checked, w: &Workload, stdio_mount: PathBuf) -> Result<Spec> {
    let own_root = c.confine.rootfs.is_some();
    let name = &c.name;
    let log = w.log.clone();
    // Every workload's PID 1 is cns's small static init (checked byte for
    // byte before use): it starts in a fraction of cns's own start-up and
    // runs in any root.
    let init = crate::confine::rootfs::static_init(&rt.store.paths.lib, &rt.store.paths.state)?;
    Ok(Spec {
        command: opts.command.clone(),
        env: c.env.clone(),
        cwd: opts.cwd.clone(),
        hostname: c.hostname.clone(),
        log: log.clone(),
        stdio_mount,
        cap_drop: c.cap_drop.clone(),
        seccomp: c.seccomp.clone(),
        net: w.net.addrs,
        init_binary: init,
        masked: masked_dirs(rt)?,
        mask: crate::confine::mask_dir(&rt.store.paths.lib)?,
        read_only: vec![rt.store.paths.lib.join("bin"), rt.config_dir()],
        layout: crate::confine::layout(&rt.store.paths.lib, name, &c.confine),
        user: c.confine.user.clone(),
        own_root,
    })
}

/// cns's directories a workload must not see: the state root, the images
/// root and the logs (each created first, so the mask has a place).
fn masked_dirs(rt: &Runtime) -> Result<Vec<PathBuf>> {
    use crate::error::Context;
    let dirs = vec![rt.store.paths.state.clone(), rt.images_root(), rt.store.paths.logs()];
    for d in &dirs {
        crate::files::mkdir_private(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(dirs)
}

/// Starts the tree, in a detached monitor or as the caller's child, and
/// serves its published ports. Returns the root and its monitor.
/// `record` runs once the child exists, `rules` while it sets up its
/// network (in the monitor when detached).
#[allow(clippy::too_many_arguments)]
fn launch(
    rt: &Runtime,
    spec: &Spec,
    net: &NetConfig,
    limits: &crate::confine::cgroup::Limits,
    locked: &Locked,
    detach: bool,
    record: &mut dyn FnMut(i32) -> Result<()>,
    rules: &mut dyn FnMut(i32) -> Result<()>,
) -> Result<(i32, i32)> {
    let mut published = Some(crate::net::publish::bind(net)?);
    // The cgroup before the child goes on: everything it forks is in it.
    let mut before_go = |pid: i32| {
        if !limits.is_empty() {
            crate::confine::cgroup::create(&locked.name, limits)?;
            crate::confine::cgroup::enter(&locked.name, pid)?;
        }
        net::attach(net, pid)
    };
    let mut work = || -> Result<i32> {
        let pid = spawn::start(spec, record, &mut before_go, rules)?;
        if let Some(p) = published.take() {
            p.serve(net);
        }
        Ok(pid)
    };
    let mut on_exit = |pid: i32, code: i32| rt.store.record_exit(&locked.name, pid, code);
    monitor::start(detach, locked.lock_fd(), ErrorKind::Start, &mut work, &mut on_exit)
}

/// Foreground: streams the workload's log to `out` from `offset`, forwards
/// signals to its root (a child of this process), records its exit and
/// returns its exit code.
pub fn wait_foreground(rt: &Runtime, name: &str, pid: i32, log: &std::path::Path, offset: u64, out: &mut dyn std::io::Write) -> i32 {
    let code = monitor::foreground(pid, log, offset, out);
    crate::checkpoint::lazy::finish_watchers();
    rt.store.record_exit(name, pid, code);
    code
}
