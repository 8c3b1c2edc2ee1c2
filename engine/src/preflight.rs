//! Pre-flight: will a dump or a restore work? Answered from /proc and the
//! image before anything is frozen.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::image::ImageDir;

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
    fn new(severity: Severity, code: &'static str, object: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { severity, code, object: object.into(), message: message.into(), fix: fix.into() }
    }
}

/// What the dump will need, learned from the tree.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DumpNeeds {
    pub tcp_established: bool,
    pub tcp_skip_in_flight: bool,
    pub file_locks: bool,
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

/// Counts the tree's TCP sockets in the text of /proc/PID/net/tcp{,6}.
pub fn count_tcp(text: &str, inodes: &BTreeSet<u64>) -> TcpCounts {
    // Kernel TCP states, as CRIU's can_dump_inet_sk sorts them.
    const CONNECTED: [&str; 7] = ["01", "02", "04", "05", "08", "09", "0B"];
    const LISTEN: &str = "0A";
    let mut c = TcpCounts::default();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // st is column 3, tx_queue:rx_queue column 4, inode column 9.
        let (Some(st), Some(queues), Some(ino)) = (cols.get(3), cols.get(4), cols.get(9).and_then(|i| i.parse::<u64>().ok())) else { continue };
        if !inodes.contains(&ino) {
            continue;
        }
        if CONNECTED.contains(st) {
            c.connected += 1;
        } else if *st == LISTEN && queues.split(':').nth(1).is_some_and(|rx| u64::from_str_radix(rx, 16).is_ok_and(|n| n > 0)) {
            c.in_flight += 1;
        }
    }
    c
}

fn tree_tcp(root: i32, inodes: &BTreeSet<u64>) -> TcpCounts {
    let mut all = TcpCounts::default();
    for f in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{root}/net/{f}")) else { continue };
        let c = count_tcp(&text, inodes);
        all.connected += c.connected;
        all.in_flight += c.in_flight;
    }
    all
}

/// Parses /proc/locks and returns how many locks belong to `pids`.
pub fn locks_held(locks: &str, pids: &[i32]) -> usize {
    locks
        .lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<i32>().ok())
        .filter(|p| pids.contains(p))
        .count()
}

/// Checks a running tree before a dump.
pub fn check_dump(root: i32, shell_job: bool, images_parent: &Path) -> DumpNeeds {
    let mut needs = DumpNeeds::default();
    let pids = tree_pids(root);
    let inodes = socket_inodes(&pids);
    let tcp = tree_tcp(root, &inodes);
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
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let nlocks = locks_held(&locks, &pids);
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
    for pid in &pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in rd.flatten() {
            let Ok(t) = fs::read_link(e.path()) else { continue };
            let t = t.to_string_lossy().into_owned();
            if (t.starts_with("/dev/pts/") || t.starts_with("/dev/tty") || t == "/dev/console") && !shell_job {
                needs.findings.push(Finding::new(
                    Severity::Blocker,
                    "tty",
                    format!("pid {pid} fd {} -> {t}", e.file_name().to_string_lossy()),
                    "the tree uses a terminal owned outside it",
                    "dump with --shell-job, or start it with stdio on files (cns run does)",
                ));
            }
            if t.ends_with(" (deleted)") && !t.starts_with("/memfd:") && !t.starts_with("/dev/shm") {
                needs.findings.push(Finding::new(
                    Severity::Warning,
                    "deleted-file",
                    format!("pid {pid} fd {} -> {t}", e.file_name().to_string_lossy()),
                    "the tree holds a deleted file open; CRIU carries it in the image as a ghost file",
                    "fine if it is small (ghost limit 1 MiB); otherwise close it before dumping",
                ));
            }
        }
    }
    // Memory to write vs free space where the images go.
    let rss: u64 = pids
        .iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("RssAnon:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))))
        .sum::<u64>()
        * 1024;
    if let Ok(st) = nix::sys::statvfs::statvfs(images_parent) {
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
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

/// Checks an image before a restore: files it references, memory, veth name.
pub fn check_image(img: &ImageDir, memory_limit: Option<u64>, host_if: Option<&str>, host_links: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = img.validate() {
        out.push(Finding::new(Severity::Blocker, "image", img.path.display().to_string(), e.to_string(), "dump again, or point --images at a complete checkpoint"));
        return out;
    }
    match img.files() {
        Ok(files) => {
            for f in files {
                let path = format!("/{}", f.path.trim_start_matches('/'));
                if f.path.contains(" (deleted)") {
                    continue;
                }
                match fs::metadata(&path) {
                    Err(_) => out.push(Finding::new(Severity::Blocker, "file-missing", path.clone(), "a file the checkpoint uses is missing", "put the file back at this path (same content as at dump time)")),
                    Ok(m) => {
                        // CRIU checks sizes of files it maps or opened read-only;
                        // appended logs are re-pointed by cns (inherit_fd).
                        if let Some(size) = f.size {
                            if m.is_file() && m.len() != size && !path.starts_with("/var/lib/cns/logs/") {
                                out.push(Finding::new(
                                    Severity::Blocker,
                                    "file-changed",
                                    path.clone(),
                                    format!("size is {} bytes, the checkpoint expects {size}", m.len()),
                                    "put back the version the workload had at dump time, or dump again",
                                ));
                            }
                        }
                    }
                }
            }
        }
        Err(e) => out.push(Finding::new(Severity::Blocker, "image", img.file("files.img").display().to_string(), e.to_string(), "dump again")),
    }
    let pages = img.page_bytes().unwrap_or(0);
    let limit = memory_limit.or_else(mem_available).unwrap_or(u64::MAX);
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
    fn sorts_tcp_states_like_criu() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B58 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 100 1
   1: 0100007F:1B58 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 101 1
   2: 0100007F:1B58 0100007F:A001 08 00000000:00000000 00:00000000 00000000     0        0 102 1
   3: 0100007F:1B58 0100007F:A002 06 00000000:00000000 00:00000000 00000000     0        0 0 1
   4: 0100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 103 1
   5: 0100007F:1B58 0100007F:A003 01 00000000:00000000 00:00000000 00000000     0        0 999 1
";
        let inodes: BTreeSet<u64> = [100, 101, 102, 103].into_iter().collect();
        assert_eq!(count_tcp(text, &inodes), TcpCounts { connected: 2, in_flight: 1 });
    }

    #[test]
    fn counts_locks_of_the_tree() {
        let locks = "1: POSIX  ADVISORY  WRITE 100 00:1f:1234 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 200 00:1f:99 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 100 00:1f:99 0 EOF\n";
        assert_eq!(locks_held(locks, &[100]), 1);
        assert_eq!(locks_held(locks, &[100, 200]), 2);
        assert_eq!(locks_held(locks, &[300]), 0);
    }

    #[test]
    fn own_tree_contains_self() {
        let me = std::process::id() as i32;
        assert!(tree_pids(me).contains(&me));
    }
}
