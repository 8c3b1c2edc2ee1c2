//! Turning CRIU's log into one sentence and a fix.
//!
//! CRIU reports failures as lines deep in a verbose log. cns reads the log of
//! a failed operation, finds the first line that matches a known cause and
//! reports that cause with what to do about it. Lines known to be harmless
//! (RLIMIT warnings, iptables noise under the nftables lock, lo's address)
//! are never taken as the cause.

/// A recognised failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// Stable identifier, e.g. `shell-job`, `ext-unix-sk`.
    pub code: &'static str,
    /// One sentence: what went wrong.
    pub message: String,
    /// One sentence: the fix.
    pub hint: &'static str,
    /// The CRIU log line it was read from.
    pub line: String,
}

struct Rule {
    code: &'static str,
    needles: &'static [&'static str],
    message: &'static str,
    hint: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        code: "session-outside",
        needles: &["is outside of its pid namespace", "is not a session leader"],
        message: "the process tree's session leader is outside the dumped tree (it was started from a shell or terminal)",
        hint: "start it with `cns run` (which makes it a session leader), run it under `setsid`, or dump with --shell-job",
    },
    Rule {
        code: "shell-job",
        needles: &["Unable to find a master for", "tty: Can't", "Can't dump tty", "Need to use --shell-job", "without correspond master peer"],
        message: "the tree uses a terminal (tty) that belongs to a process outside it",
        hint: "dump and restore with --shell-job, or start the workload with its stdio on files (as `cns run` does)",
    },
    Rule {
        code: "half-closed-unix",
        needles: &["Can't dump half of stream unix connection"],
        message: "a unix stream socket's peer is outside the dumped tree (half of the connection would be lost)",
        hint: "close the connection before dumping, keep both ends inside the workload, or pass --ext-unix-sk if the peer will be there at restore",
    },
    Rule {
        code: "ext-unix-sk",
        needles: &["External socket is used", "External socket found in image"],
        message: "the tree is connected to a unix socket outside it (e.g. syslog /dev/log, D-Bus)",
        hint: "dump and restore with --ext-unix-sk if that peer exists on the restore side, or stop using the socket",
    },
    Rule {
        code: "tcp-established",
        needles: &["Connected TCP socket, consider using"],
        message: "the tree holds an established TCP connection",
        hint: "dump and restore with --tcp-established (cns locks the network while it dumps)",
    },
    Rule {
        code: "file-locks",
        needles: &["Some file locks are hold by dumping tasks"],
        message: "the tree holds file locks (flock/fcntl/lease)",
        hint: "dump and restore with --file-locks",
    },
    Rule {
        code: "foreign-mount-fd",
        needles: &["Can't lookup mount="],
        message: "a file descriptor points into a mount that is not in the workload's mount namespace (an fd inherited from the host)",
        hint: "start the workload with `cns run`, which closes inherited fds and opens stdio inside its mount namespace",
    },
    Rule {
        code: "no-root-mount",
        needles: &["doesn't have a proper root mount"],
        message: "a mount in the workload's namespace is not reachable from its root (typically a host nsfs mount under /run/netns)",
        hint: "start the workload with `cns run`, which unmounts host nsfs mounts in its namespace, or umount it there",
    },
    Rule {
        code: "file-changed",
        needles: &["has bad size"],
        message: "a file the checkpoint uses changed size since the dump (a binary or library was replaced)",
        hint: "put back the file the workload had open at dump time (see `cns check --image`) or dump again",
    },
    Rule {
        code: "file-missing",
        needles: &["on restore: No such file or directory", "Can't open file"],
        message: "a file the checkpoint uses is missing on this machine",
        hint: "restore the file at the same path (see `cns check --image` for the list) or dump again",
    },
    Rule {
        code: "veth-exists",
        needles: &["Can't restore link: -17", "-17 reported by netlink"],
        message: "a network interface with the restored workload's host-side veth name already exists",
        hint: "remove the stale interface (cns rm of the old workload) or restore under another name with --as",
    },
    Rule {
        code: "veth-peer",
        needles: &["Unknown peer net namespace"],
        message: "CRIU was not told where the workload's veth peer lives",
        hint: "restore with cns (it passes --external veth[...] for the host end), or give CRIU --external veth[eth0]:HOSTNAME",
    },
    Rule {
        code: "pid-in-use",
        needles: &["Can't fork for", "Thread pid mismatch", "Pid mismatch", "pid mismatch"],
        message: "a PID the checkpoint needs is already in use in the target pid namespace",
        hint: "cns restores into a fresh pid namespace where every PID is free; restore with cns instead of plain criu restore",
    },
    Rule {
        code: "ghost-limit",
        needles: &["Can't dump ghost file"],
        message: "the tree has a deleted-but-open file larger than CRIU's ghost-file limit",
        hint: "close the deleted file before dumping, or keep the file on disk",
    },
    Rule {
        code: "network-lock",
        needles: &["Locking network failed"],
        message: "CRIU could not lock the network while dumping",
        hint: "cns uses the nftables lock; make sure CRIU was built with libnftables (scripts/install-criu does)",
    },
    Rule {
        code: "no-space",
        needles: &["No space left on device"],
        message: "the images directory ran out of space",
        hint: "free space or dump to a larger place with --images DIR",
    },
    Rule {
        code: "old-criu",
        needles: &["Unexpected rt vDSO area bounds"],
        message: "this CRIU is too old for the running kernel",
        hint: "run scripts/install-criu to build CRIU >= 4.2",
    },
    Rule {
        code: "rlimit-other-user",
        needles: &["Can't get rlimit"],
        message: "CRIU cannot read the rlimits of a process of another user: it lacks CAP_SYS_RESOURCE on this host",
        hint: "run cns with CAP_SYS_RESOURCE (see `grep CapEff /proc/self/status`), or run the tree's processes as root",
    },
    Rule {
        code: "link-remap",
        needles: &["Can't link remap", "link-remap", "Can't dump link remapped"],
        message: "the tree holds a file that was unlinked while another hard link keeps it alive",
        hint: "dump with --link-remap (cns turns it on when pre-flight sees such a file)",
    },
    Rule {
        code: "evasive-device",
        needles: &["evasive-devices", "Can't lookup device"],
        message: "the tree holds a device node that is no longer at its path",
        hint: "dump with --evasive-devices, or put the device node back",
    },
    Rule {
        code: "pid-ns-only",
        needles: &["can only be restored in a new pid namespace"],
        message: "this checkpoint can only be restored in a new pid namespace",
        hint: "restore it with `cns restore`, which always creates a new pid namespace",
    },
];

/// Log lines that look like errors but are harmless on this platform.
const HARMLESS: &[&str] = &[
    "RLIMIT_NOFILE",
    "Can't setup RLIMIT",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "Address already assigned",
];

/// Whether a CRIU log line is known noise.
pub fn is_harmless(line: &str) -> bool {
    HARMLESS.iter().any(|h| line.contains(h))
}

/// Explains the first recognised cause in a CRIU log.
pub fn explain_log(log: &str) -> Option<Explanation> {
    // Earlier lines are the cause; later ones are CRIU unwinding.
    // Only CRIU's error lines: a debug line that happens to mention a
    // needle (a file name, an option in a usage hint) is not the cause.
    for line in log.lines().filter(|l| l.contains("Error")) {
        if is_harmless(line) {
            continue;
        }
        for rule in RULES {
            if rule.needles.iter().any(|n| line.contains(n)) {
                return Some(Explanation {
                    code: rule.code,
                    message: rule.message.to_string(),
                    hint: rule.hint,
                    line: line.trim().to_string(),
                });
            }
        }
    }
    None
}

/// The first of CRIU's own `Error (file.c:N): ...` lines that is not known
/// noise, for failures no rule knows — never a debug line that merely
/// mentions "error" (a path such as `.../error.log`, an smaps entry).
/// Returned without the timestamp and source location.
pub fn first_error(log: &str) -> Option<String> {
    log.lines().filter(|l| !is_harmless(l)).find_map(criu_error_text).filter(|t| !t.starts_with("Dumping FAILED") && !t.starts_with("Restoring FAILED"))
}

/// The text of a CRIU `Error (src:line): text` line.
fn criu_error_text(line: &str) -> Option<String> {
    let rest = line.split_once("Error (")?.1;
    let (loc, text) = rest.split_once("): ")?;
    // CRIU's location is a source path and line: `criu/files-reg.c:123`.
    if !loc.contains(".c:") {
        return None;
    }
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_failures() {
        let cases = [
            ("(00.01) Error (criu/pstree.c:1528): A session leader of 5(1) is outside of its pid namespace", "session-outside"),
            ("Error (criu/sk-unix.c:881): unix: Can't dump half of stream unix connection. name: x; peer name: y", "half-closed-unix"),
            ("Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.", "ext-unix-sk"),
            ("Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.", "tcp-established"),
            ("Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try --file-locks", "file-locks"),
            ("Error (criu/files.c:1790): Can't lookup mount=24 for fd=0 path=/dev/null", "foreign-mount-fd"),
            ("Error (criu/mount.c:753): mnt: 1234:./run/netns/x doesn't have a proper root mount", "no-root-mount"),
            ("Error (criu/files-reg.c:2175): File usr/lib/libc.so.6 has bad size 10 (expect 20)", "file-changed"),
            ("Error (criu/net.c:1469): Unknown peer net namespace", "veth-peer"),
            ("Error (criu/tty.c:410): tty: Found slave peer index 1 without correspond master peer", "shell-job"),
            ("Error (criu/cr-restore.c:1237): Can't fork for 4242: File exists", "pid-in-use"),
        ];
        for (line, code) in cases {
            let log = format!("(00.00) info\n{line}\n(00.02) Error (criu/cr-dump.c:2100): Dumping FAILED.\n");
            let e = explain_log(&log).unwrap_or_else(|| panic!("no explanation for {line}"));
            assert_eq!(e.code, code, "{line}");
            assert!(!e.hint.is_empty());
        }
    }

    #[test]
    fn skips_harmless_lines() {
        let log = "Error (criu/rlimit.c:1): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
                   Error (criu/net.c:1): iptables-restore failed: File exists\n\
                   Error: ipv4: Address already assigned.\n";
        assert_eq!(explain_log(log), None);
        assert_eq!(first_error(log), None);
    }

    #[test]
    fn first_error_is_criu_s_own_error_line_not_a_debug_line() {
        let log = "(00.01) Dumping path for 2 fd via self 21 [/var/lib/cns/logs/error.log]\n\
                   (00.02) Handling VMA with the following smaps entry: 7f00-7f10 rw-p error\n\
                   (00.03) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
                   (00.04) Error (criu/sk-queue.c:300): sk-queue: Can't peek a message: Bad thing\n\
                   (00.05) Error (criu/cr-dump.c:1975): Dumping FAILED.\n";
        assert_eq!(first_error(log).as_deref(), Some("sk-queue: Can't peek a message: Bad thing"));
        assert_eq!(first_error("(00.05) Error (criu/cr-dump.c:1975): Dumping FAILED.\n"), None);
        let rl = "(00.2) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted\n";
        assert_eq!(explain_log(rl).map(|e| e.code), Some("rlimit-other-user"));
    }

    #[test]
    fn first_cause_wins() {
        let log = "Error: Connected TCP socket, consider using --tcp-established option.\n\
                   Error: Some file locks are hold by dumping tasks!\n";
        assert_eq!(explain_log(log).map(|e| e.code), Some("tcp-established"));
    }
}
