//! The compatibility corpus: small programs, each holding one kind of kernel
//! object in a state that is easy to get wrong (tests/corpus/*.py, *.c).
//! Each goes through cns as a user would — run, pre-flight, dump, restore —
//! and then checks its own object still works. The test asserts that
//! pre-flight and the real CRIU agree, both ways: a pre-flight refusal must
//! be a real CRIU refusal (no false "no"), and what pre-flight lets through
//! must dump and restore (no false "yes"). Each entry records its row in
//! target/compat/ as it ends, passed or not; scripts/compat-report turns
//! them into docs/compatibility.md.

mod common;
use common::*;

use std::path::{Path, PathBuf};

/// One row of docs/compatibility.md (target/compat/ID.json), written when
/// the entry's test ends, passed or not.
fn row(id: &str) -> RunRecord {
    let mut r = RunRecord::new("compat", id);
    r.set("id", id);
    r
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// The program of entry `id` in `dir`: a Python script with the prelude, or
/// a C program compiled here with the system's gcc.
fn build(id: &str, dir: &Path) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let py = src.join(format!("{id}.py"));
    if py.exists() {
        let prog = dir.join(format!("{id}.py"));
        let text = std::fs::read_to_string(src.join("prelude.py")).expect("prelude") + &std::fs::read_to_string(&py).expect("entry");
        std::fs::write(&prog, text).expect("write");
        return vec![python().into(), prog.to_string_lossy().into_owned()];
    }
    let c = dir.join(format!("{id}.c"));
    let text = std::fs::read_to_string(src.join("prelude.c")).expect("prelude") + &std::fs::read_to_string(src.join(format!("{id}.c"))).expect("entry");
    std::fs::write(&c, text).expect("write");
    let bin = dir.join(id);
    let out = std::process::Command::new("gcc").args(["-O1", "-Wall", "-o"]).arg(&bin).arg(&c).arg("-lrt").output().expect("gcc");
    assert!(out.status.success(), "gcc {id}: {}", String::from_utf8_lossy(&out.stderr));
    vec![bin.to_string_lossy().into_owned()]
}

/// Blockers (and the CRIU flags turned on) from `cns check --json`.
fn verdict(args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = cns(args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut blockers = Vec::new();
    let mut notes = Vec::new();
    for f in v.as_array().into_iter().flatten() {
        let line = format!("{}: {} ({})", f["code"].as_str().unwrap_or(""), f["message"].as_str().unwrap_or(""), f["object"].as_str().unwrap_or(""));
        match f["severity"].as_str() {
            Some("blocker") => blockers.push(line),
            Some("warning") => notes.push(f["fix"].as_str().unwrap_or("").to_string()),
            _ => {}
        }
    }
    (blockers, notes)
}

/// What the real CRIU says of a tree pre-flight refused: its first error.
fn criu_first_error(log: &str) -> String {
    cns_engine::explain::first_error(log).unwrap_or_else(|| "(no error line)".into())
}

/// Whether this host's root has CAP_SYS_RESOURCE (CRIU needs it for trees
/// with processes of other users).
fn has_cap_sys_resource() -> bool {
    cns_engine::preflight::caps_of_self() & (1 << 24) != 0
}

fn run_entry(id: &'static str, what: &str, extra: &[&str]) {
    let mut row = row(id);
    row.set("object", what);
    let n = name(&id.replace('_', "-"));
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("scratch");
    let prog = build(id, dir.path());
    let seccomp = dir.path().join("deny-mkdir.json");
    std::fs::write(&seccomp, r#"{"main":{"mismatch_action":"allow","match_action":{"errno":1},"filter":[{"syscall":"mkdir"},{"syscall":"mkdirat"}]}}"#).expect("filter");
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), n.clone()];
    for a in extra {
        args.push(a.replace("{seccomp}", seccomp.to_str().expect("utf8")));
    }
    args.push("--".into());
    args.extend(prog);
    args.push(dir.path().to_string_lossy().into_owned());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a);
    wait_for(&format!("{id} to set up"), 30, || log_of(&n).contains("ready"));
    // Pre-flight of the dump, then the real CRIU.
    let (blockers, notes) = verdict(&["check", "--json", &n]);
    row.set("dump_preflight", if blockers.is_empty() { "ok".to_string() } else { blockers.join("; ") });
    if !blockers.is_empty() {
        let (dumped, log) = raw_criu_dump(pid_of(&n));
        row.set("criu", if dumped { "dumped".to_string() } else { criu_first_error(&log) });
        row.set("outcome", "refused by pre-flight");
        assert!(!dumped, "false no: pre-flight refused {id} ({blockers:?}) but the real CRIU dumps it");
        let e = fails(&["dump", &n]);
        assert!(e.starts_with(&format!("cns: cannot dump {n}:")), "{e}");
        assert_eq!(state_of(&n), "running", "a refused dump stopped the workload");
        return;
    }
    let out = cns(&["dump", &n]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    row.set("criu", if out.status.success() { "dumped".to_string() } else { err.lines().next().unwrap_or("").to_string() });
    assert!(out.status.success(), "false yes: pre-flight let {id} through, the dump failed: {err}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("/var/lib/cns/images/{n}/cns.json")).expect("meta")).expect("json");
    let flags: Vec<&str> = ["tcp_established", "file_locks", "ext_unix_sk", "shell_job", "link_remap", "evasive_devices"].into_iter().filter(|f| meta[*f] == true).collect();
    row.set("flags", flags.iter().map(|f| format!("--{}", f.replace('_', "-"))).collect::<Vec<_>>().join(" "));
    row.set("notes", notes.join("; "));
    // Pre-flight of the restore, then the restore.
    let (rblockers, _) = verdict(&["check", "--json", "--image", &n]);
    row.set("restore_preflight", if rblockers.is_empty() { "ok".to_string() } else { rblockers.join("; ") });
    let out = cns(&["restore", "-d", &n]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    row.set("restore", if out.status.success() { "restored".to_string() } else { err.lines().next().unwrap_or("").to_string() });
    assert!(rblockers.is_empty(), "false no: restore pre-flight refused {id}: {rblockers:?} (the restore {})", if out.status.success() { "worked" } else { "failed too" });
    assert!(out.status.success(), "false yes: restore pre-flight let {id} through, the restore failed: {err}");
    // The object still works.
    ok(&["kill", &n, "USR1"]);
    wait_for(&format!("{id} to check itself"), 30, || log_of(&n).contains("check-"));
    let log = log_of(&n);
    let line = log.lines().find(|l| l.starts_with("check-")).unwrap_or("").to_string();
    row.set("self_check", line.clone());
    row.set("outcome", if line == "check-ok" { "works" } else { "restored, object broken" });
    assert_eq!(line, "check-ok", "{id}: the restored object does not work");
}

macro_rules! corpus {
    ($($id:ident: $what:expr $(, $extra:expr)?;)*) => {
        $(
            #[test]
            fn $id() {
                let extra: &[&str] = &[$($extra)?];
                run_entry(stringify!($id), $what, extra);
            }
        )*
        /// Every entry file has a test, and every test a file.
        #[test]
        fn every_entry_is_listed() {
            let listed = [$(stringify!($id)),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
            let files: Vec<String> = std::fs::read_dir(&dir).expect("corpus").flatten()
                .map(|e| e.path()).filter(|p| p.file_stem().is_some_and(|s| s != "prelude"))
                .filter_map(|p: PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
            for f in &files {
                assert!(listed.contains(&f.as_str()) || f == "other_uid", "tests/corpus/{f} has no corpus test");
            }
            assert!(listed.len() >= 40, "the corpus has {} entries", listed.len());
        }
    };
}

corpus! {
    unlinked_small: "a small file unlinked while open (a ghost file)";
    unlinked_big: "a 4 MiB file unlinked while open (over CRIU's 1 MiB ghost limit)";
    unlinked_holes: "a sparse 40 MiB file with holes, unlinked while open";
    unlinked_several: "three files unlinked while open";
    unlinked_mapped: "a file mapped, then unlinked and closed";
    deleted_cwd: "a working directory that was removed";
    removed_dir_open: "a directory held open after it was removed";
    link_remap: "a file unlinked while another hard link keeps it";
    replaced_same_size: "an open file replaced at its path by another of the same size";
    dangling_symlink: "a dangling symlink held by an O_PATH|O_NOFOLLOW fd";
    unlinked_fifo: "an unlinked FIFO with data in flight";
    fifo_data: "a FIFO with data in flight";
    deleted_device: "a device node removed while open";
    eventfd: "an eventfd with a count";
    epoll_several: "epoll over a pipe and an eventfd, both ready";
    pipe_data: "a pipe with data in flight";
    signalfd: "a signalfd with a pending signal";
    timerfd: "a periodic timerfd";
    inotify: "an inotify watch on a file";
    inotify_removed: "an inotify group whose watched file was removed";
    fanotify: "a fanotify group with a mark on a directory";
    unix_stream_pair: "a unix stream pair with queued data";
    unix_dgram_pair: "a unix datagram pair with queued datagrams";
    unix_seqpacket_pair: "a unix seqpacket pair with a queued record";
    unix_listener_pending: "a unix listener with an unaccepted connection";
    unix_listener_inflight_data: "a unix listener with an unaccepted connection that already sent data";
    unix_abstract: "an abstract unix listener";
    unix_peer_closed: "a unix stream socket whose peer closed after sending";
    tcp_listen: "a TCP listener";
    tcp_established: "an established TCP connection with queued data";
    tcp_half_closed: "a half-closed TCP connection";
    udp: "a connected UDP pair";
    netlink: "a netlink route socket";
    sysv_shm: "SysV shared memory";
    sysv_sem: "a SysV semaphore set";
    sysv_msg: "a SysV message queue with a message";
    posix_mqueue: "a POSIX message queue with a message";
    memfd_sealed: "a sealed memfd";
    flock: "an flock(2) lock";
    posix_lock: "a POSIX (fcntl) record lock";
    ofd_lock: "an open-file-description lock";
    threads: "four threads";
    zombie: "a zombie child";
    process_groups: "a child session and a child process group";
    rlimits: "changed rlimits";
    pty_pair: "a pty pair the tree owns, data in flight";
    pty_ctty: "its own session whose controlling terminal (/dev/tty) is a pty the tree owns";
    dev_shm_file: "a /dev/shm file, mapped";
    mapped_closed: "a file mapped, then closed";
    large_anon: "256 MiB of anonymous memory";
    vdso_clock: "clock_gettime (vDSO) after the restore";
    seccomp: "a seccomp filter (cns run --seccomp)", "--seccomp={seccomp}";
    caps_dropped: "all capabilities dropped (cns run --cap-drop all)", "--cap-drop=all";
}

#[test]
fn a_process_of_another_uid_follows_criu_s_privileges() {
    // On this platform root lacks CAP_SYS_RESOURCE: pre-flight refuses with
    // the reason, and the real CRIU fails the same way. Where root has it,
    // the tree dumps and restores.
    let id = "other_uid";
    if has_cap_sys_resource() {
        run_entry(id, "a process of another uid", &[]);
        return;
    }
    let mut row = row(id);
    row.set("object", "a process of another uid");
    let n = name("other-uid");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("scratch");
    let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), n.clone(), "--".into()];
    args.extend(build(id, dir.path()));
    args.push(dir.path().to_string_lossy().into_owned());
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("the tree", 30, || log_of(&n).contains("ready"));
    let out = cns(&["check", &n]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "cns check did not refuse: {text}");
    assert!(text.contains("criu-privileges") && text.contains("CAP_SYS_RESOURCE"), "{text}");
    row.set("dump_preflight", "criu-privileges: CRIU cannot read the rlimits of a process of another user (no CAP_SYS_RESOURCE here)");
    let (dumped, log) = raw_criu_dump(pid_of(&n));
    row.set("criu", criu_first_error(&log));
    row.set("outcome", "refused by pre-flight (this host's root lacks CAP_SYS_RESOURCE)");
    assert!(!dumped, "the real CRIU dumped a tree with another uid without CAP_SYS_RESOURCE");
    assert!(log.contains("Can't get rlimit"), "CRIU failed for another reason: {}", criu_first_error(&log));
    let e = fails(&["dump", &n]);
    assert!(e.contains("CAP_SYS_RESOURCE"), "{e}");
    assert_eq!(state_of(&n), "running");
}

/// Starts a corpus program under cns and waits for it to be ready.
fn start(id: &str, n: &str, dir: &Path) {
    let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), n.to_string(), "--".into()];
    args.extend(build(id, dir));
    args.push(dir.to_string_lossy().into_owned());
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for(&format!("{id} to set up"), 30, || log_of(n).contains("ready"));
}

#[test]
fn without_pre_flight_the_real_criu_error_is_named_in_one_line() {
    // Each: a corpus program CRIU refuses, dumped with --no-preflight, and
    // the one line cns must print (a mapped sentence, or CRIU's own Error text).
    let cases: &[(&str, &str, &str)] = &[
        ("posix_mqueue", "a file descriptor points into a mount that is not in the workload's mount namespace", "hint: start the workload with `cns run`"),
        ("unix_listener_inflight_data", "unix: Non-empty write queue on an in-flight socket", "hint: see the CRIU log"),
    ];
    for (id, line, hint) in cases {
        let n = name(&format!("nopf-{}", id.replace('_', "-")));
        let _c = Cleanup(vec![n.clone()]);
        let dir = tempfile::tempdir().expect("scratch");
        start(id, &n, dir.path());
        let e = fails(&["dump", "--no-preflight", &n]);
        let first = e.lines().next().unwrap_or("");
        assert!(first.starts_with("cns: dump failed: ") && first.contains(line), "{id}: {e}");
        assert!(!first.contains("Dumping path for") && !first.contains("smaps"), "{id}: a debug line was quoted: {e}");
        assert!(e.contains(hint), "{id}: {e}");
        assert_eq!(state_of(&n), "running", "{id}: a failed dump stopped the workload");
    }
    if !has_cap_sys_resource() {
        let n = name("nopf-uid");
        let _c = Cleanup(vec![n.clone()]);
        let dir = tempfile::tempdir().expect("scratch");
        start("other_uid", &n, dir.path());
        let e = fails(&["dump", "--no-preflight", &n]);
        assert!(e.starts_with("cns: dump failed: CRIU cannot read the rlimits of a process of another user"), "{e}");
        assert!(e.contains("hint: run cns with CAP_SYS_RESOURCE"), "{e}");
    }
}

#[test]
fn action_scripts_run_at_criu_s_stages_and_a_failing_one_stops_the_dump() {
    let n = name("hooks");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("scratch");
    let trace = dir.path().join("trace");
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION $CNS_NAME\" >> {}\n", trace.display())).expect("hook");
    let failing = dir.path().join("fail.sh");
    std::fs::write(&failing, "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = pre-dump ] && exit 3\nexit 0\n").expect("hook");
    for s in [&script, &failing] {
        std::fs::set_permissions(s, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    start_counter(&n);
    let s = script.to_str().expect("utf8");
    ok(&["dump", "--action-script", s, &n]);
    ok(&["restore", "-d", "--action-script", s, &n]);
    let stages: Vec<String> = std::fs::read_to_string(&trace).expect("trace").lines().map(|l| l.split(' ').next().unwrap_or("").to_string()).collect();
    for want in ["pre-dump", "network-lock", "post-dump", "pre-restore", "setup-namespaces", "post-restore", "network-unlock", "post-resume"] {
        assert!(stages.iter().any(|s| s == want), "no {want} stage: {stages:?}");
    }
    let pos = |s: &str| stages.iter().position(|x| x == s).expect(s);
    assert!(pos("pre-dump") < pos("post-dump") && pos("post-dump") < pos("pre-restore"), "{stages:?}");
    // A script that fails at pre-dump fails the dump; the workload runs on.
    let e = fails(&["dump", "--action-script", failing.to_str().expect("utf8"), &n]);
    assert!(e.contains("action script") && e.contains("pre-dump"), "{e}");
    assert_eq!(state_of(&n), "running");
    let k = last_count(&n).expect("count");
    wait_for("the counter to go on", 20, || last_count(&n).is_some_and(|c| c > k + 2));
    let e = fails(&["dump", "--action-script", "/no/such/script", &n]);
    assert!(e.contains("not an executable file"), "{e}");
}
