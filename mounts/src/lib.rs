//! Mount namespace setup for cns workloads.
//!
//! Called inside the workload's fresh mount namespace, in this order
//! ([`drop_host_mounts`], then [`confine::prepare`]):
//! 1. make every mount private, recursively, so nothing propagates back to
//!    the host and CRIU sees no shared peers outside the tree;
//! 2. unmount the host-only mounts ([`host_only_mounts`]): `nsfs` mounts
//!    (left by `ip netns add` under /run/netns; CRIU cannot restore a mount
//!    whose root is a namespace file) and cns's own state and CRIU-cache
//!    tmpfs, and the host's /dev/shm (the host's, even hidden under the
//!    workload's own, would be dumped with its contents);
//! 3. mount a fresh /proc for the new pid namespace;
//! 4. mount a fresh, private tmpfs on /dev/shm.

pub mod confine;

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// One failed mount step.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("making mount propagation private (mount --make-rprivate /) failed: {0}")]
    MakePrivate(#[source] nix::Error),
    #[error("unmounting the host's mount at {path} in the workload's namespace failed: {source}")]
    UnmountHost { path: PathBuf, source: nix::Error },
    #[error("mounting a fresh /proc failed: {0}")]
    Proc(#[source] nix::Error),
    #[error("mounting a private tmpfs on {path} failed: {source}")]
    Tmpfs { path: PathBuf, source: nix::Error },
    #[error("bind-mounting {src} onto {target} failed: {source}")]
    Bind { src: PathBuf, target: PathBuf, source: nix::Error },
    #[error("reading {path} failed: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("masking {path} failed: {source}")]
    Mask { path: PathBuf, source: nix::Error },
    #[error("mounting the overlay over {lower} failed: {source}")]
    Overlay { lower: PathBuf, source: nix::Error },
    #[error("creating the mountpoint {path} failed: {source}")]
    Mountpoint { path: PathBuf, source: std::io::Error },
    #[error("making {path} read-only failed: {source}")]
    ReadOnly { path: PathBuf, source: nix::Error },
    #[error("setting up {path} failed: {source}")]
    Dev { path: PathBuf, source: nix::Error },
    #[error("pivot_root into the new root failed: {0}")]
    Pivot(#[source] nix::Error),
}

impl MountError {
    /// The errno behind the failure, when there is one.
    pub fn errno(&self) -> Option<nix::Error> {
        match self {
            MountError::MakePrivate(e) | MountError::Proc(e) | MountError::Pivot(e) => Some(*e),
            MountError::UnmountHost { source, .. }
            | MountError::Tmpfs { source, .. }
            | MountError::Bind { source, .. }
            | MountError::Mask { source, .. }
            | MountError::Overlay { source, .. }
            | MountError::ReadOnly { source, .. }
            | MountError::Dev { source, .. } => Some(*source),
            MountError::Read { .. } => None,
            MountError::Mountpoint { source, .. } => source.raw_os_error().map(nix::Error::from_raw),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self.errno() {
            Some(nix::Error::EPERM) => "cns needs root (CAP_SYS_ADMIN) to set up a mount namespace",
            Some(nix::Error::EBUSY) => "something in the namespace keeps the mount busy",
            Some(nix::Error::ENOENT) => "a path of the mount is missing: check the source and the root directory",
            Some(nix::Error::EINVAL) if matches!(self, MountError::Overlay { .. }) => "the root directory must be a directory the kernel can use as an overlay's lower layer (not itself on overlayfs)",
            _ => "check `dmesg` for the kernel's reason",
        }
    }
}

/// One line of /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    /// Root of the mount within its filesystem.
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// Optional fields such as `shared:1`, `master:2`.
    pub propagation: Vec<String>,
}

impl MountInfo {
    /// Whether the mount has shared propagation.
    pub fn is_shared(&self) -> bool {
        self.propagation.iter().any(|p| p.starts_with("shared:"))
    }
}

/// Undoes the octal escapes mountinfo uses for space, tab, newline, backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (pure; unit-tested). Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let _dev = l.next()?;
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let _opts = l.next()?;
    let propagation = l.map(str::to_string).collect();
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_string();
    let source = unescape(r.next().unwrap_or(""));
    Some(MountInfo { id, parent, root, mount_point, fs_type, source, propagation })
}

/// Reads a /proc file whole with large reads: the kernel generates such a
/// file anew for each read(2), and std's `read_to_string` starts with 32
/// bytes and doubles (a dozen reads for a mount table). The buffer's spare
/// room is handed to read(2) as it is, not zeroed first: zeroing 64 KiB
/// touched sixteen fresh pages for a file of a few KiB, in a child whose
/// every first touch of a page is a fault.
pub fn read_proc(path: &std::path::Path) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(buf.capacity());
        }
        let len = buf.len();
        let spare = buf.capacity() - len;
        // SAFETY: the kernel writes at most `spare` bytes into the
        // allocation's spare capacity, starting at its end; only the bytes
        // it reports written are taken into the vector.
        let n = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().add(len).cast(), spare) };
        match n {
            0 => break,
            // SAFETY: read(2) initialised these `n` bytes (n <= spare).
            n if n > 0 => unsafe { buf.set_len(len + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads the mount table of `pid` ("self" for the caller).
pub fn read_mountinfo(pid: &str) -> Result<Vec<MountInfo>, MountError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text = read_proc(&path).map_err(|source| MountError::Read { path, source })?;
    Ok(parse_mountinfo(&text))
}

/// The source name of the tmpfs cns keeps its state in on hosts whose /run
/// is not a tmpfs (launcher's workload::store). Host-only, like the next.
pub const STATE_SOURCE: &str = "cns-state";

/// Mounts a root-only tmpfs (mode 0700, nosuid, nodev, noexec) named
/// `source` at the directory `dir`.
pub fn mount_private_dir(dir: &Path, source: &str, size: &str) -> Result<(), MountError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("size={size},mode=0700");
    mount(Some(source), dir, Some("tmpfs"), flags, Some(data.as_str())).map_err(|source| MountError::Tmpfs { path: dir.to_path_buf(), source })
}

/// Makes the directory `dir` a root-only tmpfs of its own
/// ([`mount_private_dir`]) unless it is on a tmpfs already. Under an
/// exclusive flock of its parent, so that of several commands racing here
/// one mounts and the others wait and then find it mounted (none writes a
/// file the mount would hide); and only on a missing or empty directory,
/// so nothing that is there gets hidden. Returns whether `dir` is a tmpfs
/// afterwards.
pub fn ensure_private_tmpfs(dir: &Path, source: &str, size: &str) -> Result<bool, MountError> {
    if is_tmpfs(dir) {
        return Ok(true);
    }
    let Some(parent) = dir.parent() else { return Ok(false) };
    let err = |source| MountError::Tmpfs { path: dir.to_path_buf(), source };
    let io = |e: std::io::Error| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    let parent = std::fs::File::open(parent).map_err(io)?;
    let _lock = nix::fcntl::Flock::lock(parent, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| err(e))?;
    match nix::unistd::mkdir(dir, nix::sys::stat::Mode::S_IRWXU) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(err(e)),
    }
    // Mounted meanwhile by whoever held the lock, or made on a tmpfs.
    if is_tmpfs(dir) {
        return Ok(true);
    }
    // A directory, not a symlink somebody left there: mount follows links.
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(err(nix::Error::ENOTDIR));
    }
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Ok(false);
    }
    mount_private_dir(dir, source, size)?;
    Ok(true)
}

/// Whether `dir` is on a tmpfs.
pub fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The source name of the small tmpfs cns gives CRIU for its kernel-feature
/// cache on hosts whose /run is not a tmpfs (cns_engine::kdat). It belongs
/// to the host: a workload's mount namespace drops it.
pub const CRIU_CACHE_SOURCE: &str = "cns-criu-cache";

/// Mount points that belong to the host and not to a workload: nsfs mounts
/// (a namespace pinned by `ip netns`), cns's state tmpfs and CRIU's cache
/// tmpfs. Deepest first,
/// so stacked ones unmount cleanly.
pub fn host_only_mounts(mounts: &[MountInfo]) -> Vec<String> {
    let host_only = |m: &&MountInfo| m.fs_type == "nsfs" || (m.fs_type == "tmpfs" && (m.source == CRIU_CACHE_SOURCE || m.source == STATE_SOURCE));
    let mut v: Vec<String> = mounts.iter().filter(host_only).map(|m| m.mount_point.clone()).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    v.dedup();
    v
}

/// `mount --make-rprivate /`.
pub fn make_rprivate() -> Result<(), MountError> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(MountError::MakePrivate)
}

/// Unmounts every host-only mount (see [`host_only_mounts`]) in the current
/// mount namespace.
pub fn unmount_host_only() -> Result<usize, MountError> {
    let mounts = read_mountinfo("self")?;
    let targets = host_only_mounts(&mounts);
    for t in &targets {
        match umount2(Path::new(t), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => return Err(MountError::UnmountHost { path: t.into(), source }),
        }
    }
    Ok(targets.len())
}

/// Detaches every mount stacked at `path` in this mount namespace (none:
/// nothing to do).
pub fn unmount_all(path: &Path) -> Result<usize, MountError> {
    let mut n = 0;
    // A bound on a loop that ends when nothing is mounted there any more.
    for _ in 0..64 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => n += 1,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(n),
            Err(source) => return Err(MountError::UnmountHost { path: path.to_path_buf(), source }),
        }
    }
    Ok(n)
}

/// Mounts a fresh procfs on /proc (for the caller's pid namespace).
pub fn mount_proc() -> Result<(), MountError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>).map_err(MountError::Proc)
}

/// Mounts a private tmpfs at `path` (mode 1777), if `path` is a directory.
pub fn mount_private_tmpfs(path: &Path, size: &str) -> Result<bool, MountError> {
    if !path.is_dir() {
        return Ok(false);
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let data = format!("mode=1777,size={size}");
    mount(Some("shm"), path, Some("tmpfs"), flags, Some(data.as_str()))
        .map_err(|source| MountError::Tmpfs { path: path.to_path_buf(), source })?;
    Ok(true)
}

/// Bind-mounts the file `src` onto the existing file `target` (private, as
/// its parent). CRIU dumps such a mount as external when told its
/// mountpoint, and a restore maps it to another file with
/// `--external mnt[KEY]:PATH` — what cns does for each workload's log.
pub fn bind_file(src: &Path, target: &Path) -> Result<(), MountError> {
    mount(Some(src), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|source| MountError::Bind { src: src.to_path_buf(), target: target.to_path_buf(), source })?;
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|source| MountError::Bind { src: src.to_path_buf(), target: target.to_path_buf(), source })
}

/// Hides each directory of `paths` that exists under a read-only bind of
/// `empty` (an empty directory of cns's own on the host's file system):
/// what cns does to its own state, images and logs inside a workload.
/// Without CAP_SYS_ADMIN the workload cannot lift the masks.
///
/// A bind, not a tmpfs: CRIU archives every tmpfs of a workload at each
/// dump (a `tar` and a `gzip`) and unpacks it at each restore, about 5 ms
/// each way for an empty one here, while a bind of a directory of the root
/// file system costs it nothing and keeps its read-only flag through a
/// restore.
pub fn mask_dirs(empty: &Path, paths: &[PathBuf]) -> Result<usize, MountError> {
    let mut n = 0;
    // After the first mask, `empty` may be under it: the others bind the
    // first mask itself.
    let mut source = empty;
    for path in paths {
        if !path.is_dir() {
            continue;
        }
        read_only_bind(source, path, MsFlags::empty(), MsFlags::MS_NOEXEC).map_err(|source| MountError::Mask { path: path.to_path_buf(), source })?;
        source = path;
        n += 1;
    }
    Ok(n)
}

/// Makes the directory `path` read-only in this mount namespace (a bind
/// mount onto itself, remounted read-only). A missing `path` is left alone.
pub fn bind_readonly(path: &Path) -> Result<bool, MountError> {
    if !path.is_dir() {
        return Ok(false);
    }
    read_only_bind(path, path, MsFlags::MS_REC, MsFlags::empty()).map_err(|source| MountError::Mask { path: path.to_path_buf(), source })?;
    Ok(true)
}

/// Binds `src` onto `target` (with `bind`: MS_REC or nothing), then
/// remounts the bind read-only, nosuid and nodev, plus `extra`.
fn read_only_bind(src: &Path, target: &Path, bind: MsFlags, extra: MsFlags) -> nix::Result<()> {
    mount(Some(src), target, None::<&str>, MsFlags::MS_BIND | bind, None::<&str>)?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    mount(None::<&str>, target, None::<&str>, ro, None::<&str>)
}

/// Steps 1 and 2: everything that unmounts. Each
/// unmount ends in an RCU grace period, which waits for every CPU; a CPU
/// busy in the kernel elsewhere (the caller creating the workload's veth
/// meanwhile) stretched one unmount from tens of microseconds to more than
/// a millisecond, so the caller runs these before it starts that work.
/// `own_root`: the workload gets a root of its own, whose /dev is its own.
pub fn drop_host_mounts(own_root: bool) -> Result<(), MountError> {
    make_rprivate()?;
    let n = unmount_host_only()?;
    tracing::debug!(unmounted = n, "host-only mounts removed");
    if !own_root {
        // The host's /dev/shm (one mount or several stacked): under the
        // workload's private one it would be hidden from the workload but
        // not from CRIU, which would archive its files (the host's) into
        // every checkpoint and spawn a tar for each of them.
        unmount_all(Path::new("/dev/shm"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
25 24 0:23 / /dev/shm rw,relatime shared:5 - tmpfs tmpfs rw,size=24683656k
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 27 0:4 net:[4026532999] /run/netns/x rw shared:7 - nsfs nsfs rw
91 90 0:4 net:[4026533000] /run/netns/x/y rw - nsfs nsfs rw
92 27 0:50 / /mnt/with\\040space rw - tmpfs none rw
";

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].mount_point, "/");
        assert!(m[2].is_shared());
        assert!(!m[0].is_shared());
        assert_eq!(m[3].fs_type, "nsfs");
        assert_eq!(m[3].root, "net:[4026532999]");
        assert_eq!(m[5].mount_point, "/mnt/with space");
    }

    #[test]
    fn nsfs_deepest_first() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(host_only_mounts(&m), vec!["/run/netns/x/y".to_string(), "/run/netns/x".to_string()]);
    }

    #[test]
    fn cns_tmpfs_mounts_are_host_only() {
        let m = parse_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             93 27 0:51 / /run/cns/.criu rw,nosuid - tmpfs cns-criu-cache rw,size=1024k\n\
             94 27 0:52 / /run/other rw - tmpfs tmpfs rw\n\
             95 27 0:53 / /run/cns rw - tmpfs cns-state rw,size=65536k\n");
        assert_eq!(host_only_mounts(&m), vec!["/run/cns/.criu".to_string(), "/run/cns".to_string()]);
    }

    #[test]
    fn read_proc_reads_small_and_large_files_whole() {
        // Stable files: one far under the first 64 KiB read, one far over.
        for path in ["/proc/self/cmdline", "/proc/cpuinfo", "/proc/kallsyms"] {
            let p = Path::new(path);
            assert_eq!(read_proc(p).expect(path), std::fs::read_to_string(p).expect(path), "{path}");
        }
        assert!(read_proc(Path::new("/proc/kallsyms")).expect("kallsyms").len() > 64 << 10);
    }

    #[test]
    fn skips_garbage() {
        assert!(parse_mountinfo("garbage\n1 2\n").is_empty());
    }
}
