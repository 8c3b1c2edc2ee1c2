//! Confinement beyond the namespaces: a root file system of the workload's
//! own (rootfs.rs), bind and tmpfs mounts and a read-only root. Each is
//! recorded in the workload's [`Confinement`], handed to CRIU at dump and
//! rebuilt at restore, so it is still in force after a restore.

pub mod cgroup;
pub mod rootfs;
pub mod user;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cns_mounts::confine::{Layout, Mount};

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};

/// Inside a `--rootfs` workload, where its log is bind-mounted (in its own
/// /dev tmpfs: nothing is written to the root it was given).
pub const LOG_IN_ROOTFS: &str = "/dev/.cns-log";
/// Inside a `--rootfs` workload, where cns's static init is bind-mounted.
pub const INIT_IN_ROOTFS: &str = "/dev/.cns-init";
/// The key of the init's bind mount in CRIU's external-mount map.
pub const INIT_KEY: &str = "cns-init";

/// The file-system confinement of a workload: what `--rootfs`, `--bind`,
/// `--tmpfs` and `--read-only` asked for. Dump and restore rebuild it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confinement {
    /// The directory its root is an overlay over (never written: changes
    /// go to the workload's own upper layer, see paths.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<cns_mounts::confine::Mount>,
    #[serde(default)]
    pub read_only: bool,
    /// The user the command runs as (root when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<user::User>,
    /// Resource limits, enforced by a cgroup of the workload's own.
    #[serde(default, skip_serializing_if = "cgroup::Limits::is_empty")]
    pub limits: cgroup::Limits,
}

impl Confinement {
    /// Host paths of the bind mounts, by destination.
    pub fn binds(&self) -> impl Iterator<Item = (&std::path::Path, &std::path::Path)> {
        self.mounts.iter().filter_map(|m| match m {
            cns_mounts::confine::Mount::Bind { src, dst, .. } => Some((src.as_path(), dst.as_path())),
            _ => None,
        })
    }
}

/// What the user asked for, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ConfineOptions {
    pub rootfs: Option<PathBuf>,
    /// `SRC:DST[:ro]`.
    pub binds: Vec<String>,
    /// `DST[:SIZE]`.
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    /// `UID[:GID]` or names.
    pub user: Option<String>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// `--memory SIZE`.
    pub memory: Option<String>,
    /// `--pids N`.
    pub pids: Option<u64>,
    /// `--cpus N`.
    pub cpus: Option<String>,
}

/// Validates the options before anything starts: the root and every bind
/// source exist (resolved to their real paths), destinations are distinct.
/// `own`: cns's own directories (state, lib, images, config), which no
/// bind source or root may be in or contain: a workload would see (or
/// write) other workloads' checkpoints and cns's state through it.
pub fn check(o: &ConfineOptions, own: &[PathBuf]) -> Result<Confinement> {
    let rootfs = o.rootfs.as_deref().map(|r| check_rootfs(r, own)).transpose()?;
    let mut mounts = Vec::new();
    for b in &o.binds {
        let m = Mount::parse_bind(b).map_err(|e| Error::invalid(format!("invalid --bind: {e}"), "use --bind SRC:DST or --bind SRC:DST:ro with absolute paths"))?;
        mounts.push(resolve_source(m, own)?);
    }
    for t in &o.tmpfs {
        mounts.push(Mount::parse_tmpfs(t).map_err(|e| Error::invalid(format!("invalid --tmpfs: {e}"), "use --tmpfs DST or --tmpfs DST:SIZE, e.g. --tmpfs /tmp:64m"))?);
    }
    let mut seen = BTreeSet::new();
    for m in &mounts {
        if !seen.insert(m.dst().to_path_buf()) {
            return Err(Error::invalid(format!("{} is mounted twice", m.dst().display()), "give each destination once"));
        }
        // On the host's own root cns creates no mountpoint (that would
        // change the host's tree); in a root of its own it does.
        if rootfs.is_none() && std::fs::symlink_metadata(m.dst()).is_err() {
            return Err(Error::invalid(
                format!("the mount destination {} does not exist", m.dst().display()),
                "create it on the host first (cns does not change the host's tree), or give the workload a root of its own with --rootfs",
            ));
        }
    }
    if o.user.is_none() && !o.groups.is_empty() {
        return Err(Error::invalid("--group needs --user", "add --user UID[:GID]"));
    }
    let etc = rootfs.as_deref().unwrap_or(Path::new("/")).join("etc");
    let user = o.user.as_deref().map(|u| user::parse_user(u, &o.groups, &etc)).transpose()?;
    let limits = cgroup::parse(o.memory.as_deref(), o.pids, o.cpus.as_deref())?;
    Ok(Confinement { rootfs, mounts, read_only: o.read_only, user, limits })
}

/// Refuses a path in or above one of cns's own directories.
fn outside_own(what: &str, p: &Path, own: &[PathBuf]) -> Result<()> {
    let own_real: Vec<PathBuf> = own.iter().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())).collect();
    if let Some(d) = own_real.iter().find(|d| p.starts_with(d) || d.starts_with(p)) {
        return Err(Error::invalid(
            format!("{what} {} would show the workload cns's own {}", p.display(), d.display()),
            "give a directory that neither is inside cns's state, lib or config directories nor contains them",
        ));
    }
    Ok(())
}

fn check_rootfs(p: &Path, own: &[PathBuf]) -> Result<PathBuf> {
    let real = std::fs::canonicalize(p).map_err(|e| Error::invalid(format!("--rootfs {}: {e}", p.display()), "give an existing directory holding the workload's root file system"))?;
    if !real.is_dir() {
        return Err(Error::invalid(format!("--rootfs {} is not a directory", p.display()), "give a directory holding the workload's root file system"));
    }
    if real == Path::new("/") {
        return Err(Error::invalid("--rootfs / is the host's own root", "leave --rootfs out to run on the host's root, or use --read-only"));
    }
    outside_own("--rootfs", &real, own)?;
    Ok(real)
}

/// A bind's source, resolved (symlinks followed now, on the host, never
/// later inside the workload's root).
fn resolve_source(m: Mount, own: &[PathBuf]) -> Result<Mount> {
    let Mount::Bind { src, dst, read_only } = m else { return Ok(m) };
    let real = std::fs::canonicalize(&src).map_err(|e| Error::invalid(format!("bind source {}: {e}", src.display()), "the source of --bind must exist on the host"))?;
    outside_own("bind source", &real, own)?;
    Ok(Mount::Bind { src: real, dst, read_only })
}

/// The mount layout of workload `name`.
pub fn layout(lib: &Path, name: &str, c: &Confinement) -> Layout {
    Layout { rootfs: c.rootfs.as_ref().map(|lower| rootfs::layers(lib, name, lower)), mounts: c.mounts.clone(), read_only: c.read_only }
}

/// CRIU's external-mount entries of a dump: every bind by its destination,
/// and a rootfs workload's init.
pub fn dump_externals(c: &Confinement) -> Vec<String> {
    let mut v: Vec<String> = c.binds().map(|(_, dst)| format!("mnt[{}]:{}", dst.display(), cns_mounts::confine::bind_key(dst))).collect();
    if c.rootfs.is_some() {
        v.push(format!("mnt[{INIT_IN_ROOTFS}]:{INIT_KEY}"));
    }
    v
}

/// The same at restore: each key mapped to the host path to mount (the
/// static init is installed by the restore itself, not here: a plan
/// changes nothing).
pub fn restore_externals(lib: &Path, c: &Confinement) -> Vec<String> {
    let mut v: Vec<String> = c.binds().map(|(src, dst)| format!("mnt[{}]:{}", cns_mounts::confine::bind_key(dst), src.display())).collect();
    if c.rootfs.is_some() {
        v.push(format!("mnt[{INIT_KEY}]:{}", rootfs::static_init_path(lib).display()));
    }
    v
}

/// Restore pre-flight: every host path the mounts need is there.
pub fn missing_sources(c: &Confinement) -> Result<()> {
    if let Some(r) = c.rootfs.as_ref().filter(|r| !r.is_dir()) {
        return Err(Error::new(crate::ErrorKind::Blocked, format!("the workload's root directory {} is missing", r.display()))
            .with_hint("put the root file system back there, or restore with --rootfs DIR naming where it is now"));
    }
    for (src, dst) in c.binds() {
        if std::fs::symlink_metadata(src).is_err() {
            return Err(Error::new(crate::ErrorKind::Blocked, format!("the source {} of the bind mount on {} is missing", src.display(), dst.display()))
                .with_hint(format!("create it again, or restore with --bind NEWSRC:{} naming where it is now", dst.display())));
        }
    }
    Ok(())
}

/// At restore: sources the user gives again (`--bind SRC:DST` for a DST the
/// checkpoint mounts, `--rootfs DIR`) replace the recorded ones. A
/// checkpoint from elsewhere has none recorded (see Meta::distrust), so it
/// needs them all given.
pub fn override_sources(c: &mut Confinement, rootfs: Option<&Path>, binds: &[String], lib: &Path, own: &[PathBuf]) -> Result<()> {
    if let Some(r) = rootfs {
        if c.rootfs.is_none() {
            return Err(Error::invalid("the checkpoint has no root file system of its own: --rootfs does not apply", "drop --rootfs"));
        }
        c.rootfs = Some(check_rootfs(r, own)?);
    }
    for b in binds {
        let given = resolve_source(Mount::parse_bind(b).map_err(|e| Error::invalid(format!("invalid --bind: {e}"), "use --bind SRC:DST"))?, own)?;
        let Mount::Bind { src, dst, .. } = given else { continue };
        let Some(Mount::Bind { src: old, .. }) = c.mounts.iter_mut().find(|m| matches!(m, Mount::Bind { dst: d, .. } if *d == dst)) else {
            return Err(Error::invalid(format!("the checkpoint has no bind mount on {}", dst.display()), "--bind at restore only gives a new source for a mount the checkpoint has"));
        };
        *old = src;
    }
    // The resolv.conf cns itself bind-mounted (a host with a loopback
    // resolver) is this host's to choose again.
    for m in c.mounts.iter_mut() {
        if let Mount::Bind { src, dst, .. } = m {
            if src.as_os_str().is_empty() && dst == Path::new("/etc/resolv.conf") {
                *src = match rootfs::host_root_resolv_conf(lib) {
                    Some((p, text)) => {
                        rootfs::write_resolv_conf(&p, &text)?;
                        p
                    }
                    None => std::fs::canonicalize("/etc/resolv.conf").unwrap_or_else(|_| PathBuf::from("/etc/resolv.conf")),
                };
            }
        }
    }
    if c.rootfs.as_ref().is_some_and(|r| r.as_os_str().is_empty()) {
        return Err(Error::invalid("the checkpoint has a root file system of its own, made on another host", "give its root directory on this host with --rootfs DIR"));
    }
    if let Some((_, dst)) = c.binds().find(|(src, _)| src.as_os_str().is_empty()) {
        return Err(Error::invalid(format!("the checkpoint bind-mounts a host directory on {}, made on another host", dst.display()), format!("give its source on this host with --bind SRC:{}", dst.display())));
    }
    Ok(())
}

/// The empty directory bound read-only over cns's own directories inside a
/// workload (cns_mounts::mask_dirs): `LIB/.mask`, made 0500 when missing.
/// A restore makes it too: CRIU binds the masks from it again.
pub fn mask_dir(lib: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = lib.join(".mask");
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => return Ok(dir),
        Ok(_) => {
            return Err(Error::new(crate::ErrorKind::Exists, format!("{} is not a directory", dir.display()))
                .with_hint("remove it: cns makes it again, an empty directory it hides its own directories under"));
        }
        Err(_) => {}
    }
    crate::files::mkdir_private(lib).with_context(|| format!("cannot create {}", lib.display()))?;
    match std::fs::DirBuilder::new().mode(0o500).create(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() && !dir.is_symlink() => Ok(dir),
        r => r.map(|()| dir.clone()).with_context(|| format!("cannot create {}", dir.display())),
    }
}

/// Destinations of the read-only bind mounts (made read-only again after a
/// restore: see cns_mounts::confine::remount_read_only_in).
pub fn read_only_binds(c: &Confinement) -> Vec<PathBuf> {
    c.mounts.iter().filter_map(|m| match m {
        Mount::Bind { dst, read_only: true, .. } => Some(dst.clone()),
        _ => None,
    }).collect()
}

/// For a checkpoint from elsewhere: its host paths are believed for nothing.
pub fn distrust(c: &mut Confinement) {
    if c.rootfs.is_some() {
        c.rootfs = Some(PathBuf::new());
    }
    for m in &mut c.mounts {
        if let Mount::Bind { src, .. } = m {
            *src = PathBuf::new();
        }
    }
}
