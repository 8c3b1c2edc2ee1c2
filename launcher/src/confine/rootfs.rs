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

/// The upper layer's archive in a checkpoint.
pub const UPPER_ARCHIVE: &str = "rootfs-upper.tar";

/// The static init, built from launcher/init/init.c (see build.rs).
static STATIC_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cns-init-static"));
/// `cns-init-static-` and the first 8 bytes of the BLAKE2b-512 of its bytes, in hex (build.rs).
const STATIC_INIT_NAME: &str = include_str!(concat!(env!("OUT_DIR"), "/cns-init-static.name"));

/// The layers of workload `name` over `lower`.
/// A workload's own layers: `upper` (its changes), `work` (overlayfs's)
/// and `merged` (a mountpoint, used only inside private mount namespaces).
pub fn dir(lib: &Path, name: &str) -> PathBuf {
    lib.join("rootfs").join(name)
}

pub fn layers(lib: &Path, name: &str, lower: &Path) -> Rootfs {
    let d = dir(lib, name);
    Rootfs { lower: lower.to_path_buf(), upper: d.join("upper"), work: d.join("work"), merged: d.join("merged") }
}

/// Creates empty layers for `name` (an old set is removed first).
pub fn create(lib: &Path, name: &str) -> Result<()> {
    remove(lib, name);
    let d = dir(lib, name);
    crate::files::mkdir_private(&lib.join("rootfs")).with_context(|| format!("cannot create {}", lib.join("rootfs").display()))?;
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

/// The host's name servers a workload can reach through NAT: those of
/// /etc/resolv.conf that are not on the host's loopback (a local stub
/// such as systemd-resolved's 127.0.0.53 is not reachable from another
/// network namespace), else those of systemd-resolved's upstream list.
pub fn reachable_nameservers() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    pick_nameservers(&read("/etc/resolv.conf"), &read("/run/systemd/resolve/resolv.conf"))
}

/// The `nameserver` addresses of a resolv.conf.
fn nameservers(text: &str) -> Vec<std::net::IpAddr> {
    text.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).filter_map(|s| s.trim().parse().ok()).collect()
}

/// The name servers of `resolv` that are not loopback ones, else those of
/// `upstream` (pure: unit-tested).
pub fn pick_nameservers(resolv: &str, upstream: &str) -> Vec<String> {
    let reachable = |text: &str| -> Vec<String> { nameservers(text).into_iter().filter(|a| !a.is_loopback()).map(|a| a.to_string()).collect() };
    let v = reachable(resolv);
    if v.is_empty() { reachable(upstream) } else { v }
}

/// For a workload on the host's root whose host resolver is a loopback
/// stub (systemd-resolved's 127.0.0.53, unreachable from another network
/// namespace): a resolv.conf of the stub's upstream servers, to bind-mount
/// read-only over /etc/resolv.conf (named by its content, shared, under
/// cns's lib dir). None when the host's own resolv.conf works inside.
pub fn host_root_resolv_conf(lib: &Path) -> Option<(PathBuf, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let host = read("/etc/resolv.conf");
    let own = nameservers(&host);
    if own.is_empty() || !own.iter().all(|a| a.is_loopback()) {
        return None;
    }
    let servers = pick_nameservers(&host, &read("/run/systemd/resolve/resolv.conf"));
    if servers.is_empty() {
        return None;
    }
    let text: String = format!("# written by cns: the host's upstream name servers, reached through NAT\n{}", servers.iter().map(|s| format!("nameserver {s}\n")).collect::<String>());
    use blake2::Digest;
    let hash = blake2::Blake2b512::digest(text.as_bytes());
    Some((lib.join("resolv").join(format!("{}.conf", crate::files::hex(&hash[..8]))), text))
}

/// Writes a resolv.conf chosen by [`host_root_resolv_conf`] (mode 0644:
/// the workload's users read it through its bind mount).
pub fn write_resolv_conf(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        // Private is fine: the workload reaches the file through its bind mount only.
        crate::files::mkdir_private(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::files::write_atomic(path, text.as_bytes(), 0o644)
}

/// Gives a workload with a root of its own a resolv.conf that works
/// inside: written into its own upper layer (so it is part of its root,
/// carried by its checkpoints), the given root left as it is.
pub fn seed_resolv_conf(upper: &Path) -> Result<()> {
    let servers = reachable_nameservers();
    if servers.is_empty() {
        return Ok(());
    }
    let etc = upper.join("etc");
    std::fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("cannot set the mode of {}", etc.display()))?;
    let text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
    let path = etc.join("resolv.conf");
    std::fs::write(&path, format!("# written by cns: the host's name servers, reached through NAT\n{text}")).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Removes the layers of `name` (cns's own directory; nothing else).
pub fn remove(lib: &Path, name: &str) {
    let d = dir(lib, name);
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
pub fn static_init_path(lib: &Path) -> PathBuf {
    lib.join("bin").join(STATIC_INIT_NAME)
}

/// The static init, installed once under the lib dir by the hash of its
/// bytes and checked byte for byte before each use (a workload that could
/// replace it must not get its code run as another workload's PID 1).
pub fn static_init(lib: &Path, state: &Path) -> Result<PathBuf> {
    let path = static_init_path(lib);
    let dir = lib.join("bin");
    // The full compare is remembered in cns's state dir, hidden from
    // workloads (lib/bin is only read-only inside them).
    if crate::files::verified(&path, &state.join(".init-static-verified"), || std::fs::read(&path).is_ok_and(|b| b == STATIC_INIT)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_init_is_named_by_the_hash_of_its_bytes() {
        use blake2::Digest;
        let hash = blake2::Blake2b512::digest(STATIC_INIT);
        assert_eq!(STATIC_INIT_NAME, format!("cns-init-static-{}", crate::files::hex(&hash[..8])));
    }

    #[test]
    fn loopback_stubs_are_replaced_by_their_upstream_servers() {
        let stub = "nameserver 127.0.0.53\noptions edns0\n";
        let upstream = "nameserver 10.1.2.3\nnameserver ::1\nnameserver 2001:db8::1\n";
        assert_eq!(pick_nameservers(stub, upstream), vec!["10.1.2.3".to_string(), "2001:db8::1".to_string()]);
        assert_eq!(pick_nameservers("nameserver 10.9.9.9\n", upstream), vec!["10.9.9.9".to_string()]);
        assert!(pick_nameservers(stub, "").is_empty());
    }
}
