//! Confinement that survives dump and restore: a root file system of the
//! workload's own (--rootfs), bind and tmpfs mounts, a read-only root.
//! Each test builds its own small root from Debian's busybox-static and
//! mounts only directories it made.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// A minimal root: a static busybox and the directories a workload needs.
fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "proc", "dev", "tmp", "etc", "data"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).expect("copy busybox (scripts/setup installs busybox-static)");
    for applet in ["sh", "sleep", "echo", "cat", "ls", "touch", "mkdir"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    std::fs::write(root.join("etc/motd"), "from the rootfs\n").expect("motd");
    root
}

const COUNT: &str = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done";

fn exec(n: &str, script: &str) -> String {
    ok(&["exec", n, "--", "/bin/sh", "-c", script])
}

/// Runs `script` inside and returns (succeeded, stdout + stderr).
fn try_exec(n: &str, script: &str) -> (bool, String) {
    let out = cns(&["exec", n, "--", "/bin/sh", "-c", script]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn rootfs_changes_survive_restore_and_copies_see_their_own_root() {
    let n = name("rootfs");
    let copy = name("rootfs-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let root = busybox_root(dir.path());
    let secret = dir.path().join("host-only");
    std::fs::write(&secret, "host\n").expect("secret");
    let script = format!("echo before > /data/written; {COUNT}");
    ok(&["run", "-d", "--name", &n, "--rootfs", root.to_str().expect("utf8"), "--", "/bin/sh", "-c", &script]);
    wait_for("the counter", 20, || last_count(&n).is_some_and(|c| c >= 3));
    // Its root is the busybox root: the host's files are not there at all.
    assert_eq!(exec(&n, "cat /etc/motd"), "from the rootfs\n");
    let (seen, out) = try_exec(&n, &format!("cat {}", secret.display()));
    assert!(!seen, "the workload read a host file: {out}");
    assert!(!root.join("data/written").exists(), "the workload wrote into the --rootfs directory itself");
    ok(&["dump", &n]);
    let dumped = last_count(&n).expect("count at dump");
    ok(&["restore", "-d", &n]);
    wait_for("the restored counter", 20, || last_count(&n).is_some_and(|c| c > dumped + 2));
    assert_eq!(exec(&n, "cat /data/written"), "before\n", "a file written before the dump is gone after restore");
    let (seen, _) = try_exec(&n, &format!("cat {}", secret.display()));
    assert!(!seen, "after restore the workload reads host files");
    assert_eq!(exec(&n, "ls /dev/.cns-init /dev/null /dev/pts/ptmx >/dev/null && echo ok"), "ok\n");
    // Its resolv.conf names the host's reachable name servers (in its own layer, not in the given root).
    let resolv = exec(&n, "cat /etc/resolv.conf");
    let host: Vec<String> = std::fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf").lines().filter_map(|l| l.strip_prefix("nameserver")).map(|s| s.trim().to_string()).filter(|s| !s.starts_with("127.") && s != "::1").collect();
    for ns in &host {
        assert!(resolv.contains(&format!("nameserver {ns}")), "{resolv}");
    }
    assert!(!root.join("etc/resolv.conf").exists());
    // A copy has its own view: what it writes, the original does not see.
    ok(&["dump", "--leave-running", &n]);
    ok(&["restore", "-d", &n, "--as", &copy]);
    wait_for("the copy to count", 20, || last_count(&copy).is_some());
    exec(&copy, "echo copy > /data/only-in-copy");
    let (seen, _) = try_exec(&n, "cat /data/only-in-copy");
    assert!(!seen, "the original sees the copy's file");
    assert_eq!(exec(&copy, "cat /data/written"), "before\n");
    ok(&["rm", "-f", &copy]);
    assert!(!Path::new(&format!("/var/lib/cns/rootfs/{copy}")).exists(), "rm left the copy's root layers");
}

#[test]
fn binds_stay_writable_or_read_only_and_a_read_only_root_stays_so_after_restore() {
    let n = name("binds");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let (rw, ro, mp) = (dir.path().join("rw"), dir.path().join("ro"), dir.path().join("mp"));
    for d in [&rw, &ro, &mp.join("rw"), &mp.join("ro"), &mp.join("scratch")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(ro.join("given"), "given\n").expect("file");
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let (rw_dst, ro_dst, tmp_dst) = (s(&mp.join("rw")), s(&mp.join("ro")), s(&mp.join("scratch")));
    ok(&[
        "run", "-d", "--name", &n, "--read-only",
        "--bind", &format!("{}:{rw_dst}", s(&rw)),
        "--bind", &format!("{}:{ro_dst}:ro", s(&ro)),
        "--tmpfs", &format!("{tmp_dst}:8m"),
        "--", "sh", "-c", COUNT,
    ]);
    wait_for("the counter", 20, || last_count(&n).is_some_and(|c| c >= 3));
    let check = |phase: &str| {
        let tag = format!("{phase}-{}", std::process::id());
        exec(&n, &format!("echo {tag} > {rw_dst}/{phase}"));
        assert_eq!(std::fs::read_to_string(rw.join(phase)).expect("the write reached the host"), format!("{tag}\n"), "{phase}");
        assert_eq!(exec(&n, &format!("cat {ro_dst}/given")), "given\n");
        let (wrote, out) = try_exec(&n, &format!("echo x > {ro_dst}/{phase}"));
        assert!(!wrote && out.contains("Read-only file system"), "{phase}: the read-only bind took a write: {out}");
        let (wrote, out) = try_exec(&n, &format!("echo x > {}/{phase}", s(dir.path())));
        assert!(!wrote && out.contains("Read-only file system"), "{phase}: the read-only root took a write: {out}");
        exec(&n, &format!("echo t > {tmp_dst}/{phase}"));
    };
    check("before");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    check("after");
    // The tmpfs came back with its contents (CRIU carries them).
    assert_eq!(exec(&n, &format!("cat {tmp_dst}/before")), "t\n");
    assert!(!mp.join("scratch/before").exists(), "the tmpfs wrote through to the host");
}

#[test]
fn a_missing_bind_source_is_named_before_the_restore_and_a_new_one_can_be_given() {
    let n = name("bindgone");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::create_dir_all(&dst).expect("mkdir");
    let bind = format!("{}:{}", src.display(), dst.display());
    ok(&["run", "-d", "--name", &n, "--bind", &bind, "--", "sh", "-c", COUNT]);
    wait_for("the counter", 20, || last_count(&n).is_some_and(|c| c >= 3));
    ok(&["dump", &n]);
    std::fs::remove_dir(&src).expect("rmdir");
    let e = fails(&["restore", "-d", &n]);
    assert!(e.starts_with(&format!("cns: the source {} of the bind mount on {} is missing", src.display(), dst.display())), "{e}");
    assert!(e.contains(&format!("--bind NEWSRC:{}", dst.display())), "{e}");
    assert_eq!(state_of(&n), "dumped", "a refused restore changed the record");
    // Pointed at a new source, it restores and writes there.
    let moved = dir.path().join("moved");
    std::fs::create_dir_all(&moved).expect("mkdir");
    ok(&["restore", "-d", &n, "--bind", &format!("{}:{}", moved.display(), dst.display())]);
    exec(&n, &format!("echo here > {}/f", dst.display()));
    assert_eq!(std::fs::read_to_string(moved.join("f")).expect("write"), "here\n");
}

#[test]
fn bad_mount_flags_are_one_line_errors_that_change_nothing() {
    let n = name("badmnt");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display().to_string();
    let missing_dst = format!("/{}-nowhere", n);
    for (args, says) in [
        (vec!["--bind".to_string(), format!("{d}:{missing_dst}")], "does not exist"),
        (vec!["--bind".to_string(), format!("{d}/nope:{d}")], "bind source"),
        (vec!["--bind".to_string(), format!("{d}:/proc/x")], "set up by cns itself"),
        (vec!["--bind".to_string(), format!("{d}:{d}:rx")], "unknown bind option"),
        (vec!["--tmpfs".to_string(), format!("{d}:lots")], "tmpfs size"),
        (vec!["--tmpfs".to_string(), d.clone(), "--tmpfs".to_string(), d.clone()], "mounted twice"),
        (vec!["--rootfs".to_string(), "/".to_string()], "host's own root"),
        (vec!["--rootfs".to_string(), format!("{d}/none")], "--rootfs"),
        // Nothing of cns's own may show inside: not its images, nor a parent of them.
        (vec!["--bind".to_string(), format!("/var/lib/cns/images:{d}")], "would show the workload cns's own"),
        (vec!["--bind".to_string(), format!("/var:{d}:ro")], "would show the workload cns's own"),
        (vec!["--rootfs".to_string(), "/run".to_string()], "would show the workload cns's own"),
    ] {
        let mut a: Vec<&str> = vec!["run", "--name", &n];
        a.extend(args.iter().map(String::as_str));
        a.extend(["--", "true"]);
        let e = fails(&a);
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(ps_entry(&n).is_none(), "{args:?} left a record");
    }
    assert!(!Path::new(&missing_dst).exists(), "cns created a mountpoint on the host");
}

/// True when this host's root can read another user's rlimits (CRIU needs
/// it to dump a process of another uid): CAP_SYS_RESOURCE, bit 24.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).expect("CapEff");
    u64::from_str_radix(eff, 16).expect("hex") & (1 << 24) != 0
}

#[test]
fn a_user_workload_runs_without_capabilities_and_its_dump_is_decided_by_cap_sys_resource() {
    let n = name("user");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--user", "1234:2345", "--group", "44", "--", "sh", "-c", COUNT]);
    wait_for("the counter", 20, || last_count(&n).is_some_and(|c| c >= 3));
    let status = exec(&n, "cat /proc/$$/status");
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default();
    assert_eq!(field("Uid:"), "1234 1234 1234 1234", "{status}");
    assert_eq!(field("Gid:"), "2345 2345 2345 2345", "{status}");
    assert_eq!(field("Groups:"), "44");
    for k in ["CapEff:", "CapPrm:", "CapAmb:"] {
        assert_eq!(field(k), "0000000000000000", "{k} of a --user workload");
    }
    // The command itself (not only what exec starts) runs as the user.
    let cmd_pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", pid_of(&n), pid_of(&n))).expect("children");
    let cmd_status = std::fs::read_to_string(format!("/proc/{}/status", cmd_pid.trim())).expect("status");
    assert!(cmd_status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Uid:", "1234", "1234", "1234", "1234"]), "{cmd_status}");
    if has_cap_sys_resource() {
        let before = last_count(&n).expect("count");
        ok(&["dump", &n]);
        ok(&["restore", "-d", &n]);
        wait_for("the restored counter", 20, || last_count(&n).is_some_and(|c| c > before + 2));
        let after = exec(&n, "cat /proc/$$/status");
        assert!(after.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Uid:", "1234", "1234", "1234", "1234"]), "{after}");
    } else {
        // Here root lacks CAP_SYS_RESOURCE: CRIU could not read the user's
        // rlimits, so pre-flight refuses before anything is frozen.
        let e = fails(&["dump", &n]);
        assert!(e.starts_with(&format!("cns: cannot dump {n}: CRIU cannot read the rlimits of a process of another user: root here lacks CAP_SYS_RESOURCE")), "{e}");
        assert_eq!(state_of(&n), "running");
        let k = last_count(&n).expect("count");
        wait_for("the counter to go on", 20, || last_count(&n).is_some_and(|c| c > k));
    }
    let e = fails(&["run", "--name", &n, "--user", "no-such-user-here", "--", "true"]);
    assert!(e.contains("unknown user"), "{e}");
}

/// The cgroup directory of `pid` for a v1 `controller` (or the v2 one).
fn cgroup_of(pid: i32, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for l in text.lines() {
        let f: Vec<&str> = l.splitn(3, ':').collect();
        if v2 && f[0] == "0" {
            return Path::new("/sys/fs/cgroup").join(f[2].trim_start_matches('/'));
        }
        if !v2 && f[1].split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup").join(controller).join(f[2].trim_start_matches('/'));
        }
    }
    panic!("{pid} is in no {controller} cgroup: {text}");
}

fn limits_of(pid: i32) -> (String, String) {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mem = if v2 { cgroup_of(pid, "memory").join("memory.max") } else { cgroup_of(pid, "memory").join("memory.limit_in_bytes") };
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string();
    (read(mem), read(cgroup_of(pid, "pids").join("pids.max")))
}

#[test]
fn memory_and_pids_limits_hold_after_restore_and_a_copy_gets_its_own_cgroup() {
    let n = name("limits");
    let copy = name("limits-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    ok(&["run", "-d", "--name", &n, "--memory", "96m", "--pids", "16", "--cpus", "0.5", "--", "sh", "-c", COUNT]);
    wait_for("the counter", 20, || last_count(&n).is_some_and(|c| c >= 3));
    let too_many = "for i in $(seq 40); do sleep 1 & done";
    let check = |w: &str| {
        let pid = pid_of(w);
        assert_eq!(limits_of(pid), ((96u64 << 20).to_string(), "16".to_string()), "{w}");
        assert!(cgroup_of(pid, "pids").ends_with(format!("cns/{w}")), "{w} is not in its own cgroup: {}", cgroup_of(pid, "pids").display());
        let (forked, out) = try_exec(w, too_many);
        assert!(!forked && out.contains("fork"), "{w}: 40 tasks under --pids 16: {out}");
        // The sleeps that did start end within a second; none is dumped.
        wait_for("the extra tasks to end", 10, || ps_entry(w).and_then(|e| e["resources"]["pids"].as_u64()).is_some_and(|p| p <= 3));
    };
    check(&n);
    let ps = ps_entry(&n).expect("ps");
    assert_eq!(ps["resources"]["pids_limit"], 16);
    assert_eq!(ps["resources"]["memory_limit"], 96u64 << 20);
    assert!(ps["resources"]["memory_bytes"].as_u64().is_some_and(|b| b > 0));
    ok(&["dump", "--leave-running", &n]);
    ok(&["restore", "-d", &n, "--as", &copy]);
    check(&copy);
    assert_ne!(cgroup_of(pid_of(&copy), "memory"), cgroup_of(pid_of(&n), "memory"), "the copy shares the original's cgroup");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    check(&n);
    let k = last_count(&n).expect("count");
    wait_for("the restored counter", 20, || last_count(&n).is_some_and(|c| c > k + 2));
    ok(&["rm", "-f", &copy]);
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/cns/{copy}")).exists() && !Path::new(&format!("/sys/fs/cgroup/cns/{copy}")).exists(), "rm left the copy's cgroup");
}
