//! The state store of named workloads: one directory per name under the
//! state root, holding `workload.json` (and a recovery marker while a
//! command works on it). Every command that changes a workload holds its
//! lock (flock) for its whole run, so two commands on one name never
//! interleave. Locks live apart from the directories, in `.locks/`, and are
//! never unlinked: a command waiting on a lock while `rm` removes the
//! workload still shares the one inode with whoever creates the name again.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::workload::paths::Paths;
use crate::workload::record::{Workload, validate_name};

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
        self.dir.join(RECORD)
    }

    pub fn load(&self) -> Result<Workload> {
        read_record(&self.record_path(), &self.name)
    }

    /// Writes the record atomically (temp file + rename). Only a record
    /// that points at a checkpoint (dumped) is made durable with fsync: the
    /// states of running processes do not outlive the machine anyway (and
    /// /run is usually a tmpfs), so their transitions cost no disk flush
    /// on the start-up path.
    pub fn save(&self, w: &Workload) -> Result<()> {
        let data = serde_json::to_vec_pretty(w)?;
        if w.state == crate::workload::State::Dumped {
            crate::files::write_atomic(&self.record_path(), &data, 0o600)
        } else {
            crate::files::write_transient(&self.record_path(), &data, 0o600)
        }
    }
}

fn read_record(path: &std::path::Path, name: &str) -> Result<Workload> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the state of workload {name}"))?;
    serde_json::from_str(&text).with_context(|| format!("the state file {} is corrupt", path.display()))
}

/// The record's file name in a workload's directory.
pub const RECORD: &str = "workload.json";

impl Store {
    pub fn new(paths: Paths) -> Store {
        Store { paths }
    }

    fn ensure_root(&self) -> Result<()> {
        self.prepare();
        crate::files::mkdir_private(&self.paths.locks())
            .with_context(|| format!("cannot create the state directory {}", self.paths.state.display()))
    }

    /// Makes the default state dir a tmpfs of its own where /run is not
    /// one. Runtime state belongs on a tmpfs: it must not outlive a reboot
    /// (a record of a workload that no longer exists), and each launch
    /// writes a dozen small files that a disk file system journals (about
    /// 1 ms of every `cns run` on this project's ext4 /run). A directory
    /// that already holds something (an earlier cns's state on the disk) is
    /// used as it is: nothing of it is hidden under a mount. Best effort.
    ///
    /// One statfs when the state is on a tmpfs already; the first mount is
    /// taken under a lock (cns_mounts::ensure_private_tmpfs).
    pub fn prepare(&self) {
        let state = &self.paths.state;
        if state.as_path() != std::path::Path::new(super::paths::DEFAULT_STATE) || cns_mounts::is_tmpfs(state) || state.parent().is_none_or(cns_mounts::is_tmpfs) {
            return;
        }
        match cns_mounts::ensure_private_tmpfs(state, cns_mounts::STATE_SOURCE, "64m") {
            Ok(true) => {}
            Ok(false) => tracing::debug!("the state dir holds files already: it stays on the disk file system"),
            Err(e) => tracing::debug!(error = %e, "state stays on the disk file system"),
        }
    }

    /// The lock file of `name` (created when missing, never removed).
    pub fn lock_file(&self, name: &str) -> Result<File> {
        self.ensure_root()?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.paths.lock_file(name))
            .with_context(|| format!("cannot open the lock of workload {name}"))
    }

    fn lock_dir(&self, name: &str, dir: PathBuf) -> Result<Locked> {
        let f = self.lock_file(name)?;
        let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, nix::Error::EWOULDBLOCK)) => {
                tracing::info!(name, "waiting for another cns command on this workload");
                Flock::lock(f, FlockArg::LockExclusive)
                    .map_err(|(_, e)| Error::wrap(format!("cannot lock workload {name}"), e))?
            }
            Err((_, e)) => return Err(Error::wrap(format!("cannot lock workload {name}"), e)),
        };
        Ok(Locked { name: name.to_string(), dir, _lock: lock })
    }

    /// Locks `name` without waiting; Err if another command holds it.
    pub fn try_lock(&self, name: &str) -> Result<Locked> {
        validate_name(name)?;
        let dir = self.paths.workload_dir(name);
        if !dir.join(RECORD).exists() {
            return Err(unknown(name));
        }
        let mut f = self.lock_file(name)?;
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
            Ok(l) => {
                let locked = Locked { name: name.to_string(), dir, _lock: l };
                // It may have been removed while we waited.
                if !locked.record_path().exists() {
                    return Err(unknown(name));
                }
                Ok(locked)
            }
            Err((_, nix::Error::EWOULDBLOCK)) => Err(Error::new(
                ErrorKind::Busy,
                format!("workload {name} is busy: another cns command (a dump or restore) is working on it"),
            )
            .with_hint("wait for it to finish and try again")),
            Err((_, e)) => Err(Error::wrap(format!("cannot lock workload {name}"), e)),
        }
    }

    /// Creates a new workload directory, locked. Fails if the name exists.
    pub fn create(&self, name: &str) -> Result<Locked> {
        validate_name(name)?;
        self.ensure_root()?;
        let dir = self.paths.workload_dir(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::new(ErrorKind::Exists, format!("a workload named {name} already exists"))
                    .with_hint(format!("pick another name, or remove the old one with `cns rm -f {name}`")));
            }
            Err(e) => return Err(Error::wrap(format!("cannot create {}", dir.display()), e)),
        }
        self.lock_dir(name, dir)
    }

    /// Locks an existing workload (waits for other commands).
    pub fn lock(&self, name: &str) -> Result<Locked> {
        validate_name(name)?;
        let dir = self.paths.workload_dir(name);
        if !dir.join(RECORD).exists() {
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
    pub fn get(&self, name: &str) -> Result<Workload> {
        validate_name(name)?;
        let p = self.paths.workload_dir(name).join(RECORD);
        if !p.exists() {
            return Err(unknown(name));
        }
        read_record(&p, name)
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.paths.workload_dir(name).join(RECORD).exists()
    }

    /// All workloads, sorted by name.
    pub fn list(&self) -> Vec<Workload> {
        let Ok(rd) = fs::read_dir(&self.paths.state) else { return Vec::new() };
        let mut v: Vec<Workload> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read_record(&e.path().join(RECORD), "").ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Records the exit of `pid` with `code` unless the workload moved on
    /// meanwhile (dumped, restored under a new PID, removed).
    pub fn record_exit(&self, name: &str, pid: i32, code: i32) {
        // Wait for the lock even while the record does not exist yet: a
        // restore of a new copy saves it only once its root runs, and a root
        // that exits at once must not be recorded before that.
        let Ok(l) = self.lock_dir(name, self.paths.workload_dir(name)) else { return };
        let Ok(mut w) = l.load() else { return };
        if w.mark_exited(pid, code) {
            let _ = l.save(&w);
        }
    }

    /// Removes a locked workload's directory.
    pub fn remove(&self, l: Locked) -> Result<()> {
        let dir = l.dir.clone();
        fs::remove_file(l.record_path()).ok();
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        drop(l);
        Ok(())
    }
}

/// The error for a name that does not exist.
pub fn unknown(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no workload named {name}")).with_hint("see `cns ps` for the workloads on this machine")
}
