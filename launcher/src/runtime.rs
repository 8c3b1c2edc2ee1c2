//! The runtime every operation works in: the state store, the config, the
//! CRIU to use; and the [`Events`] an operation reports progress through
//! (the library itself prints nothing).

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::workload::{Config, Paths, Store};

/// Where cns keeps its state and what it was configured with.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub store: Store,
    pub config: Config,
    /// The CRIU binary (default: `$CNS_CRIU`, then PATH).
    pub criu_path: Option<PathBuf>,
}

impl Runtime {
    pub fn new(paths: Paths, config: Config, criu_path: Option<PathBuf>) -> Runtime {
        Runtime { store: Store::new(paths), config, criu_path }
    }

    /// The roots from `CNS_STATE_DIR`/`CNS_LIB_DIR` (or the defaults) and
    /// the config from `CNS_CONFIG` (or `/etc/cns/config.toml`).
    pub fn from_env(criu_path: Option<PathBuf>) -> Result<Runtime> {
        Ok(Runtime::new(Paths::from_env(), Config::load()?, criu_path))
    }

    /// Refuses non-root callers with one clear line.
    /// cns's own directories: state, lib, images root and config. Nothing
    /// of a workload may show them (see confine::check).
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        vec![self.store.paths.state.clone(), self.store.paths.lib.clone(), self.images_root(), self.config_dir()]
    }

    pub fn require_root(&self) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::new(ErrorKind::Invalid, "cns needs root to create namespaces and run CRIU").with_hint("run it as root, e.g. with sudo"));
        }
        Ok(())
    }

    /// The CRIU to use (its version cached in the state dir), with a home
    /// for its kernel-feature cache ready (cns_engine::kdat).
    pub fn criu(&self) -> Result<cns_engine::Criu> {
        cns_engine::kdat::prepare();
        let cache = self.store.paths.state.join(".criu-version");
        if crate::files::mkdir_private(&self.store.paths.state).is_ok() {
            return Ok(cns_engine::Criu::locate_cached(self.criu_path.as_deref(), &cache)?);
        }
        Ok(cns_engine::Criu::locate(self.criu_path.as_deref())?)
    }

    /// The one images root: the config's `images_dir`, else the default.
    pub fn images_root(&self) -> PathBuf {
        self.config.images_dir.clone().unwrap_or_else(|| self.store.paths.default_images_root())
    }

    /// Where a checkpoint of `name` goes by default.
    pub fn default_images(&self, name: &str) -> PathBuf {
        self.images_root().join(name)
    }

    /// The directory of the config file (`/etc/cns`).
    pub fn config_dir(&self) -> PathBuf {
        crate::workload::Config::path().parent().map_or_else(|| PathBuf::from("/etc/cns"), PathBuf::from)
    }

    /// The CRIU log of `name`'s last failed dump, kept beside the images.
    pub fn failed_dump_log(&self, name: &str) -> PathBuf {
        self.images_root().join(format!("{name}.failed-dump.log"))
    }

    /// The address leases.
    pub fn leases(&self) -> cns_netns::LeaseStore {
        cns_netns::LeaseStore::new(self.store.paths.leases())
    }

    /// The configured address pool.
    pub fn pool(&self) -> Result<cns_netns::Pool> {
        match &self.config.address_pool {
            Some(p) => p.parse().map_err(|e: cns_netns::LeaseError| Error::invalid(e.to_string(), "fix address_pool in /etc/cns/config.toml")),
            None => Ok(cns_netns::Pool::default()),
        }
    }
}

/// How an operation reports progress while it works. Every method has an
/// empty default: implement what you show.
pub trait Events: Sync {
    /// A long operation moved on to `stage` (e.g. "freezing the tree").
    fn stage(&self, _what: &str, _stage: &str) {}
    /// The long operation ended (either way).
    fn done(&self) {}
    /// Something the user should know that does not stop the operation.
    fn note(&self, _message: &str) {}
}

/// Events nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl Events for NoEvents {}
