//! The state store of named workloads: one directory per name under the
//! state root, holding `workload.json` and a `lock` file. Every command that
//! changes a workload holds the lock (flock) for its whole run, so two
//! commands on one name never interleave.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::bail_hint;
use crate::paths::Paths;

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        bail_hint!(
            "names are 1-64 characters: a letter or digit, then letters, digits, '_', '.', '-'",
            "invalid workload name {name:?}"
        );
    }
    Ok(())
}

/// A generated name: `cns-` and 8 random hex digits.
pub fn generate_name() -> String {
    let mut b = [0u8; 4];
    // getrandom(2) cannot fail for 4 bytes once the pool is initialised; fall
    // back to pid and time if it does.
    // SAFETY: b is a valid writable buffer of b.len() bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        b = (t ^ std::process::id()).to_le_bytes();
    }
    format!("w-{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// Lifecycle states shown by `cns ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
    Dumped,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
            State::Dumped => "dumped",
        })
    }
}

/// Network settings of a workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    /// "veth" or "none".
    pub mode: String,
    pub host_if: Option<String>,
    pub addrs: Option<cns_netns::LinkAddrs>,
    /// Published ports: (host port, workload port).
    #[serde(default)]
    pub publish: Vec<(u16, u16)>,
}

/// The record of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub hostname: String,
    /// Unix seconds.
    pub created: u64,
    pub state: State,
    /// Host PID of the root process (the workload's PID 1).
    pub pid: Option<i32>,
    /// Start time of `pid` (clock ticks since boot) to tell it from a reused PID.
    pub pid_start: Option<u64>,
    /// Host PID of the monitor that waits for the root.
    pub shim_pid: Option<i32>,
    #[serde(default)]
    pub shim_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub log: PathBuf,
    /// Where the log is bind-mounted inside the mount ns (stdout/stderr are
    /// opened there); `None` for adopted host trees.
    #[serde(default)]
    pub stdio_mount: Option<PathBuf>,
    pub net: NetConfig,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    pub seccomp: Option<PathBuf>,
    /// Image directory of the last dump.
    pub images: Option<PathBuf>,
    /// A host tree adopted with `dump --pid`.
    #[serde(default)]
    pub adopted: bool,
    /// Name of the checkpoint this one was restored from.
    pub restored_from: Option<String>,
    /// Namespace inodes of the root (pid, mnt, net, ...), filled at start.
    #[serde(default)]
    pub namespaces: std::collections::BTreeMap<String, u64>,
}

impl Workload {
    /// The current state, correcting `running` when the root is gone.
    pub fn live_state(&self) -> State {
        match (self.state, self.pid) {
            (State::Running, Some(pid)) if !process_matches(pid, self.pid_start) => State::Exited,
            (s, _) => s,
        }
    }

    /// The host PID, if the root is alive.
    pub fn live_pid(&self) -> Option<i32> {
        match self.live_state() {
            State::Running => self.pid,
            _ => None,
        }
    }
}

/// Start time of a process (field 22 of /proc/PID/stat).
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // after ") " field 3 (state) is index 0, so field 22 is index 19.
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and (when known) the same process as recorded.
pub fn process_matches(pid: i32, start: Option<u64>) -> bool {
    match (process_start(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pub paths: Paths,
}

/// A locked workload directory; the lock is released on drop.
#[derive(Debug)]
pub struct Locked {
    pub name: String,
    pub dir: PathBuf,
    _lock: Flock<File>,
}

impl Locked {
    /// The lock's fd (for closing an inherited copy in a forked child).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("workload.json")
    }

    pub fn load(&self) -> anyhow::Result<Workload> {
        read_record(&self.record_path(), &self.name)
    }

    /// Writes the record atomically (temp file + rename).
    pub fn save(&self, w: &Workload) -> anyhow::Result<()> {
        let data = serde_json::to_vec_pretty(w)?;
        write_atomic(&self.record_path(), &data, 0o600)
    }
}

fn read_record(path: &Path, name: &str) -> anyhow::Result<Workload> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the state of workload {name}"))?;
    serde_json::from_str(&text).with_context(|| format!("the state file {} is corrupt", path.display()))
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700.
/// Opens `path` for appending, creating it 0600 (and its directory 0700)
/// when missing, emptied when `truncate`: workload logs and the stdio
/// mountpoint.
pub fn create_private_file(path: &Path, truncate: bool) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        mkdir_private(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .and_then(|f| {
            if truncate {
                f.set_len(0)?;
            }
            Ok(f)
        })
        .with_context(|| format!("cannot create {}", path.display()))
}

pub fn mkdir_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

impl Store {
    pub fn new(paths: Paths) -> Store {
        Store { paths }
    }

    fn ensure_root(&self) -> anyhow::Result<()> {
        mkdir_private(&self.paths.state)
            .with_context(|| format!("cannot create the state directory {}", self.paths.state.display()))
    }

    fn lock_dir(&self, name: &str, dir: PathBuf) -> anyhow::Result<Locked> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("lock"))
            .with_context(|| format!("cannot open the lock of workload {name}"))?;
        let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, nix::Error::EWOULDBLOCK)) => {
                tracing::info!(name, "waiting for another cns command on this workload");
                Flock::lock(f, FlockArg::LockExclusive)
                    .map_err(|(_, e)| anyhow::anyhow!("cannot lock workload {name}: {e}"))?
            }
            Err((_, e)) => anyhow::bail!("cannot lock workload {name}: {e}"),
        };
        Ok(Locked { name: name.to_string(), dir, _lock: lock })
    }

    /// Locks `name` without waiting; Err if another command holds it.
    pub fn try_lock(&self, name: &str) -> anyhow::Result<Locked> {
        validate_name(name)?;
        let dir = self.paths.workload_dir(name);
        if !dir.join("workload.json").exists() {
            return Err(unknown(name));
        }
        let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(dir.join("lock"))?;
        // Brief holders (a monitor recording an exit, a sweep) let go within
        // milliseconds; a dump or restore holds on for seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let res = loop {
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Err((back, nix::Error::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                    f = back;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        };
        match res {
            Ok(l) => Ok(Locked { name: name.to_string(), dir, _lock: l }),
            Err((_, nix::Error::EWOULDBLOCK)) => Err(crate::error::hinted(
                format!("workload {name} is busy: another cns command (a dump or restore) is working on it"),
                "wait for it to finish and try again",
            )),
            Err((_, e)) => Err(anyhow::anyhow!("cannot lock workload {name}: {e}")),
        }
    }

    /// Creates a new workload directory, locked. Fails if the name exists.
    pub fn create(&self, name: &str) -> anyhow::Result<Locked> {
        validate_name(name)?;
        self.ensure_root()?;
        let dir = self.paths.workload_dir(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                bail_hint!(
                    format!("pick another name, or remove the old one with `cns rm -f {name}`"),
                    "a workload named {name} already exists"
                );
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot create {}", dir.display()))),
        }
        self.lock_dir(name, dir)
    }

    /// Locks an existing workload (waits for other commands).
    pub fn lock(&self, name: &str) -> anyhow::Result<Locked> {
        validate_name(name)?;
        let dir = self.paths.workload_dir(name);
        if !dir.join("workload.json").exists() {
            return Err(unknown(name));
        }
        let l = self.lock_dir(name, dir)?;
        // It may have been removed while we waited.
        if !l.record_path().exists() {
            return Err(unknown(name));
        }
        Ok(l)
    }

    /// Reads a workload without locking.
    pub fn get(&self, name: &str) -> anyhow::Result<Workload> {
        validate_name(name)?;
        let p = self.paths.workload_dir(name).join("workload.json");
        if !p.exists() {
            return Err(unknown(name));
        }
        read_record(&p, name)
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.paths.workload_dir(name).join("workload.json").exists()
    }

    /// All workloads, sorted by name.
    pub fn list(&self) -> Vec<Workload> {
        let Ok(rd) = fs::read_dir(&self.paths.state) else { return Vec::new() };
        let mut v: Vec<Workload> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read_record(&e.path().join("workload.json"), "").ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Removes a locked workload's directory.
    pub fn remove(&self, l: Locked) -> anyhow::Result<()> {
        let dir = l.dir.clone();
        fs::remove_file(l.record_path()).ok();
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        drop(l);
        Ok(())
    }
}

/// The error for a name that does not exist.
pub fn unknown(name: &str) -> anyhow::Error {
    crate::error::hinted(format!("no workload named {name}"), "see `cns ps` for the workloads on this machine")
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "web", "A.b_c-1", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "..", "../x", "a b", "é", &"x".repeat(65), "_a"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let g = generate_name();
        assert!(validate_name(&g).is_ok());
        assert_ne!(g, generate_name());
    }

    #[test]
    fn own_process_start_is_known() {
        let me = std::process::id() as i32;
        let s = process_start(me);
        assert!(s.is_some());
        assert!(process_matches(me, s));
        assert!(!process_matches(me, s.map(|v| v + 1)));
    }
}
