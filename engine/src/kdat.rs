//! A home for CRIU's kernel-feature cache.
//!
//! Every CRIU run starts by probing the kernel (netns and link features,
//! the vDSO, the CPU, userfaultfd, ...): 35-40 ms here, more than the whole
//! dump of a small workload. CRIU keeps the result in `<RUNDIR>/criu.kdat`
//! and reuses it, but only when that file is on a tmpfs, so that it is gone
//! after a reboot into another kernel. On hosts whose /run is a disk
//! file system (this project's CI machine: ext4), CRIU never keeps it.
//!
//! `scripts/install-criu` builds CRIU with `RUNDIR=` [`DIR`], and cns makes
//! sure [`DIR`] is a tmpfs before it starts CRIU: a directory of cns's
//! state, which is on a tmpfs already on most hosts (see the launcher's
//! workload::store), else a 1 MiB tmpfs of its own (source
//! [`cns_mounts::CRIU_CACHE_SOURCE`], mode 0700, mounted once on the empty
//! directory and left for the next run; a workload's mount namespace drops
//! it). A CRIU built
//! elsewhere keeps using its own RUNDIR and simply does not find the file.
//! Failing to prepare the directory costs speed only, never a dump.

use std::path::Path;

/// CRIU's RUNDIR as `scripts/install-criu` builds it. Beside cns's state
/// (a dot name: no workload is called that).
pub const DIR: &str = "/run/cns/.criu";

/// Whether [`DIR`] is ready (a tmpfs directory) after this call. Cheap when
/// it already is: one statfs.
pub fn prepare() -> bool {
    let dir = Path::new(DIR);
    if cns_mounts::is_tmpfs(dir) {
        return true;
    }
    // Its parent is cns's state dir, which the first command makes.
    if let Some(parent) = dir.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent);
    }
    match cns_mounts::ensure_private_tmpfs(dir, cns_mounts::CRIU_CACHE_SOURCE, "1m") {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(dir = DIR, "the directory holds files: no tmpfs over it; every CRIU run probes the kernel again");
            false
        }
        Err(e) => {
            tracing::debug!(dir = DIR, error = %e, "no tmpfs for CRIU's kernel-feature cache; every CRIU run probes the kernel again");
            false
        }
    }
}
