//! Action scripts at CRIU's stages, as CRIU's own `--action-script`: cns
//! runs them from CRIU's notify callbacks, with the stage in
//! `CRTOOLS_SCRIPT_ACTION` (pre-dump, network-lock, post-dump,
//! network-unlock, pre-restore, setup-namespaces, post-setup-namespaces,
//! post-restore, pre-resume, post-resume, ...) and the tree's root in
//! `CRTOOLS_INIT_PID` when CRIU names it. A script that fails makes the
//! operation fail and CRIU roll back (a dump leaves the tree running) —
//! the documented place to snapshot a filesystem at post-dump.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs every script for `stage`; the first failure, as one line.
pub fn run(scripts: &[PathBuf], stage: &str, pid: Option<i32>, name: &str, images: &Path) -> Result<(), String> {
    for s in scripts {
        let mut cmd = Command::new(s);
        cmd.env("CRTOOLS_SCRIPT_ACTION", stage).env("CNS_NAME", name).env("CNS_IMAGES", images);
        if let Some(p) = pid {
            cmd.env("CRTOOLS_INIT_PID", p.to_string());
        }
        match cmd.status() {
            Ok(st) if st.success() => {}
            Ok(st) => return Err(format!("action script {} failed at {stage} ({st})", s.display())),
            Err(e) => return Err(format!("cannot run action script {} at {stage}: {e}", s.display())),
        }
    }
    Ok(())
}

/// Refuses scripts that cannot run, before anything starts.
pub fn check(scripts: &[PathBuf]) -> crate::error::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for s in scripts {
        let ok = std::fs::metadata(s).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            return Err(crate::error::Error::invalid(format!("action script {} is not an executable file", s.display()), "give --action-script the path of an executable script"));
        }
    }
    Ok(())
}
