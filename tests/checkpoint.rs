//! `cns dump` / `cns restore` with the real CRIU.

mod common;
use common::*;

/// The counter's value in its memory: ask the restored shell itself.
fn counter_after(n: &str, k: u64) -> u64 {
    wait_for("the counter to pass its dumped value", 20, || last_count(n).is_some_and(|c| c > k + 2));
    last_count(n).expect("count")
}

#[test]
fn dumped_counter_continues_from_k_in_a_new_pid_namespace() {
    let n = name("ctr");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let old_pid = pid_of(&n);
    let old_pidns = ns_inode(old_pid, "pid");
    // Hold the old pid ns open: a freed namespace's inode number can be reused.
    let _hold = std::fs::File::open(format!("/proc/{old_pid}/ns/pid")).expect("old pid ns");
    ok(&["dump", &n]);
    assert_eq!(state_of(&n), "dumped");
    assert!(!alive(old_pid), "the dumped workload still runs");
    let k = last_count(&n).expect("k");
    // No established TCP connection in the checkpoint: CRIU's network lock
    // would guard nothing, and cns restores without it.
    let line = ok(&["restore", "--print-criu-cmdline", &n]);
    assert!(line.contains("--network-lock skip "), "{line}");
    let pidfile = std::env::temp_dir().join(format!("{n}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    ok(&["restore", "-d", &n, "--pidfile", pidfile.to_str().expect("utf8")]);
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("pid");
    assert!(alive(pid), "pidfile does not hold a live PID");
    assert_eq!(pid_of(&n), pid);
    assert_eq!(state_of(&n), "running");
    assert_ne!(ns_inode(pid, "pid"), old_pidns, "restored into the old pid namespace");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.lines().any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")), "restored root is not PID 1 inside: {status}");
    // The log continues from k+1: the value came from the shell's memory.
    let log = log_of(&n);
    let after: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let pos = after.iter().position(|&v| v == k).expect("k in log");
    counter_after(&n, k);
    let log = log_of(&n);
    let after: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(after.get(pos + 1), Some(&(k + 1)), "after the restore the counter did not continue from {k}");
    // The image dir and its files are private.
    use std::os::unix::fs::PermissionsExt;
    let img = format!("/var/lib/cns/images/{n}");
    assert_eq!(std::fs::metadata(&img).expect("img").permissions().mode() & 0o777, 0o700);
    for e in std::fs::read_dir(&img).expect("img").flatten() {
        let mode = e.metadata().expect("meta").permissions().mode();
        assert_eq!(mode & 0o007, 0, "{:?} is world-accessible", e.file_name());
    }
    let _ = std::fs::remove_file(pidfile);
}

#[test]
fn four_copies_restore_side_by_side_with_their_own_logs() {
    let n = name("src");
    let copies: Vec<String> = (0..4).map(|i| name(&format!("cp{i}"))).collect();
    let mut all = vec![n.clone()];
    all.extend(copies.iter().cloned());
    let _c = Cleanup(all);
    start_counter(&n);
    ok(&["dump", "--leave-running", &n]);
    let orig_pid = pid_of(&n);
    assert!(alive(orig_pid), "--leave-running stopped the original");
    let k = {
        let text = std::fs::read_to_string(format!("/var/lib/cns/images/{n}/cns.json")).expect("meta");
        assert!(text.contains("\"dumped_at\""));
        // k is the last value the original printed before the dump; copies start after some value <= now
        last_count(&n).expect("k")
    };
    let handles: Vec<_> = copies
        .iter()
        .map(|c| {
            let (n, c) = (n.clone(), c.clone());
            std::thread::spawn(move || ok(&["restore", "-d", &n, "--as", &c]))
        })
        .collect();
    for h in handles {
        h.join().expect("join");
    }
    let mut pids = std::collections::BTreeSet::new();
    for c in &copies {
        let pid = pid_of(c);
        assert!(alive(pid));
        pids.insert(pid);
        wait_for("the copy to count", 20, || last_count(c).is_some());
        let first: u64 = log_of(c).lines().find_map(|l| l.trim().parse().ok()).expect("copy output");
        assert!(first <= k + 1, "copy {c} started at {first}, after the original's {k}");
        assert!(first > 0, "copy {c} restarted from scratch");
        let logs = ok(&["logs", c]);
        assert!(!logs.is_empty(), "cns logs shows nothing for {c}");
    }
    assert_eq!(pids.len(), 4, "copies share host PIDs");
    // The original's log did not receive the copies' output: it keeps counting alone (strictly increasing).
    let orig: Vec<u64> = log_of(&n).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(orig.windows(2).all(|w| w[1] == w[0] + 1), "the original's log has foreign lines");
    // Restoring the running original under its own name is refused, nothing touched.
    let e = fails(&["restore", "-d", &n]);
    assert!(e.contains("running"), "{e}");
    assert_eq!(pid_of(&n), orig_pid);
}

#[test]
fn a_failed_dump_leaves_the_workload_running() {
    let n = name("fdump");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    let pid = pid_of(&n);
    // Provoke a CRIU failure for real: a dump into a file path (not a directory) parent.
    let dir = tempfile::tempdir().expect("tmp");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").expect("write");
    let e = fails(&["dump", &n, "--images", blocker.join("img").to_str().expect("utf8")]);
    assert!(e.contains("cannot"), "{e}");
    assert!(alive(pid));
    assert_eq!(state_of(&n), "running");
    // Not frozen or stopped: it gets back to sleeping or running (a moment
    // in D, paging in under a loaded suite, once failed a one-look check).
    let state = || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        st.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string()
    };
    wait_for("the workload to sleep or run", 10, || matches!(state().as_str(), "S" | "R"));
    // And a later dump works.
    ok(&["dump", "--leave-running", &n]);
}

#[test]
fn a_failed_restore_leaves_nothing_behind() {
    let n = name("frest");
    let copy = name("frestc");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    start_counter(&n);
    ok(&["dump", &n]);
    // Truncate the page data: the restore must fail cleanly.
    let img = format!("/var/lib/cns/images/{n}");
    let pages = std::fs::read_dir(&img).expect("img").flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("pages-"))).max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).expect("pages");
    let len = std::fs::metadata(&pages).expect("len").len();
    let f = std::fs::OpenOptions::new().write(true).open(&pages).expect("open");
    f.set_len(len / 2).expect("truncate");
    let e = fails(&["restore", "-d", &n, "--as", &copy]);
    assert!(e.contains("truncated"), "the refusal does not name the truncation: {e}");
    assert!(ps_entry(&copy).is_none(), "a failed restore left a record");
    let veth = cns_runtime::net::host_veth_name(&copy);
    assert!(!links_named("cns-").contains(&veth), "a failed restore left the veth {veth}");
    assert_eq!(state_of(&n), "dumped");
}

#[test]
fn adopted_host_tree_restores_with_its_pid_in_a_fresh_pid_ns() {
    let n = name("adopt");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    // A host tree not started by cns: a session leader with stdio on files.
    let child = std::process::Command::new("setsid")
        .args(["sh", "-c", &format!("i=0; while :; do echo $i >> {}; i=$((i+1)); sleep 0.05; done", out.display())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let host_pid = child.id() as i32;
    wait_for("the host tree to count", 10, || std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() > 3));
    ok(&["dump", "--pid", &host_pid.to_string(), &n]);
    assert!(!alive(host_pid));
    let mut child = child;
    let _ = child.wait();
    // Take its PID on the host: the restore must not care.
    let squatter = std::process::Command::new("sleep").arg("100").spawn().expect("sleep");
    let k: u64 = std::fs::read_to_string(&out).expect("out").lines().filter_map(|l| l.parse().ok()).next_back().expect("k");
    let pidfile = dir.path().join("pid");
    ok(&["restore", "-d", &n, "--pidfile", pidfile.to_str().expect("utf8")]);
    wait_for("the adopted tree to continue", 20, || std::fs::read_to_string(&out).is_ok_and(|t| t.lines().filter_map(|l| l.parse::<u64>().ok()).next_back().is_some_and(|v| v > k + 2)));
    let vals: Vec<u64> = std::fs::read_to_string(&out).expect("out").lines().filter_map(|l| l.parse().ok()).collect();
    let pos = vals.iter().position(|&v| v == k).expect("k");
    assert_eq!(vals[pos + 1], k + 1, "did not continue from {k}");
    // Its original PID, inside a new pid namespace.
    let init = pid_of(&n);
    let kids = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).expect("children");
    let restored: i32 = kids.split_whitespace().next().expect("restored root").parse().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{restored}/status")).expect("status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    assert_eq!(nspid.split_whitespace().last(), Some(host_pid.to_string().as_str()), "{nspid}");
    assert_ne!(ns_inode(restored, "pid"), ns_inode(std::process::id() as i32, "pid"));
    let written: i32 = std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("pid");
    assert_eq!(written, restored, "the pidfile holds the ns init, not the restored root");
    let mut squatter = squatter;
    let _ = squatter.kill();
    let _ = squatter.wait();
}

#[test]
fn second_dump_racing_the_first_is_refused() {
    let n = name("race");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    // Hold the workload's lock as a running dump would.
    let lock = std::fs::File::open(format!("/run/cns/.locks/{n}")).expect("lock");
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc_flock(&lock) }, 0);
    let e = fails(&["dump", &n]);
    assert!(e.contains("busy"), "{e}");
    drop(lock);
    assert_eq!(state_of(&n), "running");
}

unsafe fn libc_flock(f: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn flock(fd: i32, op: i32) -> i32;
    }
    // SAFETY: flock(2) on an fd we own; LOCK_EX | LOCK_NB.
    unsafe { flock(f.as_raw_fd(), 2 | 4) }
}

#[test]
fn crius_errors_are_explained_tcp_without_flag() {
    // Plain CRIU fails on an established TCP connection without the flag; cns's
    // explanation of that log names the flag.
    let n = name("tcpx");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--net", "none", "--", "sh", "-c", "python3 -c \"import socket,time\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); a,_=s.accept(); print('up', flush=True); time.sleep(1000)\""]);
    wait_for("the connection", 20, || log_of(&n).contains("up"));
    let pid = pid_of(&n);
    let (dumped, _) = raw_criu_dump(pid);
    assert!(!dumped, "plain criu dumped an established connection without --tcp-established");
    // Without pre-flight the real CRIU fails inside cns; the one line names the cause and the flag.
    let out = cns(&["dump", "--no-preflight", "--leave-running", &n]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "CRIU dumped an established connection without the flag");
    assert!(err.lines().next().is_some_and(|l| l.starts_with("cns: dump failed: the tree holds an established TCP connection")), "{err}");
    assert!(err.contains("hint: dump and restore with --tcp-established"), "{err}");
    assert_eq!(state_of(&n), "running", "a failed dump stopped the workload");
    // cns sees it first and turns the flag on itself.
    let out = cns(&["dump", "--leave-running", &n]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp-established"));
}

#[test]
fn a_restored_workload_can_be_dumped_and_restored_again() {
    // Each round the log must be reached through the workload's own mount
    // namespace again, or the next dump fails on a host-mount fd.
    let n = name("again");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    counter_after(&n, 0);
    for round in 0..3 {
        ok(&["dump", &n]);
        let dumped = last_count(&n).expect("count");
        ok(&["restore", "-d", &n]);
        let now = counter_after(&n, dumped);
        assert!(now > dumped, "round {round}: counter went from {dumped} to {now}");
        let nums: Vec<u64> = log_of(&n).lines().filter_map(|l| l.trim().parse().ok()).collect();
        let pos = nums.iter().rposition(|&v| v == dumped).expect("dumped value in log");
        assert_eq!(nums.get(pos + 1), Some(&(dumped + 1)), "round {round}: did not continue from {dumped}");
    }
}

/// The host's own /dev/shm is neither the workload's nor its checkpoint's:
/// it is unmounted in the workload's mount namespace before the private
/// one goes on, so CRIU does not archive the host's files into the images
/// (nor spend a tar on each hidden tmpfs).
#[test]
fn the_hosts_dev_shm_stays_out_of_the_workload_and_its_checkpoint() {
    let n = name("shm");
    let _c = Cleanup(vec![n.clone()]);
    let marker = std::path::PathBuf::from(format!("/dev/shm/cns-test-{n}"));
    std::fs::write(&marker, b"a file of the host's").expect("host /dev/shm file");
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _gone = Gone(marker.clone());
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    let pid = pid_of(&n);
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let shm: Vec<&str> = mountinfo.lines().filter(|l| l.split(' ').nth(4) == Some("/dev/shm")).collect();
    assert_eq!(shm.len(), 1, "one /dev/shm mount, the workload's own: {shm:?}");
    assert!(shm[0].contains(" - tmpfs shm "), "{}", shm[0]);
    ok(&["dump", "--leave-running", &n]);
    let img = format!("/var/lib/cns/images/{n}");
    let mut archives = 0;
    for e in std::fs::read_dir(&img).expect("images").flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if !f.starts_with("tmpfs-") {
            continue;
        }
        archives += 1;
        let list = std::process::Command::new("tar").arg("-tzf").arg(e.path()).output().expect("tar");
        assert!(list.status.success(), "tar -tzf {f}");
        let names = String::from_utf8_lossy(&list.stdout);
        assert!(!names.contains(&format!("cns-test-{n}")), "the host's /dev/shm file is in {f}: {names}");
    }
    assert!(archives > 0, "the workload's own /dev/shm is archived");
    // And what the workload writes there stays its own.
    let own = format!("cns-own-{n}");
    let out = ok(&["exec", &n, "--", "sh", "-c", &format!("echo mine > /dev/shm/{own} && cat /dev/shm/{own}")]);
    assert_eq!(out.trim(), "mine");
    assert!(!std::path::Path::new(&format!("/dev/shm/{own}")).exists(), "the workload's /dev/shm file showed on the host");
}
