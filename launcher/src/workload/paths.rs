//! Where cns keeps things, and the config file.
//!
//! - state: `/run/cns/<name>/` (0700): `workload.json`; locks in `/run/cns/.locks/<name>`
//! - leases: `/run/cns/.leases/`
//! - logs: `/var/lib/cns/logs/<name>.log` — on disk, not tmpfs: the
//!   workload's stdout is a regular file CRIU reopens by path at restore
//! - images: `/var/lib/cns/images/<name>/` (0700)
//! - a `--rootfs` workload's layers: `/var/lib/cns/rootfs/<name>/` (confine/rootfs.rs)
//! - migrations in progress: `/var/lib/cns/migrate/`; generated resolv.conf files: `/var/lib/cns/resolv/`
//!
//! `CNS_STATE_DIR` and `CNS_LIB_DIR` move the two roots (tests use them only
//! where the real paths would not do).

use std::path::PathBuf;

/// The default state root (`CNS_STATE_DIR` moves it).
pub const DEFAULT_STATE: &str = "/run/cns";

/// The roots cns uses.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub lib: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        let get = |k: &str, d: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(d), PathBuf::from);
        Paths { state: get("CNS_STATE_DIR", DEFAULT_STATE), lib: get("CNS_LIB_DIR", "/var/lib/cns") }
    }

    pub fn workload_dir(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// Lock files, one per name, never removed (see store.rs).
    pub fn locks(&self) -> PathBuf {
        self.state.join(".locks")
    }

    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.locks().join(name)
    }

    pub fn leases(&self) -> PathBuf {
        self.state.join(".leases")
    }

    pub fn logs(&self) -> PathBuf {
        self.lib.join("logs")
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// The default images root (the config's `images_dir` overrides it:
    /// ask `Runtime::images_root`).
    pub fn default_images_root(&self) -> PathBuf {
        self.lib.join("images")
    }

    /// An empty file the workload's log is bind-mounted onto inside its
    /// mount namespace. stdout/stderr are opened through this mount, so the
    /// dump records an external mount that a restore maps to each copy's own
    /// log (see docs/design.md, "Logs across dump and restore").
    pub fn stdio_mount(&self) -> PathBuf {
        self.lib.join("stdio")
    }

}
