//! Where cns keeps things, and the config file.
//!
//! - state: `/run/cns/<name>/` (0700): `workload.json` and `lock`
//! - leases: `/run/cns/.leases/`
//! - logs: `/var/lib/cns/logs/<name>.log` — on disk, not tmpfs: the
//!   workload's stdout is a regular file CRIU reopens by path at restore
//! - images: `/var/lib/cns/images/<name>/` (0700)
//!
//! `CNS_STATE_DIR` and `CNS_LIB_DIR` move the two roots (tests use them only
//! where the real paths would not do).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The roots cns uses.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub lib: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        let get = |k: &str, d: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(d), PathBuf::from);
        Paths { state: get("CNS_STATE_DIR", "/run/cns"), lib: get("CNS_LIB_DIR", "/var/lib/cns") }
    }

    pub fn workload_dir(&self, name: &str) -> PathBuf {
        self.state.join(name)
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

    pub fn images_root(&self) -> PathBuf {
        self.lib.join("images")
    }

    /// An empty file the workload's log is bind-mounted onto inside its
    /// mount namespace. stdout/stderr are opened through this mount, so the
    /// dump records an external mount that a restore maps to each copy's own
    /// log (see docs/design.md, "Logs across dump and restore").
    pub fn stdio_mount(&self) -> PathBuf {
        self.lib.join("stdio")
    }

    pub fn default_images(&self, name: &str) -> PathBuf {
        self.images_root().join(name)
    }
}

/// `/etc/cns/config.toml` (or `$CNS_CONFIG`). Unknown keys are an error.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default image directory root.
    pub images_dir: Option<PathBuf>,
    /// Address pool, e.g. "10.88.0.0/16".
    pub address_pool: Option<String>,
    /// Default `--tcp-established` for dump/restore.
    #[serde(default)]
    pub tcp_established: bool,
    /// Default `--file-locks` for dump/restore.
    #[serde(default)]
    pub file_locks: bool,
}

impl Config {
    pub fn path() -> PathBuf {
        std::env::var_os("CNS_CONFIG").map_or_else(|| PathBuf::from("/etc/cns/config.toml"), PathBuf::from)
    }

    pub fn load() -> anyhow::Result<Config> {
        Config::load_from(&Config::path())
    }

    pub fn load_from(path: &Path) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| {
            crate::error::hinted(
                format!("invalid config {}: {}", path.display(), e.message()),
                "known keys: images_dir, address_pool, tcp_established, file_locks (see docs/config.md)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "address_pool = \"10.1.0.0/16\"\nbogus = 1\n").expect("write");
        let err = Config::load_from(&p).expect_err("unknown key");
        assert!(err.to_string().contains("bogus"), "{err}");
        std::fs::write(&p, "address_pool = \"10.1.0.0/16\"\ntcp_established = true\n").expect("write");
        let c = Config::load_from(&p).expect("valid");
        assert_eq!(c.address_pool.as_deref(), Some("10.1.0.0/16"));
        assert!(c.tcp_established);
        assert!(Config::load_from(&dir.path().join("missing.toml")).is_ok());
    }
}
