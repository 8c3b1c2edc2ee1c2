//! `/etc/cns/config.toml` (or `$CNS_CONFIG`): machine-wide defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

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
    /// Refuse to import unsigned checkpoint archives.
    #[serde(default)]
    pub require_signature: bool,
}

impl Config {
    pub fn path() -> PathBuf {
        std::env::var_os("CNS_CONFIG").map_or_else(|| PathBuf::from("/etc/cns/config.toml"), PathBuf::from)
    }

    pub fn load() -> Result<Config> {
        Config::load_from(&Config::path())
    }

    pub fn load_from(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(Error::wrap(format!("cannot read {}", path.display()), e)),
        };
        toml::from_str(&text).map_err(|e| {
            Error::invalid(
                format!("invalid config {}: {}", path.display(), e.message()),
                "known keys: images_dir, address_pool, tcp_established, file_locks, require_signature (see docs/config.md)",
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
