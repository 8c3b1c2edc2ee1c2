//! The file-system view a workload is confined to: an optional root of its
//! own (an overlay over a directory the user names, entered with
//! pivot_root so the host's tree is detached, not just hidden by chroot),
//! bind mounts, tmpfs mounts and a read-only root.
//!
//! [`prepare`] builds the view inside the workload's fresh mount namespace
//! (after [`crate::drop_host_mounts`]); the caller then adds its own mounts
//! (the log, cns's init) under the returned root and calls [`pivot`].
//!
//! Every bind mount is dumped by CRIU as an *external* mount keyed by its
//! destination ([`bind_key`]) and mapped back to its source at restore, so
//! a checkpoint never carries a host path it would mount blindly.

use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

use crate::MountError;

/// One mount the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// `--bind SRC:DST[:ro]`: the host's SRC at DST.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        #[serde(default)]
        read_only: bool,
    },
    /// `--tmpfs DST[:SIZE]`: an empty, private tmpfs at DST.
    Tmpfs { dst: PathBuf, size: Option<String> },
}

impl Mount {
    pub fn dst(&self) -> &Path {
        match self {
            Mount::Bind { dst, .. } | Mount::Tmpfs { dst, .. } => dst,
        }
    }

    /// Parses `SRC:DST[:ro|:rw]` (paths as given; the caller resolves SRC).
    pub fn parse_bind(s: &str) -> Result<Mount, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (src, dst, false),
            [src, dst, "ro"] => (src, dst, true),
            [src, dst, "rw"] => (src, dst, false),
            [_, _, other] => return Err(format!("unknown bind option {other:?} in {s:?} (use ro or rw)")),
            _ => return Err(format!("{s:?} is not SRC:DST[:ro] (paths may not contain ':')")),
        };
        let src = checked_path(src, "bind source")?;
        let dst = checked_path(dst, "bind destination")?;
        check_dst(&dst)?;
        Ok(Mount::Bind { src, dst, read_only })
    }

    /// Parses `DST[:SIZE]`; SIZE is a number with an optional k, m or g.
    pub fn parse_tmpfs(s: &str) -> Result<Mount, String> {
        let (dst, size) = match s.split_once(':') {
            Some((d, z)) => (d, Some(z)),
            None => (s, None),
        };
        if let Some(z) = size {
            let digits = z.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || z.len() - digits.len() > 1 {
                return Err(format!("tmpfs size {z:?} is not a number with an optional k, m or g"));
            }
        }
        let dst = checked_path(dst, "tmpfs destination")?;
        check_dst(&dst)?;
        Ok(Mount::Tmpfs { dst, size: size.map(str::to_string) })
    }
}

/// The key of a bind mount in CRIU's external-mount map.
pub fn bind_key(dst: &Path) -> String {
    let mut k = String::from("cns-bind");
    for b in dst.as_os_str().as_encoded_bytes() {
        k.push(if b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.' { *b as char } else { '_' });
    }
    k
}

fn checked_path(p: &str, what: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(format!("{what} {p:?} is not an absolute path"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{what} {p:?} contains '..'"));
    }
    if p.contains(',') || p.contains('\n') {
        return Err(format!("{what} {p:?} contains ',' or a newline"));
    }
    Ok(path)
}

/// Destinations cns manages itself.
fn check_dst(dst: &Path) -> Result<(), String> {
    if dst == Path::new("/") {
        return Err("a mount on / replaces the whole root: use --rootfs".into());
    }
    for own in ["/proc", "/dev"] {
        if dst.starts_with(own) {
            return Err(format!("{} is set up by cns itself; mount somewhere else", dst.display()));
        }
    }
    Ok(())
}

/// A root of the workload's own: `lower` (the user's directory, never
/// written) under `upper` (the workload's changes, cns-owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the overlay is mounted (in the caller's mount namespace only).
    pub merged: PathBuf,
}

impl Rootfs {
    /// The overlay's mount options.
    pub fn data(&self) -> String {
        format!("lowerdir={},upperdir={},workdir={}", self.lower.display(), self.upper.display(), self.work.display())
    }

    /// Mounts the overlay at `merged`.
    pub fn mount(&self) -> Result<(), MountError> {
        mount(Some("cns-rootfs"), &self.merged, Some("overlay"), MsFlags::empty(), Some(self.data().as_str()))
            .map_err(|source| MountError::Overlay { lower: self.lower.clone(), source })
    }
}

/// The view to build.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub rootfs: Option<Rootfs>,
    pub mounts: Vec<Mount>,
    pub read_only: bool,
}

/// `root` joined with the absolute `p`.
pub fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The view, built: the directory that becomes `/` and, for a read-only
/// root, the mounts [`Prepared::seal`] makes read-only once the caller has
/// added its own mounts (a bind mount of a read-only mount is read-only).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub root: PathBuf,
    seal: Vec<PathBuf>,
}

impl Prepared {
    /// Makes the root and the inherited mounts under it read-only.
    pub fn seal(&self) -> Result<(), MountError> {
        for p in &self.seal {
            remount_read_only(p)?;
        }
        Ok(())
    }
}

/// Builds the view (propagation must already be private). Returns the
/// directory that becomes `/` ([`pivot`] into it when it is not `/`).
pub fn prepare(layout: &Layout) -> Result<Prepared, MountError> {
    let mut seal: Vec<PathBuf> = if layout.read_only && layout.rootfs.is_none() {
        crate::read_mountinfo("self")?.into_iter().map(|m| PathBuf::from(m.mount_point)).filter(|p| keeps_writable(p)).collect()
    } else {
        vec![]
    };
    let root = match &layout.rootfs {
        Some(r) => {
            r.mount()?;
            let root = r.merged.clone();
            minimal_dev(&root.join("dev"))?;
            let proc_dir = root.join("proc");
            make_dir(&proc_dir)?;
            mount(Some("proc"), &proc_dir, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>).map_err(MountError::Proc)?;
            root
        }
        None => {
            crate::mount_proc()?;
            // Over nothing of the host's: crate::drop_host_mounts took its
            // /dev/shm away.
            crate::mount_private_tmpfs(Path::new("/dev/shm"), "64m")?;
            PathBuf::from("/")
        }
    };
    for m in &layout.mounts {
        add(&root, m)?;
    }
    if layout.read_only {
        seal.insert(0, root.clone());
    }
    Ok(Prepared { root, seal })
}

/// Inherited host mounts a read-only workload still writes through: its
/// own /proc and /dev (device nodes, ptys, /dev/shm).
fn keeps_writable(p: &Path) -> bool {
    p != Path::new("/") && !p.starts_with("/proc") && !p.starts_with("/dev")
}

fn make_dir(p: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(p).map_err(|source| MountError::Mountpoint { path: p.to_path_buf(), source })
}

/// Creates the mountpoint for `src` at `target`: a directory, or an empty
/// file when `src` is not a directory.
fn mountpoint_for(src: &Path, target: &Path) -> Result<(), MountError> {
    if src.is_dir() {
        return make_dir(target);
    }
    if let Some(parent) = target.parent() {
        make_dir(parent)?;
    }
    if !target.exists() {
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target).map_err(|source| MountError::Mountpoint { path: target.to_path_buf(), source })?;
    }
    Ok(())
}

/// Adds one mount. Mountpoints are created only in a root of the
/// workload's own (in its upper layer): the host's tree is never changed,
/// so on the host's root the destination must exist.
fn add(root: &Path, m: &Mount) -> Result<(), MountError> {
    let target = under(root, m.dst());
    let own_root = root != Path::new("/");
    match m {
        Mount::Bind { src, read_only, .. } => {
            if own_root {
                mountpoint_for(src, &target)?;
            }
            crate::bind_file(src, &target)?;
            if *read_only {
                remount_read_only(&target)?;
            }
        }
        Mount::Tmpfs { size, .. } => {
            if own_root {
                make_dir(&target)?;
            }
            let data = match size {
                Some(s) => format!("mode=1777,size={s}"),
                None => "mode=1777".to_string(),
            };
            mount(Some("tmpfs"), &target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(data.as_str()))
                .map_err(|source| MountError::Tmpfs { path: target.clone(), source })?;
        }
    }
    Ok(())
}

/// Remounts the mount at `p` read-only, keeping its nosuid, nodev, noexec
/// and atime flags (a bind remount resets what it does not name).
pub fn remount_read_only(p: &Path) -> Result<(), MountError> {
    let err = |source| MountError::ReadOnly { path: p.to_path_buf(), source };
    let st = nix::sys::statvfs::statvfs(p).map_err(err)?;
    let f = st.flags();
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (have, want) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            flags |= want;
        }
    }
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>).map_err(err)
}

/// Makes the mounts at `paths` read-only inside the mount namespace of
/// `pid`. CRIU restores an external bind mount without its read-only flag;
/// cns calls this at post-restore, before the tree runs again. A forked
/// child enters the namespace (setns(2) into a mount namespace needs a
/// single-threaded caller) and makes only system calls.
pub fn remount_read_only_in(pid: i32, paths: &[PathBuf]) -> Result<(), MountError> {
    use std::ffi::CString;
    if paths.is_empty() {
        return Ok(());
    }
    let ns = CString::new(format!("/proc/{pid}/ns/mnt")).map_err(|_| MountError::Pivot(nix::Error::EINVAL))?;
    let targets: Vec<CString> = paths.iter().map(|p| CString::new(p.as_os_str().as_encoded_bytes())).collect::<Result<_, _>>().map_err(|_| MountError::Pivot(nix::Error::EINVAL))?;
    // SAFETY: the child only makes system calls on memory prepared before
    // the fork, then _exits; the parent waits for it.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(MountError::ReadOnly { path: paths[0].clone(), source: e }),
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: open/setns/statvfs/mount/_exit on prepared C strings.
            unsafe {
                let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::setns(fd, libc::CLONE_NEWNS) < 0 {
                    libc::_exit(100);
                }
                for (i, t) in targets.iter().enumerate() {
                    let mut st: libc::statvfs = std::mem::zeroed();
                    if libc::statvfs(t.as_ptr(), &mut st) < 0 {
                        libc::_exit(1 + i as i32);
                    }
                    let keep = st.f_flag & (libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC | libc::ST_NOATIME | libc::ST_NODIRATIME | libc::ST_RELATIME);
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep as libc::c_ulong;
                    if libc::mount(std::ptr::null(), t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) < 0 {
                        libc::_exit(1 + i as i32);
                    }
                }
                libc::_exit(0)
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) if c >= 1 && (c as usize) <= paths.len() => {
                Err(MountError::ReadOnly { path: paths[c as usize - 1].clone(), source: nix::Error::EPERM })
            }
            _ => Err(MountError::ReadOnly { path: PathBuf::from(format!("/proc/{pid}/ns/mnt")), source: nix::Error::EPERM }),
        },
    }
}

/// A /dev of the workload's own: a small tmpfs with the usual device nodes,
/// a private devpts instance for ptys and a private /dev/shm.
fn minimal_dev(dev: &Path) -> Result<(), MountError> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let derr = |path: &Path, source| MountError::Dev { path: path.to_path_buf(), source };
    make_dir(dev)?;
    mount(Some("cns-dev"), dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755,size=64k")).map_err(|e| derr(dev, e))?;
    for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] {
        let p = dev.join(name);
        mknod(&p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor)).map_err(|e| derr(&p, e))?;
        // mknod honours the umask: set the mode it asked for.
        nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, &p, Mode::from_bits_truncate(0o666), nix::sys::stat::FchmodatFlags::FollowSymlink).map_err(|e| derr(&p, e))?;
    }
    let pts = dev.join("pts");
    make_dir(&pts)?;
    mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=0620")).map_err(|e| derr(&pts, e))?;
    let ptmx = dev.join("ptmx");
    std::os::unix::fs::symlink("pts/ptmx", &ptmx).map_err(|source| MountError::Mountpoint { path: ptmx, source })?;
    for (link, to) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(to, &p).map_err(|source| MountError::Mountpoint { path: p, source })?;
    }
    let shm = dev.join("shm");
    make_dir(&shm)?;
    crate::mount_private_tmpfs(&shm, "64m")?;
    Ok(())
}

/// Makes `root` the root of this mount namespace and detaches the old one
/// (pivot_root(".", "."), then a lazy unmount of the old root stacked
/// under it), so nothing of the host's tree stays reachable.
pub fn pivot(root: &Path) -> Result<(), MountError> {
    nix::unistd::chdir(root).map_err(MountError::Pivot)?;
    nix::unistd::pivot_root(".", ".").map_err(MountError::Pivot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(MountError::Pivot)?;
    nix::unistd::chdir("/").map_err(MountError::Pivot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binds_and_tmpfs() {
        assert_eq!(Mount::parse_bind("/a:/b").expect("bind"), Mount::Bind { src: "/a".into(), dst: "/b".into(), read_only: false });
        assert_eq!(Mount::parse_bind("/a:/b:ro").expect("bind"), Mount::Bind { src: "/a".into(), dst: "/b".into(), read_only: true });
        assert!(Mount::parse_bind("a:/b").is_err());
        assert!(Mount::parse_bind("/a:/b:rx").is_err());
        assert!(Mount::parse_bind("/a:/../etc").is_err());
        assert!(Mount::parse_bind("/a:/").is_err());
        assert!(Mount::parse_bind("/a:/proc/x").is_err());
        assert_eq!(Mount::parse_tmpfs("/t:16m").expect("tmpfs"), Mount::Tmpfs { dst: "/t".into(), size: Some("16m".into()) });
        assert!(Mount::parse_tmpfs("/t:lots").is_err());
        assert!(Mount::parse_tmpfs("/t:16mm").is_err());
    }

    #[test]
    fn bind_keys_are_plain_and_distinct() {
        assert_eq!(bind_key(Path::new("/data/x")), "cns-bind_data_x");
        assert_ne!(bind_key(Path::new("/a/b")), bind_key(Path::new("/a-b")));
    }
}
