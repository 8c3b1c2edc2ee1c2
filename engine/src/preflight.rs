//! Pre-flight: will a dump or a restore work? Answered from /proc and the
//! image before anything is frozen.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::image::{ImageDir, ImageFile, ImageMount};
use crate::sockdiag::{Diag, TcpSocket, UnixSocket};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Blocker,
}

/// One finding: what, where, and the fix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub object: String,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(severity: Severity, code: &'static str, object: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { severity, code, object: object.into(), message: message.into(), fix: fix.into() }
    }
}

/// What the dump will need, learned from the tree.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DumpNeeds {
    pub tcp_established: bool,
    pub tcp_skip_in_flight: bool,
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    /// A file unlinked while open but linked elsewhere (CRIU `--link-remap`).
    pub link_remap: bool,
    /// A device node opened by a path that is gone (CRIU `--evasive-devices`).
    pub evasive_devices: bool,
    /// The largest deleted file CRIU must carry, when over its 1 MiB default.
    pub ghost_limit: Option<u64>,
    /// Anonymous memory of the tree: about what the dump writes.
    pub memory_bytes: u64,
    pub findings: Vec<Finding>,
}

/// Every process of the tree rooted at `root` (host PIDs).
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let p = t.path().join("children");
                if let Ok(text) = fs::read_to_string(p) {
                    out.extend(text.split_whitespace().filter_map(|s| s.parse::<i32>().ok()));
                }
            }
        }
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Inode numbers of the sockets the processes hold.
fn socket_inodes(pids: &[i32]) -> BTreeSet<u64> {
    let mut s = BTreeSet::new();
    for pid in pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in rd.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                if let Some(ino) = t.to_str().and_then(|t| t.strip_prefix("socket:[")).and_then(|t| t.strip_suffix(']')) {
                    if let Ok(v) = ino.parse() {
                        s.insert(v);
                    }
                }
            }
        }
    }
    s
}

/// The `flags:` of an fdinfo text (octal).
pub fn fdinfo_flags(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// Devices whose state is nothing but their path (or that CRIU handles).
/// Whether an open fd is a device (not a regular file under /dev, such as
/// the log of a workload with a root of its own, bind-mounted there).
fn is_device(fd_link: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(fd_link).is_ok_and(|m| m.file_type().is_char_device() || m.file_type().is_block_device())
}

fn plain_device(path: &str) -> bool {
    const PLAIN: [&str; 6] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/ptmx"];
    PLAIN.contains(&path) || path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console" || path.starts_with("/dev/shm/")
}

/// TCP sockets of the tree that CRIU treats specially.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounts {
    /// Connected (established, half-closed, closing, connecting): CRIU
    /// refuses them without --tcp-established.
    pub connected: usize,
    /// Listening sockets with connections waiting in the accept queue: CRIU
    /// refuses them without --tcp-skip-in-flight.
    pub in_flight: usize,
}

/// Counts the tree's TCP sockets, sorted as CRIU's can_dump_inet_sk does.
pub fn count_tcp(socks: &[TcpSocket], inodes: &BTreeSet<u64>) -> TcpCounts {
    // Established, SYN_SENT, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING.
    const CONNECTED: [u8; 7] = [1, 2, 4, 5, 8, 9, 11];
    const LISTEN: u8 = 10;
    let mut c = TcpCounts::default();
    for s in socks.iter().filter(|s| inodes.contains(&s.inode)) {
        if CONNECTED.contains(&s.state) {
            c.connected += 1;
        } else if s.state == LISTEN && s.rqueue > 0 {
            c.in_flight += 1;
        }
    }
    c
}

fn tree_tcp(diag: Option<&Diag>, inodes: &BTreeSet<u64>) -> TcpCounts {
    let Some(diag) = diag else { return TcpCounts::default() };
    match diag.tcp() {
        Ok(socks) => count_tcp(&socks, inodes),
        Err(e) => {
            tracing::debug!(error = %e, "inet_diag unavailable; TCP sockets not checked");
            TcpCounts::default()
        }
    }
}

/// Mounts the workload inherited whose mount point is gone from the host's
/// filesystem (a host mount that was unmounted and its directory removed
/// after the workload started). CRIU can neither dump nor restore them.
pub fn vanished_mountpoints(root: i32, exists: impl Fn(&str) -> bool) -> Vec<Finding> {
    let Ok(mounts) = cns_mounts::read_mountinfo(&root.to_string()) else { return Vec::new() };
    // Only a tree whose root is the host's own root inherited host mounts
    // whose directories are host paths; a root of its own (cns run
    // --rootfs) has its mount points in its own layer.
    let root_of = |ms: &[cns_mounts::MountInfo]| ms.iter().find(|m| m.mount_point == "/").map(|m| (m.fs_type.clone(), m.source.clone(), m.root.clone()));
    let host = cns_mounts::read_mountinfo("self").ok();
    if host.is_some_and(|h| root_of(&h) != root_of(&mounts)) {
        return Vec::new();
    }
    mounts
        .iter()
        // Mounts on the root mount, whose directories are the host's; deeper
        // ones sit on their parents' filesystems.
        .filter(|m| m.mount_point != "/" && mounts.iter().any(|p| p.id == m.parent && p.mount_point == "/"))
        .filter(|m| !exists(&m.mount_point))
        .map(|m| {
            Finding::new(
                Severity::Blocker,
                "mount-vanished",
                m.mount_point.clone(),
                format!("the workload still has a {} mount whose directory is gone from the host", m.fs_type),
                format!("unmount it inside the workload (`cns exec NAME -- umount -l {}`), or recreate the directory", m.mount_point),
            )
        })
        .collect()
}

/// Unix sockets CRIU cannot dump, or dumps only with --ext-unix-sk. `all`
/// is every unix socket of the tree's network namespace: CRIU collects
/// only those, so a peer missing from it (in another netns, e.g. the
/// host's) fails the dump whatever the flags ("Unix socket X without peer").
pub fn unix_findings(all: &[UnixSocket], tree: &BTreeSet<u64>, needs: &mut DumpNeeds) {
    const ESTABLISHED: u8 = 1;
    let netns: BTreeSet<u64> = all.iter().map(|s| s.ino).collect();
    // A client whose connection waits in a listener's queue shows no peer
    // (the embryonic socket is not listed). CRIU dumps such in-flight
    // connections with the listener, unless the client already sent data
    // ("Non-empty write queue on an in-flight socket").
    let in_flight = all.iter().any(|s| tree.contains(&s.ino) && !s.pending.is_empty());
    for s in all.iter().filter(|s| tree.contains(&s.ino)) {
        let object = format!("unix socket {}", s.ino);
        if in_flight && s.is_stream() && s.state == ESTABLISHED && s.peer == 0 && s.shutdown != 3 {
            if s.wqueue > 0 {
                needs.findings.push(Finding::new(
                    Severity::Blocker,
                    "unix-in-flight-data",
                    format!("{object} ({} bytes sent)", s.wqueue),
                    "a unix connection not yet accepted already carries data; CRIU cannot dump it",
                    "accept the connection (or have the client wait to send) before the dump",
                ));
            }
            continue;
        }
        let outside = s.peer != 0 && !tree.contains(&s.peer);
        if s.is_stream() && s.state == ESTABLISHED && outside {
            needs.findings.push(Finding::new(
                Severity::Blocker,
                "unix-stream-external",
                format!("{object} (peer {})", s.peer),
                "a stream unix connection has its other end outside the tree; CRIU can dump only half of it",
                "close the connection before the dump, or run its peer inside the workload",
            ));
        } else if s.is_stream() && s.state == ESTABLISHED && s.peer == 0 && s.shutdown != 3 {
            needs.findings.push(Finding::new(
                Severity::Blocker,
                "unix-stream-dangling",
                object,
                "a stream unix socket lost its peer but is not shut down both ways (CRIU: dangling connection)",
                "close the socket (or shutdown(SHUT_RDWR) it) before the dump",
            ));
        } else if outside && !netns.contains(&s.peer) {
            needs.findings.push(Finding::new(
                Severity::Blocker,
                "unix-peer-other-netns",
                format!("{object} (peer {})", s.peer),
                "a unix socket is connected to a socket of another network namespace (the host's); CRIU cannot dump it",
                "connect it after the restore instead, or keep both ends inside the workload",
            ));
        } else if outside {
            needs.ext_unix_sk = true;
            needs.findings.push(Finding::new(
                Severity::Warning,
                "unix-dgram-external",
                format!("{object} (peer {})", s.peer),
                "a datagram unix socket is connected outside the tree",
                "cns dumps with --ext-unix-sk; the peer must exist at restore",
            ));
        }
    }
}

/// Locks held through one fd, from its /proc/PID/fdinfo/FD text (blocked
/// waiters, shown with "->", do not count). Cheaper than /proc/locks,
/// whose every read walks all the machine's locks.
pub fn fdinfo_locks(fdinfo: &str) -> usize {
    fdinfo.lines().filter(|l| l.starts_with("lock:") && !l.contains("->")).count()
}

/// File locks held by the tree's processes, through their fds.
fn tree_locks(pids: &[i32]) -> usize {
    let mut n = 0;
    for pid in pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { continue };
        for e in rd.flatten() {
            n += fs::read_to_string(e.path()).map(|t| fdinfo_locks(&t)).unwrap_or(0);
        }
    }
    n
}

/// Mount ids of the tree's mount namespace.
fn mount_ids_of(root: i32) -> BTreeSet<u32> {
    fs::read_to_string(format!("/proc/{root}/mountinfo"))
        .map(|t| t.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `t` (an fd's target) is a terminal.
fn is_tty_path(t: &str) -> bool {
    t.starts_with("/dev/pts/") || t.starts_with("/dev/tty") || t == "/dev/console"
}

/// Indices of the ptys whose master (/dev/ptmx) the tree holds.
fn pty_masters(pids: &[i32]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for pid in pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in rd.flatten() {
            if fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("/dev/ptmx") || t.to_string_lossy().starts_with("/dev/pts/ptmx")) {
                let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
                if let Some(i) = info.lines().find_map(|l| l.strip_prefix("tty-index:")).and_then(|v| v.trim().parse().ok()) {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Whether the terminal `t` that `pid` holds is the tree's own: a pty
/// whose master the tree holds (CRIU dumps both ends), also when reached
/// as /dev/tty (the controlling terminal), or the ptmx master itself.
fn tty_inside(pid: i32, t: &str, masters: &BTreeSet<u32>) -> bool {
    if t.starts_with("/dev/ptmx") || t.starts_with("/dev/pts/ptmx") {
        return true;
    }
    if let Some(n) = t.strip_prefix("/dev/pts/").and_then(|n| n.trim_end_matches(" (deleted)").parse::<u32>().ok()) {
        return masters.contains(&n);
    }
    if t == "/dev/tty" {
        // The controlling terminal: tty_nr (field 7 of stat); pts have majors 136-143.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let tty_nr: u64 = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(4)).and_then(|v| v.parse().ok()).unwrap_or(0);
        let (major, minor) = ((tty_nr >> 8) & 0xfff, (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00));
        return (136..=143).contains(&major) && masters.contains(&(((major - 136) << 20 | minor) as u32));
    }
    false
}

/// A deleted file the tree holds open: a ghost (carried in the image; the
/// ghost limit raised when it is bigger than CRIU's default), a link remap
/// when another hard link keeps it alive, an evasive device when it is a
/// device node.
fn deleted_file(fd: &Path, object: &str, needs: &mut DumpNeeds) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(m) = fs::metadata(fd) else { return };
    let ft = m.file_type();
    if ft.is_char_device() || ft.is_block_device() {
        needs.evasive_devices = true;
        needs.findings.push(Finding::new(Severity::Warning, "deleted-device", object, "the tree holds a device node whose path is gone", "cns dumps with --evasive-devices"));
    } else if ft.is_file() && m.nlink() > 0 {
        needs.link_remap = true;
        needs.findings.push(Finding::new(Severity::Warning, "link-remap", object, "a file was unlinked while open, another hard link keeps it", "cns dumps with --link-remap"));
    } else if ft.is_file() && m.len() > GHOST_LIMIT {
        needs.ghost_limit = Some(needs.ghost_limit.unwrap_or(0).max(m.len()));
        needs.findings.push(Finding::new(
            Severity::Warning,
            "ghost-file",
            object,
            format!("a deleted open file of {} MiB travels in the image", m.len() >> 20),
            "cns raises CRIU's ghost limit for it; close it before dumping to keep the image small",
        ));
    }
}

/// CRIU's default ghost-file limit.
pub const GHOST_LIMIT: u64 = 1 << 20;

/// Deleted files the tree maps (after closing them): as [`deleted_file`].
fn deleted_mappings(pid: i32, needs: &mut DumpNeeds) {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
    let mut seen = BTreeSet::new();
    for l in maps.lines().filter(|l| l.ends_with(" (deleted)") && !l.contains("/memfd:") && !l.contains("/dev/zero") && !l.contains("/SYSV")) {
        let Some(range) = l.split_whitespace().next() else { continue };
        let path = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
        if seen.insert(path.clone()) {
            deleted_file(Path::new(&format!("/proc/{pid}/map_files/{range}")), &format!("pid {pid} maps {path}"), needs);
        }
    }
}

/// The effective capability mask of this process (CRIU, its child, runs
/// with the same).
pub fn caps_of_self() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .unwrap_or(0)
}

const CAP_SYS_RESOURCE: u64 = 24;

/// What CRIU's own privileges forbid: without CAP_SYS_RESOURCE, CRIU
/// (root) cannot read the rlimits of a process whose real, effective and
/// saved uids and gids are not all root's, so such a tree fails to dump
/// ("Can't get rlimit"); plain CRIU fails the same.
pub fn privilege_findings(pids: &[i32], caps: u64, needs: &mut DumpNeeds) {
    if caps & (1 << CAP_SYS_RESOURCE) != 0 {
        return;
    }
    for pid in pids {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let ids = |f: &str| -> Vec<u32> { status.lines().find_map(|l| l.strip_prefix(f)).map(|v| v.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect()).unwrap_or_default() };
        let (uids, gids) = (ids("Uid:"), ids("Gid:"));
        if uids.iter().chain(&gids).any(|&id| id != 0) {
            needs.findings.push(Finding::new(
                Severity::Blocker,
                "criu-privileges",
                format!("pid {pid} (uid {}, gid {})", uids.first().copied().unwrap_or(0), gids.first().copied().unwrap_or(0)),
                "CRIU cannot read the rlimits of a process of another user: root here lacks CAP_SYS_RESOURCE",
                "run cns with CAP_SYS_RESOURCE (a root with the full capability set; see `grep CapEff /proc/self/status`), or run the workload's processes as root",
            ));
            return;
        }
    }
}

/// Checks a running tree before a dump.
pub fn check_dump(root: i32, shell_job: bool, images_parent: &Path) -> DumpNeeds {
    let mut needs = DumpNeeds::default();
    let pids = tree_pids(root);
    let inodes = socket_inodes(&pids);
    // One sock_diag socket in the tree's netns for all socket questions.
    let diag = Diag::open(Some(root)).map_err(|e| tracing::debug!(error = %e, "sock_diag unavailable")).ok();
    let tcp = tree_tcp(diag.as_ref(), &inodes);
    if tcp.connected > 0 {
        needs.tcp_established = true;
        needs.findings.push(Finding::new(
            Severity::Warning,
            "tcp-established",
            format!("{} connected TCP socket(s)", tcp.connected),
            "the tree holds established (or half-closed) TCP connections",
            "cns dumps with --tcp-established (the network is locked while it dumps)",
        ));
    }
    if tcp.in_flight > 0 {
        needs.tcp_skip_in_flight = true;
        needs.findings.push(Finding::new(
            Severity::Warning,
            "tcp-in-flight",
            format!("{} listening socket(s) with unaccepted connections", tcp.in_flight),
            "connections wait in a listen queue; they cannot be checkpointed",
            "cns dumps with --tcp-skip-in-flight: those clients will have to reconnect",
        ));
    }
    needs.findings.extend(vanished_mountpoints(root, |p| Path::new(p).exists()));
    match diag.as_ref().map(Diag::unix) {
        Some(Ok(all)) => unix_findings(&all, &inodes, &mut needs),
        Some(Err(e)) => tracing::debug!(error = %e, "sock_diag failed; unix sockets not checked"),
        None => {}
    }
    let nlocks = tree_locks(&pids);
    if nlocks > 0 {
        needs.file_locks = true;
        needs.findings.push(Finding::new(
            Severity::Warning,
            "file-locks",
            format!("{nlocks} file lock(s)"),
            "the tree holds file locks",
            "cns dumps with --file-locks",
        ));
    }
    privilege_findings(&pids, caps_of_self(), &mut needs);
    let masters = pty_masters(&pids);
    let mount_ids = mount_ids_of(root);
    // Pipe inode -> (a read end in the tree, a write end in the tree).
    let mut pipes: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
    for pid in &pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in rd.flatten() {
            let Ok(t) = fs::read_link(e.path()) else { continue };
            let t = t.to_string_lossy().into_owned();
            let object = format!("pid {pid} fd {} -> {t}", e.file_name().to_string_lossy());
            if t.starts_with("pipe:") {
                let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
                let writes = fdinfo_flags(&info).is_some_and(|f| f & 0o3 == 0o1);
                let ends = pipes.entry(t.clone()).or_default();
                if writes { ends.1 = true } else { ends.0 = true }
            }
            if t.starts_with("/dev/") && !plain_device(&t) && !is_tty_path(&t) && is_device(&e.path()) {
                needs.findings.push(Finding::new(
                    Severity::Warning,
                    "device",
                    object.clone(),
                    "the tree holds a device open; CRIU reopens it by path and does not save its state",
                    "fine for stateless devices; close stateful ones (kvm, fuse, tun) before dumping",
                ));
            }
            if is_tty_path(&t) && !shell_job && !tty_inside(*pid, &t, &masters) {
                needs.findings.push(Finding::new(
                    Severity::Blocker,
                    "tty",
                    object.clone(),
                    "the tree uses a terminal owned outside it",
                    "dump with --shell-job, or start it with stdio on files (cns run does)",
                ));
            }
            if t.ends_with(" (deleted)") && !t.starts_with("/memfd:") {
                deleted_file(&e.path(), &object, &mut needs);
            }
            if t.starts_with('/') && !t.starts_with("/memfd:") && !mount_ids.is_empty() {
                let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy())).unwrap_or_default();
                let mnt = info.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse::<u32>().ok());
                if mnt.is_some_and(|m| !mount_ids.contains(&m)) {
                    needs.findings.push(Finding::new(
                        Severity::Blocker,
                        "foreign-mount-fd",
                        object.clone(),
                        "a file descriptor points into a mount that is not in the workload's mount namespace (a POSIX message queue, or an fd from the host); CRIU cannot dump it",
                        "close it before the dump (CRIU does not checkpoint POSIX message queues)",
                    ));
                }
            }
        }
        deleted_mappings(*pid, &mut needs);
    }
    for (pipe, (r, w)) in pipes {
        if r != w {
            needs.findings.push(Finding::new(
                Severity::Warning,
                "pipe-external",
                pipe,
                format!("the tree holds only the {} end of a pipe; the other end is outside it", if r { "read" } else { "write" }),
                "after a restore that end has no peer (EOF or EPIPE); keep both ends inside the workload",
            ));
        }
    }
    // Memory to write vs free space where the images go.
    let rss: u64 = pids
        .iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("RssAnon:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))))
        .sum::<u64>()
        * 1024;
    needs.memory_bytes = rss;
    if let Ok(st) = nix::sys::statvfs::statvfs(images_parent) {
        let free = st.blocks_available() * st.fragment_size();
        if free < rss + (16 << 20) {
            needs.findings.push(Finding::new(
                Severity::Blocker,
                "images-space",
                images_parent.display().to_string(),
                format!("{} MiB free where the images go, the tree has {} MiB of memory to write", free >> 20, rss >> 20),
                "free space or dump elsewhere with --images DIR",
            ));
        }
    }
    needs
}

/// MemAvailable in bytes.
pub fn mem_available() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map(|k| k * 1024)
}

/// Memory a restore started by this process may use: the smaller of
/// MemAvailable and what the memory cgroups this process is in (and their
/// ancestors) still allow. CRIU's restore is killed by the cgroup's OOM
/// killer past that point.
pub fn memory_budget() -> Option<u64> {
    let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limits = cgroup_limits(&cg, |p| fs::read_to_string(p).ok());
    match (mem_available(), limits) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// The tightest `limit - usage` over the memory cgroups named in
/// /proc/self/cgroup text and their ancestors, v1 or v2. `read` reads a file.
pub fn cgroup_limits(self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let num = |p: &str| read(p).and_then(|t| t.trim().parse::<u64>().ok());
    let mut best: Option<u64> = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (base, limit_f, usage_f) = if ctrl.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")
        } else if ctrl.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else {
            continue;
        };
        let mut p = path.trim_end_matches('/').to_string();
        loop {
            let dir = format!("{base}{p}");
            if let (Some(limit), Some(usage)) = (num(&format!("{dir}/{limit_f}")), num(&format!("{dir}/{usage_f}"))) {
                // v1 reports "no limit" as a huge number; v2 as "max" (not a number).
                if limit < (1 << 60) {
                    let left = limit.saturating_sub(usage);
                    best = Some(best.map_or(left, |b| b.min(left)));
                }
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => break,
            }
            if p.is_empty() {
                break;
            }
        }
    }
    best
}

/// CRIU fstypes it mounts anew (or fills from the image) at restore: files
/// on them are never looked up on the host.
const RESTORED_FS: &[u32] = &[1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 14, 19, 23];

/// The host path CRIU will open for `f` at restore (it restores with root
/// `/`), or `None` when it never looks the file up by its own path: a file
/// CRIU remaps (ghost, linked or procfs remap), an external file, or one on
/// a mount CRIU recreates itself (proc, tmpfs, devpts, ...) or that is
/// declared external.
pub fn restore_lookup(f: &ImageFile, remapped: &BTreeSet<u32>, mounts: &std::collections::BTreeMap<u32, &ImageMount>) -> Option<String> {
    if remapped.contains(&f.id) || f.ext || f.path.contains(" (deleted)") {
        return None;
    }
    if let Some(m) = u32::try_from(f.mnt_id).ok().and_then(|id| mounts.get(&id)) {
        if m.external || RESTORED_FS.contains(&m.fstype) {
            return None;
        }
    }
    Some(format!("/{}", f.path.trim_start_matches('/')))
}

/// Restore pre-flight of the files an image refers to: only what CRIU
/// itself will look up on this host, checked as CRIU checks it (existence,
/// without following a final symlink when the file was opened so; the
/// mode, and the size unless it was opened write-only for appending).
/// `layers`: a workload with a root of its own is looked up in its
/// overlay's layers, upper first (empty: the host's root).
pub fn file_findings(files: &[ImageFile], remaps: &[crate::image::Remap], mounts: &[ImageMount], layers: &[&Path]) -> Vec<Finding> {
    use std::os::unix::fs::MetadataExt;
    let remapped: BTreeSet<u32> = remaps.iter().map(|r| r.orig_id).collect();
    let by_id: std::collections::BTreeMap<u32, &ImageMount> = mounts.iter().map(|m| (m.mnt_id, m)).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in files {
        let Some(path) = restore_lookup(f, &remapped, &by_id) else { continue };
        if !seen.insert((path.clone(), f.mode, f.size)) {
            continue;
        }
        let nofollow = f.flags & (libc::O_NOFOLLOW as u32) != 0;
        let stat = |p: &Path| if nofollow { fs::symlink_metadata(p) } else { fs::metadata(p) };
        let meta = if layers.is_empty() {
            stat(Path::new(&path))
        } else {
            let rel = path.trim_start_matches('/');
            layers.iter().map(|l| stat(&l.join(rel))).find(|m| m.is_ok()).unwrap_or_else(|| stat(&layers[0].join(rel)))
        };
        let m = match meta {
            Ok(m) => m,
            Err(_) => {
                out.push(Finding::new(Severity::Blocker, "file-missing", path.clone(), "a file the checkpoint uses is missing", "put the file back at this path (same content as at dump time)"));
                continue;
            }
        };
        if let Some(mode) = f.mode.filter(|&mode| mode != m.mode()) {
            out.push(Finding::new(
                Severity::Blocker,
                "file-changed",
                path.clone(),
                format!("mode is 0{:o}, the checkpoint expects 0{mode:o}", m.mode()),
                "put back the file the workload had at dump time, or dump again",
            ));
        } else if let Some(size) = f.size.filter(|&size| m.is_file() && m.len() != size) {
            out.push(Finding::new(
                Severity::Blocker,
                "file-changed",
                path.clone(),
                format!("size is {} bytes, the checkpoint expects {size}", m.len()),
                "put back the version the workload had at dump time, or dump again",
            ));
        }
    }
    out
}

/// Checks an image before a restore: files it references, memory, veth name.
pub fn check_image(img: &ImageDir, memory_limit: Option<u64>, host_if: Option<&str>, host_links: &[String], layers: &[&Path]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = img.validate() {
        out.push(Finding::new(Severity::Blocker, "image", img.path.display().to_string(), e.to_string(), "dump again, or point --images at a complete checkpoint"));
        return out;
    }
    match (img.files(), img.remaps(), img.mounts()) {
        (Ok(files), Ok(remaps), Ok(mounts)) => out.extend(file_findings(&files, &remaps, &mounts, layers)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            out.push(Finding::new(Severity::Blocker, "image", img.path.display().to_string(), e.to_string(), "dump again"))
        }
    }
    let pages = img.page_bytes().unwrap_or(0);
    let limit = memory_limit.or_else(memory_budget).unwrap_or(u64::MAX);
    let need = pages + pages / 10 + (8 << 20);
    if need > limit {
        out.push(Finding::new(
            Severity::Blocker,
            "memory",
            format!("{} MiB of pages", pages >> 20),
            format!("the restore needs about {} MiB, {} MiB are available", need >> 20, limit >> 20),
            "free memory or restore on a larger machine",
        ));
    } else {
        out.push(Finding::new(Severity::Ok, "memory", format!("{} MiB of pages", pages >> 20), "enough memory for the image", ""));
    }
    if let Some(h) = host_if {
        if host_links.iter().any(|l| l == h) {
            out.push(Finding::new(Severity::Blocker, "veth-name", h.to_string(), "the host-side veth name is taken", "remove the old workload, or restore a copy with --as NEW"));
        }
    }
    out.push(Finding::new(Severity::Ok, "pids", "pid namespace", "restored into a new pid namespace: PIDs cannot clash", ""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_peers_outside_the_tree_block_streams_and_flag_dgrams() {
        let st = libc::SOCK_STREAM as u8;
        let dg = libc::SOCK_DGRAM as u8;
        let all = [
            UnixSocket { ino: 1, kind: st, state: 1, peer: 2, shutdown: 0, ..Default::default() },
            UnixSocket { ino: 2, kind: st, state: 1, peer: 1, shutdown: 0, ..Default::default() },
            UnixSocket { ino: 3, kind: st, state: 1, peer: 99, shutdown: 0, ..Default::default() },
            UnixSocket { ino: 4, kind: st, state: 1, peer: 0, shutdown: 3, ..Default::default() },
            UnixSocket { ino: 5, kind: st, state: 1, peer: 0, shutdown: 1, ..Default::default() },
            UnixSocket { ino: 6, kind: dg, state: 7, peer: 98, shutdown: 0, ..Default::default() },
            UnixSocket { ino: 7, kind: st, state: 1, peer: 97, shutdown: 0, ..Default::default() },
            UnixSocket { ino: 8, kind: dg, state: 7, peer: 96, shutdown: 0, ..Default::default() },
            // Peer 98 is in this netns, outside the tree; 96 is elsewhere.
            UnixSocket { ino: 98, kind: dg, state: 7, peer: 0, shutdown: 0, ..Default::default() },
        ];
        let tree: BTreeSet<u64> = (1..=6).chain([8]).collect();
        let mut n = DumpNeeds::default();
        unix_findings(&all, &tree, &mut n);
        let codes: Vec<&str> = n.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, ["unix-stream-external", "unix-stream-dangling", "unix-dgram-external", "unix-peer-other-netns"]);
        assert!(n.ext_unix_sk);
    }

    #[test]
    fn cgroup_limits_take_the_tightest_ancestor() {
        let files: std::collections::HashMap<&str, &str> = [
            ("/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes", "104857600\n"),
            ("/sys/fs/cgroup/memory/a/b/memory.usage_in_bytes", "4857600\n"),
            ("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "9223372036854771712\n"),
            ("/sys/fs/cgroup/memory/a/memory.usage_in_bytes", "1\n"),
            ("/sys/fs/cgroup/x/memory.max", "max\n"),
            ("/sys/fs/cgroup/x/memory.current", "5\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        assert_eq!(cgroup_limits("5:memory:/a/b\n0::/x\n", read), Some(100_000_000));
        assert_eq!(cgroup_limits("0::/x\n", read), None);
        assert_eq!(cgroup_limits("", read), None);
    }

    #[test]
    fn sorts_tcp_states_like_criu() {
        let t = |inode, state, rqueue| TcpSocket { inode, state, rqueue };
        let socks = [t(100, 10, 2), t(101, 1, 0), t(102, 8, 0), t(0, 6, 0), t(103, 10, 0), t(999, 1, 0)];
        let inodes: BTreeSet<u64> = [100, 101, 102, 103].into_iter().collect();
        assert_eq!(count_tcp(&socks, &inodes), TcpCounts { connected: 2, in_flight: 1 });
    }

    #[test]
    fn reads_fdinfo_flags() {
        assert_eq!(fdinfo_flags("pos:\t0\nflags:\t02000001\nmnt_id:\t15\n"), Some(0o2000001));
        assert_eq!(fdinfo_flags("pos:\t0\n"), None);
        assert!(plain_device("/dev/null") && plain_device("/dev/pts/3") && !plain_device("/dev/kvm") && !plain_device("/dev/net/tun"));
    }

    #[test]
    fn a_pipe_to_the_outside_is_flagged() {
        // A child reading a pipe whose write end stays here, outside its tree.
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut child = std::process::Command::new("sleep").arg("100").stdin(std::process::Stdio::from(r)).spawn().expect("sleep");
        let dir = tempfile::tempdir().expect("tmp");
        let needs = check_dump(child.id() as i32, true, dir.path());
        let _ = child.kill();
        let _ = child.wait();
        // (Its stdout and stderr may be the harness's pipes too: write ends.)
        let f = needs.findings.iter().find(|f| f.code == "pipe-external" && f.message.contains("read end")).expect("the stdin pipe is flagged");
        assert_eq!(f.severity, Severity::Warning);
    }

    #[test]
    fn counts_locks_of_an_fd() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t12\n\
                    lock:\t1: POSIX  ADVISORY  WRITE 100 00:1f:1234 0 EOF\n\
                    lock:\t2: FLOCK  ADVISORY  WRITE 100 00:1f:1234 0 EOF\n\
                    lock:\t3: -> FLOCK  ADVISORY  WRITE 200 00:1f:1234 0 EOF\n";
        assert_eq!(fdinfo_locks(info), 2);
        assert_eq!(fdinfo_locks("pos:\t0\n"), 0);
    }

    #[test]
    fn sees_its_own_flock() {
        let f = tempfile::tempfile().expect("tmp");
        let _l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).expect("flock");
        assert!(tree_locks(&[std::process::id() as i32]) >= 1);
    }

    #[test]
    fn own_tree_contains_self() {
        let me = std::process::id() as i32;
        assert!(tree_pids(me).contains(&me));
    }

    fn reg(id: u32, path: &str, mnt_id: i32) -> ImageFile {
        ImageFile { id, path: path.into(), flags: 0, mnt_id, ext: false, size: None, mode: None, build_id: vec![] }
    }

    #[test]
    fn restore_checks_only_what_criu_looks_up() {
        let mounts = vec![
            ImageMount { mnt_id: 1, fstype: 0, root_dev: 1, root: "/".into(), mountpoint: "/".into(), external: false },
            ImageMount { mnt_id: 2, fstype: 5, root_dev: 2, root: "/".into(), mountpoint: "/dev/shm".into(), external: false },
            ImageMount { mnt_id: 3, fstype: 1, root_dev: 3, root: "/".into(), mountpoint: "/proc".into(), external: false },
            ImageMount { mnt_id: 4, fstype: 0, root_dev: 1, root: "/x.log".into(), mountpoint: "/var/lib/cns/stdio".into(), external: true },
        ];
        let files = vec![
            reg(1, "/no/such/ghost", 1),
            reg(2, "/dev/shm/on-a-restored-tmpfs", 2),
            reg(3, "/proc/4/fdinfo/4", 3),
            reg(4, "/var/lib/cns/stdio", 4),
            reg(5, "/no/such/file", 1),
            ImageFile { ext: true, ..reg(6, "/no/such/external", 1) },
        ];
        let remaps = vec![crate::image::Remap { orig_id: 1, remap_id: 9, kind: crate::image::RemapKind::Ghost }];
        let f = file_findings(&files, &remaps, &mounts, &[]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].object, "/no/such/file");
    }

    #[test]
    fn a_dangling_symlink_opened_nofollow_exists_and_modes_are_checked() {
        let d = tempfile::tempdir().expect("tmp");
        let link = d.path().join("dangling");
        std::os::unix::fs::symlink("/no/such/target", &link).expect("symlink");
        let mut f = reg(1, link.to_str().expect("utf8"), -1);
        f.flags = (libc::O_PATH | libc::O_NOFOLLOW) as u32;
        assert!(file_findings(&[f.clone()], &[], &[], &[]).is_empty());
        f.flags = 0;
        assert_eq!(file_findings(&[f], &[], &[], &[]).len(), 1, "followed, it is missing (CRIU fails too)");
        let file = d.path().join("f");
        std::fs::write(&file, "abc").expect("write");
        let mut g = reg(2, file.to_str().expect("utf8"), -1);
        g.mode = Some(0o100600);
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        let r = file_findings(&[g], &[], &[], &[]);
        assert!(r.len() == 1 && r[0].message.contains("mode"), "{r:?}");
    }
}
