//! `cns restore --lazy`: post-copy restore from the image, with CRIU's
//! lazy-pages daemon owned (and reaped) by cns. These tests raise
//! fs.pipe-max-size (CRIU's lazy pages need 4 MiB) and put it back; they
//! hold one lock while they do, so they never undo each other's setting.

mod common;
use common::*;

use std::path::Path;

/// A counter holding `mib` MiB of touched memory.
fn start_big_counter(n: &str, mib: u64) {
    let script = format!("import time\nb = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\ni = 0\nwhile True:\n    print(i, flush=True); i += 1; time.sleep(0.05)\n");
    ok(&["run", "-d", "--name", n, "--", "python3", "-c", &script]);
    wait_for("the counter", 60, || last_count(n).is_some_and(|c| c >= 2));
}

fn lazy_marker(n: &str) -> std::path::PathBuf {
    Path::new("/run/cns").join(n).join("lazy")
}

fn daemon_of(n: &str) -> Option<i32> {
    std::fs::read_to_string(lazy_marker(n)).ok()?.trim().parse().ok()
}

#[test]
fn lazy_restore_without_the_pipe_size_is_refused_in_one_line_and_leaves_nothing() {
    let n = name("lzno");
    let copy = name("lzno-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    start_counter(&n);
    ok(&["dump", "--leave-running", &n]);
    let _p = PipeMax::set(1 << 20);
    let e = fails(&["restore", "-d", "--lazy", &n, "--as", &copy]);
    assert!(e.starts_with("cns: a lazy restore needs fs.pipe-max-size of at least 4 MiB; it is 1024 KiB here"), "{e}");
    assert!(e.contains("hint: raise it (cns never changes a host sysctl for you): sysctl -w fs.pipe-max-size=4194304"), "{e}");
    assert!(ps_entry(&copy).is_none());
    assert!(!lease_held(&copy));
    assert!(!Path::new(&format!("/var/lib/cns/images/{n}/.lazy-{copy}")).exists());
    assert_eq!(std::fs::read_to_string(PIPE_MAX).expect("read").trim(), "1048576", "cns changed the sysctl");
}

#[test]
fn lazy_copies_run_at_once_their_daemons_are_reaped_and_they_dump_again() {
    let n = name("lz");
    let copies = [name("lz-c1"), name("lz-c2")];
    let _c = Cleanup(vec![n.clone(), copies[0].clone(), copies[1].clone()]);
    start_big_counter(&n, 128);
    ok(&["dump", "--leave-running", &n]);
    // The last value the original printed by the dump: the copies go on from there.
    let dumped = last_count(&n).expect("the original's count");
    let _p = PipeMax::set(4 << 20);
    let hs: Vec<_> = copies.iter().cloned().map(|c| {
        let n = n.clone();
        std::thread::spawn(move || ok(&["restore", "-d", "--lazy", &n, "--as", &c]))
    }).collect();
    for h in hs {
        h.join().expect("a lazy restore failed");
    }
    for c in &copies {
        // A copy's log starts empty; its first line comes once the pages it touches are in.
        wait_for("the lazy copy's first line", 30, || last_count(c).is_some());
        let first: u64 = log_of(c).lines().find_map(|l| l.trim().parse().ok()).expect("the copy's first line");
        assert!(first > 0 && first <= dumped + 1, "copy {c} started at {first}, the original was at {dumped} when dumped");
        let k = last_count(c).expect("the copy's log");
        wait_for("the lazy copy to count", 30, || last_count(c).is_some_and(|v| v > k + 2));
        // Every page in: the daemon is reaped, its work dir and the marker gone.
        wait_for("the lazy-pages daemon to finish", 60, || !lazy_marker(c).exists());
        assert!(!Path::new(&format!("/var/lib/cns/images/{n}/.lazy-{c}")).exists(), "the lazy work dir was left");
        ok(&["dump", "--leave-running", c]);
    }
    // While pages are still coming, a dump is refused; once in, it works.
    // The daemon is stopped just before CRIU resumes the copy (an action
    // script), so the transfer is certainly not done when the dump asks.
    let c3 = name("lz-c3");
    let _c3 = Cleanup(vec![c3.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let hook = dir.path().join("stop-daemon.sh");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = pre-resume ] || exit 0\nkill -STOP \"$(cat /run/cns/$CNS_NAME/lazy)\"\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    ok(&["restore", "-d", "--lazy", "--action-script", hook.to_str().expect("utf8"), &n, "--as", &c3]);
    let d = daemon_of(&c3).expect("the copy's daemon is recorded");
    assert!(alive(d), "the stopped daemon is gone");
    let e = fails(&["dump", &c3]);
    assert!(e.contains("still receiving its memory from a lazy restore"), "{e}");
    assert_eq!(state_of(&c3), "running", "a refused dump stopped the copy");
    // SAFETY: kill(2) on the daemon cns recorded for this test's copy.
    unsafe { libc::kill(d, libc::SIGCONT) };
    wait_for("the third copy's memory", 60, || !lazy_marker(&c3).exists());
    ok(&["dump", &c3]);
    assert_eq!(state_of(&c3), "dumped");
}

#[test]
fn a_lazy_pages_daemon_that_dies_gets_the_workload_killed_and_reported() {
    let n = name("lzdie");
    let copy = name("lzdie-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    start_big_counter(&n, 128);
    ok(&["dump", "--leave-running", &n]);
    let dir = tempfile::tempdir().expect("dir");
    // Kills the copy's daemon just before CRIU resumes the tree: its memory
    // is not in yet, so the tree would hang on its first page fault.
    let hook = dir.path().join("kill-daemon.sh");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = pre-resume ] || exit 0\nkill -9 \"$(cat /run/cns/$CNS_NAME/lazy)\"\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let _p = PipeMax::set(4 << 20);
    ok(&["restore", "-d", "--lazy", "--action-script", hook.to_str().expect("utf8"), &n, "--as", &copy]);
    wait_for("the copy to be killed", 30, || state_of(&copy) == "exited");
    let log = log_of(&copy);
    assert!(log.contains(&format!("cns: the lazy-pages daemon of {copy} died")), "{log}");
    assert!(!lazy_marker(&copy).exists());
    assert!(!Path::new(&format!("/var/lib/cns/images/{n}/.lazy-{copy}")).exists());
    // The original runs on, untouched.
    assert_eq!(state_of(&n), "running");
}
