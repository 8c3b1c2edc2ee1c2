//! cns's own metadata in a checkpoint directory (`cns.json`): the record of
//! the workload as it was dumped, the versions, and the CRIU flags the
//! restore needs.

use std::fs;
use std::path::Path;

use cns_engine::preflight::{Finding, Severity};
use cns_engine::{CriuFlags, DumpStats, RestoreStats};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::workload::Workload;

/// The metadata file's name.
pub const META_FILE: &str = cns_engine::image::META_FILE;

/// cns's metadata in an image directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub workload: Workload,
    pub cns_version: String,
    pub criu_version: String,
    pub kernel: String,
    pub dumped_at: u64,
    /// What the dump needed and the restore needs too.
    #[serde(flatten)]
    pub flags: CriuFlags,
    /// Written by earlier cns versions only: the dump's statistics are read
    /// from CRIU's own `stats-dump` image.
    pub stats: Option<DumpStats>,
    /// Written by earlier cns versions only: the last restore's statistics
    /// are read from CRIU's own `stats-restore` image.
    pub last_restore: Option<RestoreStats>,
}

impl Meta {
    /// Metadata of a dump of `w` by `criu`, now.
    pub fn new(w: &Workload, criu: &cns_engine::Criu, flags: CriuFlags) -> Meta {
        Meta {
            workload: w.clone(),
            cns_version: env!("CARGO_PKG_VERSION").into(),
            criu_version: criu.version.to_string(),
            kernel: cns_engine::criu::kernel_release(),
            dumped_at: crate::files::now(),
            flags,
            stats: None,
            last_restore: None,
        }
    }

    /// Writes `cns.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::files::write_atomic(&dir.join(META_FILE), &serde_json::to_vec_pretty(self)?, 0o600)
    }
}

impl Meta {
    /// Forgets everything host-facing that the checkpoint's author could
    /// have written: an archive, or an image directory cns did not write,
    /// is believed for nothing that reaches the host. The address, ports
    /// and host link are chosen anew at restore, the log's mountpoint is
    /// this host's own; an adopted host tree (restored into the host's
    /// network namespace) is refused.
    pub fn distrust(&mut self, stdio_mount: &Path) -> Result<()> {
        let w = &mut self.workload;
        if w.adopted || w.net.mode == crate::workload::NetMode::Host {
            return Err(Error::new(ErrorKind::Invalid, "the checkpoint is of an adopted host tree, which restores into the host's own network namespace")
                .with_hint("restore it on the machine that dumped it, with its own image directory"));
        }
        w.net.addrs = None;
        w.net.publish.clear();
        w.net.host_if = None;
        if w.stdio_mount.is_some() {
            w.stdio_mount = Some(stdio_mount.to_path_buf());
        }
        w.pid = None;
        w.pid_start = None;
        w.shim_pid = None;
        w.shim_start = None;
        w.namespaces = Default::default();
        crate::confine::distrust(&mut w.confine);
        Ok(())
    }
}

/// Reads `cns.json` from `dir`.
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let p = dir.join(META_FILE);
    let text = fs::read_to_string(&p).map_err(|e| {
        Error::new(ErrorKind::NotFound, format!("{} is not a cns checkpoint ({}: {e})", dir.display(), p.display()))
            .with_hint("dump it with `cns dump`, or import an archive with `cns import`")
    })?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{} is corrupt: {e}", p.display()), "dump again"))
}

/// Restore pre-flight facts only cns's metadata knows: CRIU and kernel
/// versions, published ports.
pub fn meta_findings(meta: &Meta, criu: Option<&cns_engine::Criu>, check_ports: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(c) = criu {
        let dumped = cns_engine::CriuVersion::parse_version_output(&format!("Version: {}", meta.criu_version));
        match dumped {
            Some(d) if c.version < d => out.push(Finding::new(
                Severity::Warning,
                "criu-version",
                format!("dumped by CRIU {d}, this is {}", c.version),
                "an older CRIU may not read images of a newer one",
                "install the CRIU that dumped it (scripts/install-criu)",
            )),
            _ => out.push(Finding::new(Severity::Ok, "criu-version", format!("dumped by CRIU {}", meta.criu_version), "this CRIU reads the image", "")),
        }
    }
    let kernel = cns_engine::criu::kernel_release();
    if kernel != meta.kernel {
        out.push(Finding::new(
            Severity::Warning,
            "kernel",
            format!("dumped on {}, running {kernel}", meta.kernel),
            "a different kernel can lack features the image uses",
            "run `cns check` here; restore fails clearly if a feature is missing",
        ));
    }
    if check_ports {
        for p in &meta.workload.net.publish {
            if std::net::TcpListener::bind((p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), p.host_port)).is_err() {
                out.push(Finding::new(Severity::Blocker, "port", format!("host port {}", p.host_port), "a published port is taken on this host", "stop what listens there, or restore a copy with --as (copies publish nothing)"));
            }
        }
    }
    out
}
