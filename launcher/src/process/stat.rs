//! What /proc says about a process: its start time (to tell it from a
//! process that reused its PID) and its namespaces.

use std::fs;

/// Start time of a process (field 22 of /proc/PID/stat), None when it is
/// gone or a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = cns_mounts::read_proc(std::path::Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split(' ').collect();
    // after ") " field 3 (state) is index 0, so field 22 is index 19.
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and (when known) the same process as recorded.
pub fn process_matches(pid: i32, start: Option<u64>) -> bool {
    match (process_start(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Namespace inodes of `pid`.
pub fn namespace_inodes(pid: i32) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    ["pid", "mnt", "net", "uts", "ipc", "time", "cgroup", "user"]
        .iter()
        .filter_map(|ns| {
            let m = fs::metadata(format!("/proc/{pid}/ns/{ns}")).ok()?;
            Some((ns.to_string(), m.ino()))
        })
        .collect()
}

/// Whether `pid` is PID 1 of a pid namespace other than cns's own (every
/// workload's root is; no host process is).
pub fn is_namespace_init(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let Some(ns) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else { return false };
    let ids: Vec<&str> = ns.split_whitespace().collect();
    ids.len() >= 2 && ids.last() == Some(&"1")
}

/// Whether `pid` runs with no_new_privs.
pub fn has_no_new_privs(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.lines().any(|l| l.starts_with("NoNewPrivs:") && l.trim_end().ends_with('1')))
}

/// The first child of `pid` (an adopted tree's root under its namespace init).
pub fn first_child(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_start_is_known() {
        let me = std::process::id() as i32;
        let s = process_start(me);
        assert!(s.is_some());
        assert!(process_matches(me, s));
        assert!(!process_matches(me, s.map(|v| v + 1)));
    }
}
