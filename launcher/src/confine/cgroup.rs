//! Resource limits (`--memory`, `--pids`, `--cpus`): one cgroup per
//! workload, `cns/NAME`, on cgroup v2 where the host has it and on the v1
//! memory, pids and cpu hierarchies where it has only those (detected at
//! run time; this project's test machine is v1).
//!
//! cns owns the cgroup, not CRIU: the limits live in the workload's record,
//! and a restore creates the cgroup of the *new* name (a copy restored with
//! `--as` gets its own) and moves the restored root into it at CRIU's
//! setup-namespaces notification, before the root forks the rest of the
//! tree and before any page is restored, so every task and every restored
//! page is in it and charged to it. CRIU runs with `--manage-cgroups=ignore`
//! on purpose: its own modes put a restored tree back into the *dumped*
//! cgroup paths, which a copy must not share.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// The limits asked for (absent: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Number of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU time, in thousandths of a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.millicpus.is_none()
    }
}

/// Parses `--memory` (`512m`, `2g`, bytes), `--pids`, `--cpus` (`1.5`).
pub fn parse(memory: Option<&str>, pids: Option<u64>, cpus: Option<&str>) -> Result<Limits> {
    let memory = memory.map(parse_size).transpose()?;
    if memory.is_some_and(|m| m < (4 << 20)) {
        return Err(Error::invalid("--memory below 4 MiB leaves nothing to run in", "give at least 4m"));
    }
    if pids == Some(0) {
        return Err(Error::invalid("--pids 0 would not even let the command start", "give at least 2 (cns's init and the command)"));
    }
    let millicpus = cpus
        .map(|c| match c.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.01..=4096.0).contains(&v) => Ok((v * 1000.0).round() as u64),
            _ => Err(Error::invalid(format!("invalid --cpus {c:?}"), "give a number of CPUs such as 0.5 or 2")),
        })
        .transpose()?;
    Ok(Limits { memory, pids, millicpus })
}

fn parse_size(s: &str) -> Result<u64> {
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], match c.to_ascii_lowercase() {
            'k' => 1u64 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            _ => 0,
        }),
        _ => (s, 1),
    };
    match digits.parse::<u64>().ok().and_then(|d| d.checked_mul(mult)).filter(|v| *v > 0) {
        Some(v) => Ok(v),
        None => Err(Error::invalid(format!("invalid --memory {s:?}"), "give a size such as 512m or 2g")),
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Detects the host's layout: v2 when /sys/fs/cgroup is the unified
/// hierarchy itself.
pub fn version() -> Version {
    if Path::new(ROOT).join("cgroup.controllers").exists() { Version::V2 } else { Version::V1 }
}

/// The cgroup directories of workload `name` (one per v1 controller).
pub fn dirs(name: &str) -> Vec<PathBuf> {
    match version() {
        Version::V2 => vec![Path::new(ROOT).join("cns").join(name)],
        Version::V1 => V1_CONTROLLERS.iter().map(|c| Path::new(ROOT).join(c).join("cns").join(name)).collect(),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("cannot write {value:?} to {}", path.display()))
}

/// Creates the cgroup of `name` with `limits` (an existing one of that name,
/// left by a dumped workload, gets the limits again).
pub fn create(name: &str, limits: &Limits) -> Result<()> {
    match version() {
        Version::V2 => {
            let parent = Path::new(ROOT).join("cns");
            mkdir(&parent)?;
            // The controllers must be enabled for the children of / and of cns/.
            for p in [Path::new(ROOT), parent.as_path()] {
                write(&p.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            }
            let d = parent.join(name);
            mkdir(&d)?;
            write(&d.join("memory.max"), &limits.memory.map_or("max".into(), |m| m.to_string()))?;
            // Without swap accounting the file is absent; then there is no swap to limit.
            if d.join("memory.swap.max").exists() {
                write(&d.join("memory.swap.max"), if limits.memory.is_some() { "0" } else { "max" })?;
            }
            write(&d.join("pids.max"), &limits.pids.map_or("max".into(), |p| p.to_string()))?;
            write(&d.join("cpu.max"), &limits.millicpus.map_or("max 100000".into(), |m| format!("{} 100000", m * 100)))?;
        }
        Version::V1 => {
            for c in V1_CONTROLLERS {
                let base = Path::new(ROOT).join(c);
                if !base.is_dir() {
                    return Err(Error::new(crate::ErrorKind::System, format!("the cgroup v1 {c} controller is not mounted at {}", base.display()))
                        .with_hint("mount it, or run without --memory/--pids/--cpus"));
                }
                mkdir(&base.join("cns"))?;
                mkdir(&base.join("cns").join(name))?;
            }
            let d = |c: &str| Path::new(ROOT).join(c).join("cns").join(name);
            write(&d("memory").join("memory.limit_in_bytes"), &limits.memory.map_or("-1".into(), |m| m.to_string()))?;
            if let Some(m) = limits.memory {
                // Without swap accounting the file is absent; then there is no swap to limit.
                let sw = d("memory").join("memory.memsw.limit_in_bytes");
                if sw.exists() {
                    write(&sw, &m.to_string())?;
                }
            }
            write(&d("pids").join("pids.max"), &limits.pids.map_or("max".into(), |p| p.to_string()))?;
            write(&d("cpu").join("cpu.cfs_period_us"), "100000")?;
            write(&d("cpu").join("cpu.cfs_quota_us"), &limits.millicpus.map_or("-1".into(), |m| (m * 100).to_string()))?;
        }
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::wrap(format!("cannot create cgroup {}", p.display()), e)),
    }
}

/// Moves `pid` (and so everything it forks from now on) into the cgroup.
pub fn enter(name: &str, pid: i32) -> Result<()> {
    for d in dirs(name) {
        write(&d.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes the cgroup of `name` (its tasks must be gone: the kernel
/// refuses to remove a cgroup that has any).
pub fn remove(name: &str) {
    for d in dirs(name) {
        if d.is_dir() {
            if let Err(e) = std::fs::remove_dir(&d) {
                tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove a workload's cgroup");
            }
        }
    }
}

/// Usage against the limits, for `inspect` and `ps --json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    pub millicpus_limit: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// What the cgroup of `name` uses now (None where it is not there).
pub fn usage(name: &str, limits: &Limits) -> Usage {
    let (mem, pids) = match version() {
        Version::V2 => {
            let d = Path::new(ROOT).join("cns").join(name);
            (d.join("memory.current"), d.join("pids.current"))
        }
        Version::V1 => (Path::new(ROOT).join("memory/cns").join(name).join("memory.usage_in_bytes"), Path::new(ROOT).join("pids/cns").join(name).join("pids.current")),
    };
    Usage { memory_bytes: read_u64(&mem), memory_limit: limits.memory, pids: read_u64(&pids), pids_limit: limits.pids, millicpus_limit: limits.millicpus }
}

/// The limits in force in the cgroup of `name`, read back from the kernel.
pub fn read_limits(name: &str) -> Limits {
    match version() {
        Version::V2 => {
            let d = Path::new(ROOT).join("cns").join(name);
            let cpu = std::fs::read_to_string(d.join("cpu.max")).ok().and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            Limits { memory: read_u64(&d.join("memory.max")), pids: read_u64(&d.join("pids.max")), millicpus: cpu.map(|q| q / 100) }
        }
        Version::V1 => {
            let d = |c: &str| Path::new(ROOT).join(c).join("cns").join(name);
            let mem = read_u64(&d("memory").join("memory.limit_in_bytes")).filter(|m| *m < (1 << 62));
            let cpu = std::fs::read_to_string(d("cpu").join("cpu.cfs_quota_us")).ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|q| *q > 0);
            Limits { memory: mem, pids: read_u64(&d("pids").join("pids.max")), millicpus: cpu.map(|q| q as u64 / 100) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(parse(Some("64m"), Some(20), Some("0.5")).expect("limits"), Limits { memory: Some(64 << 20), pids: Some(20), millicpus: Some(500) });
        assert_eq!(parse(Some("1g"), None, None).expect("limits").memory, Some(1 << 30));
        assert_eq!(parse(Some("8388608"), None, None).expect("limits").memory, Some(8 << 20));
        for bad in ["", "m", "12x", "-1m", "1m"] {
            assert!(parse(Some(bad), None, None).is_err(), "{bad}");
        }
        assert!(parse(None, Some(0), None).is_err());
        assert!(parse(None, None, Some("0")).is_err());
        assert!(parse(None, None, Some("nan")).is_err());
    }
}
