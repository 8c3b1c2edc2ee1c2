//! A root file system of the workload's own (`--rootfs DIR`): an overlay
//! with DIR as its read-only lower layer and the workload's own upper
//! layer under cns's lib dir, so DIR is never written and every copy
//! restored with `--as` has its own view. A dump saves the upper layer
//! (taken while the tree is frozen) into the checkpoint as a tar archive;
//! a restore unpacks it into the new workload's layers. GNU tar does the
//! archiving, as it does for CRIU's own tmpfs dumps: it keeps overlayfs's
//! whiteouts (device nodes) and opaque-directory xattrs.

use std::path::{Path, PathBuf};
use std::process::Command;

use cns_mounts::confine::Rootfs;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::workload::Paths;

/// The upper layer's archive in a checkpoint.
pub const UPPER_ARCHIVE: &str = "rootfs-upper.tar";

/// The static init, built from launcher/init/init.c (see build.rs).
static STATIC_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cns-init-static"));

/// The layers of workload `name` over `lower`.
pub fn layers(paths: &Paths, name: &str, lower: &Path) -> Rootfs {
    let d = paths.rootfs_dir(name);
    Rootfs { lower: lower.to_path_buf(), upper: d.join("upper"), work: d.join("work"), merged: d.join("merged") }
}

/// Creates empty layers for `name` (an old set is removed first).
pub fn create(paths: &Paths, name: &str) -> Result<()> {
    remove(paths, name);
    let d = paths.rootfs_dir(name);
    crate::files::mkdir_private(&paths.lib.join("rootfs")).with_context(|| format!("cannot create {}", paths.lib.join("rootfs").display()))?;
    for sub in ["", "upper", "work", "merged"] {
        let p = d.join(sub);
        std::fs::create_dir(&p).or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) }).with_context(|| format!("cannot create {}", p.display()))?;
    }
    // The upper layer's root is the workload's "/": world-readable, as / is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("upper"), std::fs::Permissions::from_mode(0o755)).with_context(|| format!("cannot set the mode of {}", d.join("upper").display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("cannot set the mode of {}", d.display()))?;
    Ok(())
}

/// Removes the layers of `name` (cns's own directory; nothing else).
pub fn remove(paths: &Paths, name: &str) {
    let d = paths.rootfs_dir(name);
    if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
        if let Err(e) = std::fs::remove_dir_all(&d) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot remove a workload's root layers");
        }
    }
}

fn tar(args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
    let out = Command::new("tar").args(args).output().map_err(|e| Error::wrap(format!("cannot run tar to {what}"), e).with_hint("install GNU tar"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(ErrorKind::System, format!("tar failed to {what}: {}", err.lines().next().unwrap_or("no message"))));
    }
    Ok(())
}

/// Archives `upper` into `dest` (the tree is frozen meanwhile).
pub fn archive_upper(upper: &Path, dest: &Path) -> Result<()> {
    tar(
        &["--create".as_ref(), "--file".as_ref(), dest.as_os_str(), "--numeric-owner".as_ref(), "--sparse".as_ref(), "--xattrs".as_ref(), "--xattrs-include=*".as_ref(), "--acls".as_ref(), "--directory".as_ref(), upper.as_os_str(), ".".as_ref()],
        "save the root file system's changes",
    )
}

/// Unpacks a checkpoint's upper layer into `upper` (fresh and empty). GNU
/// tar refuses absolute and `..` names and delays symlinks to the end, so
/// an entry cannot land outside `upper`.
pub fn extract_upper(archive: &Path, upper: &Path) -> Result<()> {
    tar(
        &["--extract".as_ref(), "--file".as_ref(), archive.as_os_str(), "--numeric-owner".as_ref(), "--same-permissions".as_ref(), "--xattrs".as_ref(), "--xattrs-include=*".as_ref(), "--acls".as_ref(), "--directory".as_ref(), upper.as_os_str()],
        "unpack the root file system's changes",
    )
}

/// Where [`static_init`] installs the init (named by the hash of its bytes).
pub fn static_init_path(paths: &Paths) -> PathBuf {
    use blake2::Digest;
    let hash = blake2::Blake2b512::digest(STATIC_INIT);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    paths.lib.join("bin").join(format!("cns-init-static-{hex}"))
}

/// The static init, installed once under the lib dir by the hash of its
/// bytes and checked byte for byte before each use (a workload that could
/// replace it must not get its code run as another workload's PID 1).
pub fn static_init(paths: &Paths) -> Result<PathBuf> {
    let path = static_init_path(paths);
    let dir = paths.lib.join("bin");
    if std::fs::read(&path).is_ok_and(|b| b == STATIC_INIT) {
        return Ok(path);
    }
    crate::files::mkdir_private(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".init-static.{:016x}", crate::files::random_u64()));
    crate::files::write_atomic(&tmp, STATIC_INIT, 0o755)?;
    let _ = std::fs::remove_file(&path);
    let r = std::fs::rename(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    r.with_context(|| format!("cannot install {}", path.display()))?;
    Ok(path)
}
