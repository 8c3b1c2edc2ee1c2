//! `cns run` and the lifecycle commands, for real (root, namespaces).

mod common;
use common::*;

#[test]
fn foreground_exit_status_passes_through_and_workload_is_pid1_of_its_own_ns() {
    let n = name("fg");
    let _c = Cleanup(vec![n.clone()]);
    let out = cns(&["run", "--name", &n, "--", "sh", "-c", "echo ppid=$PPID; echo host=$(hostname); ls /proc | grep -c '^[0-9]'; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ppid=1"), "command's parent is the ns init (PID 1): {stdout}");
    assert!(stdout.contains(&format!("host={n}")), "{stdout}");
    // /proc shows only its tree: init, sh, ls, grep.
    let procs: u32 = stdout.lines().find_map(|l| l.trim().parse().ok()).expect("count");
    assert!(procs <= 5, "the workload sees {procs} processes: /proc is not its own");
    assert_eq!(state_of(&n), "exited");
    assert_eq!(ps_entry(&n).expect("entry")["exit_code"], 7);
}

#[test]
fn exec_failure_statuses() {
    let n = name("nocmd");
    let _c = Cleanup(vec![n.clone()]);
    let out = cns(&["run", "--name", &n, "--", "/nonexistent/binary"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("cns: "));
    assert!(!std::path::Path::new(&format!("/run/cns/{n}")).exists(), "failed run left state");
}

#[test]
fn detached_workload_namespaces_fds_exec_and_rm() {
    let n = name("det");
    let _c = Cleanup(vec![n.clone()]);
    let pidfile = std::env::temp_dir().join(format!("{n}.pid"));
    ok(&["run", "-d", "--name", &n, "--pidfile", pidfile.to_str().expect("utf8"), "--", "sleep", "1000"]);
    let pid = pid_of(&n);
    assert_eq!(std::fs::read_to_string(&pidfile).expect("pidfile").trim(), pid.to_string());
    let me = std::process::id() as i32;
    for ns in ["pid", "mnt", "net", "uts", "ipc", "time"] {
        assert_ne!(ns_inode(pid, ns), ns_inode(me, ns), "{ns} namespace is shared with the host");
    }
    // PID 1 inside: NSpid's last field.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    // Session leader inside the ns.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = stat.rsplit(')').next().expect("stat").split_whitespace().collect();
    assert_eq!(f[3], pid.to_string(), "sid of init is itself");
    // No fd of the tree points outside its mount ns: every mnt_id is in its mountinfo.
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let ids: Vec<String> = mountinfo.lines().filter_map(|l| l.split(' ').next().map(String::from)).collect();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).expect("children");
    for p in std::iter::once(pid.to_string()).chain(children.split_whitespace().map(String::from)) {
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{p}/fd")).expect("fds").flatten().collect();
        assert_eq!(fds.len(), 3, "pid {p} has fds beyond stdio");
        for fd in fds {
            let info = std::fs::read_to_string(format!("/proc/{p}/fdinfo/{}", fd.file_name().to_string_lossy())).expect("fdinfo");
            let mnt = info.lines().find_map(|l| l.strip_prefix("mnt_id:")).expect("mnt_id").trim().to_string();
            assert!(ids.contains(&mnt), "pid {p} fd {:?} is on mount {mnt}, outside its mount ns", fd.file_name());
        }
    }
    // exec sees the same namespaces.
    let out = ok(&["exec", &n, "--", "sh", "-c", "readlink /proc/self/ns/pid /proc/self/ns/net; hostname"]);
    let want_pid = format!("pid:[{}]", ns_inode(pid, "pid"));
    let want_net = format!("net:[{}]", ns_inode(pid, "net"));
    assert!(out.contains(&want_pid) && out.contains(&want_net) && out.contains(&n), "{out}");
    // rm: running needs -f; then nothing is left.
    fails(&["rm", &n]);
    ok(&["rm", "-f", &n]);
    assert!(!alive(pid));
    assert!(ps_entry(&n).is_none());
    assert!(links_named(&cns_netns_name(&n)).is_empty(), "veth left behind");
    let _ = std::fs::remove_file(pidfile);
}

fn cns_netns_name(n: &str) -> String {
    // host_veth_name(n) truncated; test names are short enough to keep a prefix
    let full = format!("cns-{n}");
    full[..full.len().min(9)].to_string()
}

#[test]
fn kill_forwards_and_status_is_kept() {
    let n = name("kill");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sh", "-c", "trap 'echo got-term; exit 42' TERM; while :; do sleep 0.05; done"]);
    wait_for("the trap to be set", 10, || std::fs::metadata(format!("/var/lib/cns/logs/{n}.log")).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(200));
    ok(&["kill", &n, "TERM"]);
    wait_for("the workload to exit", 10, || state_of(&n) == "exited");
    assert_eq!(ps_entry(&n).expect("entry")["exit_code"], 42);
    assert!(log_of(&n).contains("got-term"));
    let logs = ok(&["logs", &n]);
    assert!(logs.contains("got-term"));
}

#[test]
fn zombies_are_reaped_by_init() {
    let n = name("zomb");
    let _c = Cleanup(vec![n.clone()]);
    // The orphan's parent exits at once; init (PID 1) must reap the orphan.
    ok(&["run", "-d", "--name", &n, "--", "sh", "-c", "(sh -c 'sleep 0.2' &) ; sleep 1000"]);
    let pid = pid_of(&n);
    wait_for("no zombie in the workload", 10, || {
        let out = ok(&["exec", &n, "--", "sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l"]);
        out.trim() == "0" && std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| c.split_whitespace().count() == 1)
    });
}

#[test]
fn bad_names_and_unknown_names_are_clear_errors() {
    for bad in ["a/b", "..", "../x", "", "-x", &"x".repeat(65), "héllo"] {
        let flag = format!("--name={bad}");
        let e = fails(&["run", "-d", &flag, "--", "true"]);
        assert!(e.contains("invalid workload name"), "{bad}: {e}");
    }
    let unknown = name("nosuch");
    for cmd in [vec!["logs", &unknown], vec!["kill", &unknown], vec!["rm", &unknown], vec!["dump", &unknown], vec!["exec", &unknown, "--", "true"]] {
        let e = fails(&cmd);
        assert!(e.contains("no workload named"), "{cmd:?}: {e}");
    }
}

#[test]
fn duplicate_names_are_refused() {
    let n = name("dup");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "100"]);
    let pid = pid_of(&n);
    let e = fails(&["run", "-d", "--name", &n, "--", "sleep", "100"]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(pid_of(&n), pid, "the first workload was touched");
}

#[test]
fn net_none_has_only_lo_and_seccomp_and_caps_apply() {
    let n = name("sec");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let filter = dir.path().join("f.json");
    std::fs::write(&filter, r#"{"main":{"mismatch_action":"allow","match_action":{"errno":1},"filter":[{"syscall":"mkdirat"},{"syscall":"mkdir"}]}}"#).expect("write");
    let out = cns(&[
        "run", "--name", &n, "--net", "none", "--cap-drop", "all", "--seccomp", filter.to_str().expect("utf8"), "--",
        "sh", "-c", "awk 'NR>2{printf \"%s \", $1}' /proc/net/dev; echo; grep CapEff /proc/self/status; mkdir /tmp/cns-seccomp-test-$$ && echo made || echo denied",
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.lines().next().is_some_and(|l| l.trim() == "lo:"), "{s}");
    assert!(s.contains("CapEff:\t0000000000000000"), "{s}");
    assert!(s.contains("denied"), "{s}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ nope").expect("write");
    let e = fails(&["run", "--name", &name("badsec"), "--seccomp", bad.to_str().expect("utf8"), "--", "true"]);
    assert!(e.contains("invalid seccomp filter"), "{e}");
}

#[test]
fn works_when_host_mounts_are_shared() {
    // Build the shared-propagation case inside a private test mount namespace,
    // never on the real host root.
    let n = name("shared");
    let _c = Cleanup(vec![n.clone()]);
    let script = format!(
        "mount --make-rshared / && {bin} run -d --name {n} -- sleep 1000 && p=$({bin} ps --json | python3 -c 'import json,sys; print([e[\"pid\"] for e in json.load(sys.stdin) if e[\"name\"]==\"{n}\"][0])') && grep -c shared: /proc/$p/mountinfo || true",
        bin = cns_bin().display()
    );
    let out = std::process::Command::new("unshare").args(["-m", "--propagation", "unchanged", "sh", "-c", &script]).output().expect("unshare");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.lines().last().is_some_and(|l| l.trim() == "0"), "workload mounts still shared: {s} {}", String::from_utf8_lossy(&out.stderr));
    // And a real CRIU dump of it works.
    let pid = pid_of(&n);
    let (dumped, log) = raw_criu_dump(pid);
    assert!(dumped, "criu dump failed: {log}");
}

#[test]
fn a_running_workload_passes_a_plain_criu_dump() {
    let n = name("rawdump");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let pid = pid_of(&n);
    let (dumped, log) = raw_criu_dump(pid);
    assert!(dumped, "criu dump failed: {log}");
    assert!(alive(pid));
}

#[test]
fn ps_keeps_each_command_on_one_line_and_rm_and_kill_take_several_names() {
    let names: Vec<String> = (0..3).map(|i| name(&format!("multi{i}"))).collect();
    let _c = Cleanup(names.clone());
    for n in &names {
        ok(&["run", "-d", "--name", n, "--", "sh", "-c", "trap 'exit 3' USR1; while :; do sleep 0.05; done\n# second line\t"]);
    }
    let table = ok(&["ps"]);
    let rows: Vec<&str> = table.lines().filter(|l| names.iter().any(|n| l.starts_with(n.as_str()))).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows.iter().all(|l| l.contains("done\\n# second line\\t")), "{table}");
    ok(&["kill", &names[0], &names[1], "-s", "USR1"]);
    wait_for("both to exit", 20, || state_of(&names[0]) == "exited" && state_of(&names[1]) == "exited");
    assert_eq!(state_of(&names[2]), "running");
    // One unknown name among them: the others are removed, the status says one failed.
    let out = cns(&["rm", "-f", &names[0], "no-such-workload-here", &names[1], &names[2]]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("cns: no workload named no-such-workload-here"));
    assert!(names.iter().all(|n| ps_entry(n).is_none()), "rm skipped names after a failure");
}

/// `Cpus_allowed_list` of a process, from its status file.
fn cpus_of(status: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string()).unwrap_or_default()
}

#[test]
fn the_workload_and_its_monitor_keep_every_cpu_they_were_given() {
    // During the start the parent keeps to its CPU and the child to the
    // others (process/spawn.rs, CpuSplit); neither may keep that mask.
    let ours = cpus_of(&std::fs::read_to_string("/proc/self/status").expect("own status"));
    let n = name("cpus");
    let _c = Cleanup(vec![n.clone()]);
    let out = ok(&["run", "--name", &n, "--", "sh", "-c", "grep Cpus_allowed_list /proc/self/status /proc/1/status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        assert_eq!(cpus_of(l.split_once(':').map(|(_, r)| r).unwrap_or("")), ours, "a foreground workload's process lost CPUs: {l}");
    }
    let d = name("cpusd");
    let _cd = Cleanup(vec![d.clone()]);
    ok(&["run", "-d", "--name", &d, "--", "sleep", "1000"]);
    let init = pid_of(&d);
    let status = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let monitor: i32 = status(init).lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok()).expect("init's parent");
    let cmd = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).expect("init's children");
    let cmd: i32 = cmd.split_whitespace().next().and_then(|p| p.parse().ok()).expect("CMD under init");
    for (what, pid) in [("init", init), ("CMD", cmd), ("its monitor", monitor)] {
        assert_eq!(cpus_of(&status(pid)), ours, "{what} (pid {pid}) of a detached workload lost CPUs");
    }
}
