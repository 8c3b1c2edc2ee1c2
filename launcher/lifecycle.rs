//! `cns ps`, `exec`, `logs`, `kill`, `rm`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};
use serde::Serialize;

use crate::cli::{ExecArgs, KillArgs, LogsArgs, PsArgs, RmArgs};
use crate::store::{State, Workload};
use crate::{Ctx, bail_hint};

/// One row of `cns ps --json` (field names are stable; see docs/json.md).
#[derive(Debug, Serialize)]
pub struct PsRow {
    pub name: String,
    pub state: State,
    pub pid: Option<i32>,
    pub command: Vec<String>,
    pub created: u64,
    pub ip: Option<String>,
    pub host_if: Option<String>,
    pub exit_code: Option<i32>,
    pub images: Option<String>,
    pub restored_from: Option<String>,
    pub adopted: bool,
}

impl From<&Workload> for PsRow {
    fn from(w: &Workload) -> PsRow {
        let state = w.live_state();
        PsRow {
            name: w.name.clone(),
            state,
            pid: w.live_pid(),
            command: w.command.clone(),
            created: w.created,
            ip: w.net.addrs.map(|a| a.inner.to_string()),
            host_if: w.net.host_if.clone(),
            exit_code: if state == State::Exited { w.exit_code } else { None },
            images: w.images.as_ref().map(|p| p.display().to_string()),
            restored_from: w.restored_from.clone(),
            adopted: w.adopted,
        }
    }
}

pub fn ps(ctx: &Ctx, args: PsArgs) -> anyhow::Result<i32> {
    let rows: Vec<PsRow> = ctx.store.list().iter().map(PsRow::from).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<20} {:<8} {:>8} {:<15} COMMAND", "NAME", "STATE", "PID", "IP");
    for r in rows {
        let state = match (r.state, r.exit_code) {
            (State::Exited, Some(c)) => format!("exited({c})"),
            (s, _) => s.to_string(),
        };
        println!(
            "{:<20} {:<8} {:>8} {:<15} {}",
            r.name,
            state,
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.ip.unwrap_or_else(|| "-".into()),
            r.command.join(" ")
        );
    }
    Ok(0)
}

/// The live root PID of a running workload, or a clear error.
pub fn running_pid(w: &Workload) -> anyhow::Result<i32> {
    match (w.live_state(), w.pid) {
        (State::Running, Some(pid)) => Ok(pid),
        (State::Dumped, _) => bail_hint!(format!("restore it first: cns restore {}", w.name), "workload {} is dumped, not running", w.name),
        (s, _) => bail_hint!(format!("see `cns logs {}`; remove it with `cns rm {}`", w.name, w.name), "workload {} is not running (it is {s})", w.name),
    }
}

pub fn exec(ctx: &Ctx, args: ExecArgs) -> anyhow::Result<i32> {
    let w = ctx.store.get(&args.name)?;
    let pid = running_pid(&w)?;
    let env = crate::run::parse_env(&args.env)?;
    ctx.require_root()?;
    // Open every namespace first, then join them; mnt last but one (after it
    // /proc paths are the workload's), then chroot into its root.
    let order = ["user", "ipc", "uts", "net", "pid", "time", "cgroup", "mnt"];
    let mut fds = Vec::new();
    for ns in order {
        let path = format!("/proc/{pid}/ns/{ns}");
        match std::fs::File::open(&path) {
            Ok(f) => {
                let same = std::fs::metadata(format!("/proc/self/ns/{ns}")).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    == std::fs::metadata(&path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                if !same {
                    fds.push((ns, f));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open {path}"))),
        }
    }
    let root = std::fs::File::open(format!("/proc/{pid}/root"))?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
    for (ns, f) in &fds {
        nix::sched::setns(f.as_fd(), CloneFlags::empty()).map_err(|e| anyhow::anyhow!("cannot join the {ns} namespace of {}: {e}", args.name))?;
    }
    nix::unistd::fchdir(&root)?;
    nix::unistd::chroot(".")?;
    let _ = nix::unistd::chdir(&cwd);
    // Joining a pid or time namespace applies to children: fork.
    // SAFETY: single-threaded; the child only execs or _exits.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            for (k, v) in env {
                // SAFETY: single-threaded child before exec.
                unsafe { std::env::set_var(k, v) };
            }
            let args_c: Vec<std::ffi::CString> =
                args.command.iter().filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok()).collect();
            let e = match args_c.first() {
                Some(p) => nix::unistd::execvp(p, &args_c).err(),
                None => None,
            };
            let _ = writeln!(std::io::stderr(), "cns: exec {}: {}", args.command[0], e.map_or("failed".into(), |e| e.desc().to_string()));
            let code = if e == Some(nix::Error::ENOENT) { 127 } else { 126 };
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(crate::monitor::foreground_wait(child)),
    }
}

pub fn logs(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<i32> {
    let w = ctx.store.get(&args.name)?;
    let mut f = std::fs::File::open(&w.log).map_err(|e| anyhow::anyhow!("cannot open the log {}: {e}", w.log.display()))?;
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !args.follow {
            return Ok(0);
        }
        let cur = ctx.store.get(&args.name).ok();
        if cur.as_ref().map(|w| w.live_state()) != Some(State::Running) {
            // One last read after it stopped.
            let pos = f.stream_position()?;
            f.seek(SeekFrom::Start(pos))?;
            std::io::copy(&mut f, &mut out)?;
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| crate::error::hinted(format!("unknown signal {s}"), "see `kill -l`"));
    }
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    full.parse::<Signal>().map_err(|_| crate::error::hinted(format!("unknown signal {s}"), "see `kill -l`"))
}

pub fn kill(ctx: &Ctx, args: KillArgs) -> anyhow::Result<i32> {
    let sig = parse_signal(&args.signal)?;
    let w = ctx.store.get(&args.name)?;
    let pid = running_pid(&w)?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(|e| anyhow::anyhow!("cannot signal {}: {e}", args.name))?;
    Ok(0)
}

/// Kills the tree of `pid` (its pid namespace dies with it) and waits until it is gone.
pub fn kill_and_wait(pid: i32, start: Option<u64>) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    for _ in 0..500 {
        if !crate::store::process_matches(pid, start) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn rm(ctx: &Ctx, args: RmArgs) -> anyhow::Result<i32> {
    ctx.require_root()?;
    let l = ctx.store.lock(&args.name)?;
    let w = l.load()?;
    if w.live_state() == State::Running {
        if !args.force {
            bail_hint!(format!("stop it with `cns kill {0}` or use `cns rm -f {0}`", w.name), "workload {} is running", w.name);
        }
        if let Some(pid) = w.pid {
            kill_and_wait(pid, w.pid_start);
        }
    }
    crate::network::delete_host_end(&w.net);
    if let Some(a) = &w.net.addrs {
        let _ = crate::network::lease_store(ctx).release(&w.name, a);
    }
    let _ = std::fs::remove_file(&w.log);
    if !args.keep_images {
        if let Some(img) = &w.images {
            if img.starts_with(ctx.store.paths.images_root()) && img.file_name().is_some_and(|n| n == w.name.as_str()) {
                let _ = std::fs::remove_dir_all(img);
            }
        }
        // The CRIU log of its last failed dump, kept beside the images.
        let _ = std::fs::remove_file(ctx.images_root().join(format!("{}.failed-dump.log", w.name)));
    }
    ctx.store.remove(l)?;
    Ok(0)
}
