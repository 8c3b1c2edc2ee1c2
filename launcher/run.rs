//! `cns run`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::RunArgs;
use crate::monitor::{self, Report};
use crate::{network, recovery};
use crate::spawn::{self, Spec, SpawnError};
use crate::store::{self, NetConfig, State, Workload};
use crate::{Ctx, bail_hint};

/// Parses `K=V` pairs.
pub fn parse_env(values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => Ok((k.to_string(), v.to_string())),
            _ => Err(crate::error::hinted(format!("invalid --env {kv:?}"), "use --env NAME=VALUE")),
        })
        .collect()
}

/// Checks that a pidfile can be written (its directory exists).
pub fn check_pidfile(p: &Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(p) = p {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail_hint!("create the directory first or choose another path", "cannot write pidfile {}: directory {} does not exist", p.display(), dir.display());
        }
    }
    Ok(())
}

/// Writes a pidfile atomically.
pub fn write_pidfile(p: &Path, pid: i32) -> anyhow::Result<()> {
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
    store::write_atomic(&abs, format!("{pid}\n").as_bytes(), 0o644).with_context(|| format!("cannot write pidfile {}", p.display()))
}

pub fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<i32> {
    // Everything a user can get wrong is checked before any syscall that changes the machine.
    let name = match &args.name {
        Some(n) => {
            store::validate_name(n)?;
            n.clone()
        }
        None => store::generate_name(),
    };
    let env = parse_env(&args.env)?;
    let cap_drop = crate::security::parse_cap_drop(&args.cap_drop)?;
    let seccomp = args.seccomp.as_deref().map(crate::security::compile_seccomp).transpose()?;
    let hostname = args.hostname.clone().unwrap_or_else(|| name.clone());
    if hostname.is_empty() || hostname.len() > 64 {
        bail_hint!("use 1-64 characters", "invalid hostname {hostname:?}");
    }
    if let Some(cwd) = &args.cwd {
        if !cwd.is_absolute() {
            bail_hint!("give an absolute path", "--cwd {} is not absolute", cwd.display());
        }
    }
    let net_plan = network::plan(&args.net, args.ip.as_deref(), &args.publish)?;
    check_pidfile(&args.pidfile)?;
    ctx.require_root()?;

    let locked = ctx.store.create(&name)?;
    let mut rollback = network::Rollback::new(ctx, &name);
    let mut marker = recovery::Marker::new(true);
    let result = (|| -> anyhow::Result<i32> {
        recovery::begin(&locked.dir, &marker)?;
        let lease = network::lease(ctx, &name, &net_plan)?;
        rollback.lease = lease;
        let host_if = lease.as_ref().map(|_| cns_netns::host_veth_name(&name));
        let log = ctx.store.paths.log_file(&name);
        marker.lease = lease;
        marker.host_if = host_if.clone();
        marker.log = Some(log.clone());
        recovery::begin(&locked.dir, &marker)?;
        store::create_private_file(&log, true)?;
        let stdio_mount = ctx.store.paths.stdio_mount();
        drop(store::create_private_file(&stdio_mount, false)?);
        let mut w = Workload {
            name: name.clone(),
            command: args.command.clone(),
            env: args.env.clone(),
            cwd: args.cwd.clone(),
            hostname: hostname.clone(),
            created: store::now(),
            state: State::Created,
            pid: None,
            pid_start: None,
            shim_pid: None,
            shim_start: None,
            exit_code: None,
            log: log.clone(),
            stdio_mount: Some(stdio_mount.clone()),
            net: NetConfig { mode: net_plan.mode.clone(), host_if: host_if.clone(), addrs: lease, publish: net_plan.publish.clone() },
            cap_drop: args.cap_drop.clone(),
            seccomp: args.seccomp.clone(),
            images: None,
            adopted: false,
            restored_from: None,
            namespaces: Default::default(),
        };
        locked.save(&w)?;
        let spec = Spec {
            command: args.command.clone(),
            env,
            cwd: args.cwd.clone(),
            hostname,
            log: log.clone(),
            stdio_mount,
            cap_drop,
            seccomp,
            net: w.net.addrs,
            init_binary: spawn::init_binary(&ctx.store.paths.lib)?,
        };
        let net = w.net.clone();
        let mut published = Some(crate::publish::bind(&net)?);
        let mut before_go = |pid: i32| network::attach(&net, pid);
        let mut shim = std::process::id() as i32;
        let pid = if args.detach {
            let store = ctx.store.clone();
            let state_dir = locked.dir.clone();
            let mut work = || match spawn::start(&spec, &mut before_go) {
                Ok(pid) => {
                    recovery::set_root(&state_dir, pid);
                    if let Some(p) = published.take() {
                        p.serve(&net);
                    }
                    Ok(pid)
                }
                Err(e) => Err(spawn_failure(&e)),
            };
            let (report, monitor) = monitor::spawn_detached(&store, &name, locked.lock_fd(), &mut work)?;
            shim = monitor;
            match report {
                Report::Started { pid } => pid,
                Report::Failed { message, hint, status } => {
                    return Err(crate::error::hinted_status(message, hint, status));
                }
            }
        } else {
            let pid = spawn::start(&spec, &mut before_go).map_err(|e| {
                let (m, h, s) = spawn_failure(&e);
                crate::error::hinted_status(m, h, s)
            })?;
            recovery::set_root(&locked.dir, pid);
            if let Some(p) = published.take() {
                p.serve(&net);
            }
            pid
        };
        w.state = State::Running;
        w.pid = Some(pid);
        w.pid_start = store::process_start(pid);
        w.shim_pid = Some(shim);
        w.shim_start = store::process_start(shim);
        w.namespaces = spawn::namespace_inodes(pid);
        locked.save(&w)?;
        recovery::end(&locked.dir);
        if let Some(p) = &args.pidfile {
            write_pidfile(p, pid)?;
        }
        Ok(pid)
    })();
    let pid = match result {
        Ok(pid) => pid,
        Err(e) => {
            rollback.run();
            let _ = ctx.store.remove(locked);
            let _ = std::fs::remove_file(ctx.store.paths.log_file(&name));
            return Err(e);
        }
    };
    drop(locked);
    if args.detach {
        println!("{name}");
        return Ok(0);
    }
    let code = monitor::foreground(pid, &ctx.store.paths.log_file(&name), 0);
    monitor::record_exit(&ctx.store, &name, pid, code);
    Ok(code)
}

pub fn spawn_failure(e: &SpawnError) -> (String, String, i32) {
    let status = match e {
        SpawnError::Child(s) => s.status,
        _ => crate::error::EXIT_CNS,
    };
    (format!("cannot start the workload: {e}"), e.hint(), status)
}
