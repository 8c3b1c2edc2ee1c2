//! Pre-flight: each blocker provoked for real, caught before anything is
//! stopped, and checked against the real CRIU so pre-flight cannot drift
//! from what CRIU actually refuses.

mod common;
use common::*;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A per-test scratch directory on the root filesystem (the workload sees
/// the host's files at the same paths).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!("/var/tmp/cns-test-{}", name(tag)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cns check ARGS` that reports a blocker: exit 1, the report on stdout.
fn check_blocks(args: &[&str]) -> String {
    let mut a = vec!["check"];
    a.extend_from_slice(args);
    let out = cns(&a);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "cns {a:?} did not report a blocker: {report}");
    assert!(report.lines().any(|l| l.starts_with("blocker")), "{report}");
    report
}

fn first_child(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok().and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok())).expect("a child")
}

fn restore_log(n: &str) -> String {
    std::fs::read_to_string(format!("/var/lib/cns/images/{n}/restore-{n}.log")).unwrap_or_default()
}

/// The checkpoint is untouched by a refused restore: still `dumped`, no
/// process, no veth.
fn nothing_restored(n: &str) {
    assert_eq!(state_of(n), "dumped");
    let veth = cns_runtime::net::host_veth_name(n);
    assert!(!links_named("cns-").contains(&veth), "a refused restore left {veth}");
    // CRIU starts while pre-flight runs; a refusal ends and reaps it before
    // cns returns. Its stderr is this checkpoint's criu-stderr file.
    let stderr = std::path::PathBuf::from(format!("/var/lib/cns/images/{n}/criu-stderr-{n}.log"));
    let holders: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| std::fs::read_dir(p.path().join("fd")).into_iter().flatten().flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == stderr)))
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(holders.is_empty(), "a refused restore left CRIU running: pids {holders:?}");
}

#[test]
fn replaced_library_blocks_the_restore_before_criu_runs() {
    let n = name("lib");
    let _c = Cleanup(vec![n.clone()]);
    let dir = Scratch::new("lib");
    let lib = dir.0.join("libcnstest.so");
    std::fs::copy("/lib/x86_64-linux-gnu/libdl.so.2", &lib).expect("copy lib");
    let preload = format!("LD_PRELOAD={}", lib.display());
    ok(&["run", "-d", "--name", &n, "-e", &preload, "--", "sh", "-c", COUNTER]);
    wait_for("the counter", 10, || last_count(&n).is_some());
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", first_child(pid_of(&n)))).expect("maps");
    assert!(maps.contains("libcnstest.so"), "the library is not mapped");
    ok(&["dump", &n]);
    // Same path, different size.
    let mut bytes = std::fs::read(&lib).expect("read lib");
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&lib, &bytes).expect("replace lib");
    let report = check_blocks(&["--image", &n]);
    assert!(report.contains("file-changed") && report.contains("libcnstest.so"), "{report}");
    let e = fails(&["restore", "-d", &n]);
    assert!(e.contains("libcnstest.so") && e.contains("size"), "{e}");
    assert!(restore_log(&n).is_empty(), "CRIU ran although pre-flight blocked");
    nothing_restored(&n);
    // The real CRIU refuses it too.
    fails(&["restore", "-d", "--no-preflight", &n]);
    assert!(restore_log(&n).contains("has bad size"), "CRIU did not fail on the size: {}", restore_log(&n));
    nothing_restored(&n);
}

#[test]
fn deleted_binary_blocks_the_restore_before_criu_runs() {
    let n = name("bin");
    let _c = Cleanup(vec![n.clone()]);
    let dir = Scratch::new("bin");
    let bin = dir.0.join("cns-test-sleep");
    std::fs::copy("/bin/sleep", &bin).expect("copy sleep");
    ok(&["run", "-d", "--name", &n, "--", bin.to_str().expect("utf8"), "1000"]);
    wait_for("the workload", 10, || state_of(&n) == "running");
    ok(&["dump", &n]);
    std::fs::remove_file(&bin).expect("delete binary");
    let report = check_blocks(&["--image", &n]);
    assert!(report.contains("file-missing") && report.contains("cns-test-sleep"), "{report}");
    let e = fails(&["restore", "-d", &n]);
    assert!(e.contains("cns-test-sleep") && e.contains("missing"), "{e}");
    assert!(restore_log(&n).is_empty(), "CRIU ran although pre-flight blocked");
    nothing_restored(&n);
    fails(&["restore", "-d", "--no-preflight", &n]);
    let log = restore_log(&n);
    assert!(log.contains("cns-test-sleep") && log.contains("Error"), "CRIU did not fail on the missing binary: {log}");
    nothing_restored(&n);
}

/// A memory cgroup (v1, or v2 when it has the memory controller) with a
/// hard limit; removed when dropped.
struct MemCgroup(PathBuf);

impl MemCgroup {
    fn new(tag: &str, limit: u64) -> MemCgroup {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
        let (dir, file) = if v2 {
            (PathBuf::from(format!("/sys/fs/cgroup/{}", name(tag))), "memory.max")
        } else {
            (PathBuf::from(format!("/sys/fs/cgroup/memory/{}", name(tag))), "memory.limit_in_bytes")
        };
        std::fs::create_dir_all(&dir).expect("create memory cgroup");
        std::fs::write(dir.join(file), limit.to_string()).expect("set memory limit");
        MemCgroup(dir)
    }

    /// `cns ARGS` run inside the cgroup.
    fn cns(&self, args: &[&str]) -> std::process::Output {
        let script = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", self.0.display());
        Command::new("sh").arg("-c").arg(script).arg("sh").arg(cns_bin()).args(args).output().expect("cns in cgroup")
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let procs = self.0.join("cgroup.procs");
        for _ in 0..500 {
            if std::fs::read_to_string(&procs).map(|p| p.trim().is_empty()).unwrap_or(true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn image_larger_than_the_memory_cgroup_allows_is_refused_first() {
    let n = name("mem");
    let _c = Cleanup(vec![n.clone()]);
    let script = "import time\nb = bytearray(96 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\ntime.sleep(1000)\n";
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", script]);
    wait_for("the memory to be touched", 20, || log_of(&n).contains("ready"));
    ok(&["dump", &n]);
    let cg = MemCgroup::new("memcg", 48 << 20);
    let out = cg.cns(&["check", "--image", &n]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && report.contains("blocker") && report.contains("memory"), "{report}");
    let out = cg.cns(&["restore", "-d", &n]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("MiB"), "{e}");
    assert!(restore_log(&n).is_empty(), "CRIU ran although pre-flight blocked");
    nothing_restored(&n);
    // The same limit without pre-flight: the restore really dies.
    let out = cg.cns(&["restore", "-d", "--no-preflight", &n]);
    assert!(!out.status.success(), "the restore fit in the cgroup after all");
    // And with no limit, the check passes: no false blocker.
    ok(&["check", "--image", &n]);
}

/// A python workload that runs `prelude`, then prints a counter.
fn counting_python(prelude: &str) -> String {
    format!("import socket, time\n{prelude}\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.05)\n")
}

/// `--no-preflight` dumps, with and without --ext-unix-sk, fail in CRIU with
/// one of `expect` in its log; the workload runs on, counting.
fn criu_refuses_with_and_without_ext_unix_sk(n: &str, expect: &[&str]) {
    for extra in [None, Some("--ext-unix-sk")] {
        let mut args = vec!["dump", "--no-preflight", "--leave-running"];
        args.extend(extra);
        args.push(n);
        fails(&args);
        let log = std::fs::read_to_string(format!("/var/lib/cns/images/{n}.failed-dump.log")).unwrap_or_default();
        assert!(expect.iter().any(|e| log.contains(e)), "CRIU did not fail on the socket ({extra:?}): {log}");
    }
    assert_eq!(state_of(n), "running");
    let k = last_count(n).expect("count");
    wait_for("the workload to keep running", 10, || last_count(n).is_some_and(|c| c > k + 2));
}

#[test]
fn stream_unix_connection_to_the_host_blocks_the_dump_before_freezing() {
    let n = name("unix");
    let _c = Cleanup(vec![n.clone()]);
    let dir = Scratch::new("unix");
    let path = dir.0.join("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let script = counting_python(&format!("s = socket.socket(socket.AF_UNIX)\ns.connect('{}')", path.display()));
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", &script]);
    let (_peer, _) = listener.accept().expect("accept");
    wait_for("the workload", 10, || last_count(&n).is_some());
    let report = check_blocks(&[&n]);
    assert!(report.contains("unix-stream-external"), "{report}");
    let e = fails(&["dump", &n]);
    assert!(e.contains("stream unix connection"), "{e}");
    let k = last_count(&n).expect("count");
    wait_for("the workload to keep running", 10, || last_count(&n).is_some_and(|c| c > k + 2));
    assert_eq!(state_of(&n), "running");
    // The real CRIU refuses it too, with or without --ext-unix-sk.
    criu_refuses_with_and_without_ext_unix_sk(&n, &["External socket is used", "half of stream unix"]);
}

/// A host process on a terminal of its own: `python3 pty.fork()` keeps the
/// master outside the tree. Returns (parent, child) PIDs.
fn pty_tree() -> (std::process::Child, i32) {
    let script = "import pty, os, time\npid, fd = pty.fork()\nif pid == 0:\n    os.execvp('sleep', ['sleep', '1000'])\nprint(pid, flush=True)\ntime.sleep(1000)\n";
    let mut parent = Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).stdin(Stdio::null()).spawn().expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().expect("stdout")).read_line(&mut line).expect("child pid");
    let child: i32 = line.trim().parse().expect("pid");
    wait_for("the pty child to exec sleep", 10, || std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.trim() == "sleep"));
    (parent, child)
}

fn process_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit(") ").next().and_then(|r| r.split(' ').next()).map(String::from)).unwrap_or_default()
}

#[test]
fn tty_without_shell_job_blocks_adoption_before_freezing() {
    let n = name("tty");
    let _c = Cleanup(vec![n.clone()]);
    let (mut parent, child) = pty_tree();
    let e = fails(&["dump", "--pid", &child.to_string(), &n]);
    assert!(e.contains("terminal") && e.contains("--shell-job"), "{e}");
    assert!(alive(child), "a refused dump killed the tree");
    assert_ne!(process_state(child), "T", "a refused dump left the tree stopped");
    assert!(ps_entry(&n).is_none(), "a refused adoption left a record");
    assert!(!Path::new(&format!("/var/lib/cns/images/{n}")).exists(), "a refused adoption left images");
    // The real CRIU refuses it too.
    let (ok_, log) = raw_criu_dump(child);
    assert!(!ok_, "plain criu dumped a tty tree without --shell-job");
    let why = cns_engine::explain_log(&log).map(|e| e.code);
    assert_eq!(why, Some("shell-job"), "CRIU failed for another reason:\n{log}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
    let _ = parent.kill();
    let _ = parent.wait();
}

#[test]
fn unaccepted_connections_are_seen_first_and_dumped_with_skip_in_flight() {
    let n = name("inflight");
    let _c = Cleanup(vec![n.clone()]);
    // A listener that never accepts: the host's connection waits in its queue.
    let script = "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 7100))\ns.listen(4)\nprint('listening', flush=True)\ntime.sleep(1000)\n";
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", script]);
    wait_for("the listener", 20, || log_of(&n).contains("listening"));
    let ip = ps_entry(&n).and_then(|e| e["ip"].as_str().map(String::from)).expect("ip");
    let _waiting = std::net::TcpStream::connect((ip.as_str(), 7100)).expect("connect");
    let out = cns(&["check", "--json", &n]);
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(findings.as_array().is_some_and(|f| f.iter().any(|x| x["code"] == "tcp-in-flight" && x["severity"] == "warning")), "{findings}");
    // The real CRIU refuses it without the flag...
    fails(&["dump", "--no-preflight", "--leave-running", &n]);
    let log = std::fs::read_to_string(format!("/var/lib/cns/images/{n}.failed-dump.log")).unwrap_or_default();
    assert!(log.contains("In-flight connection"), "CRIU did not fail on the queued connection: {log}");
    // ...and cns, having seen it, dumps with --tcp-skip-in-flight.
    ok(&["dump", "--leave-running", &n]);
    assert_eq!(state_of(&n), "running");
    // rm takes the failed dump's CRIU log with the rest.
    ok(&["rm", "-f", &n]);
    assert!(!Path::new(&format!("/var/lib/cns/images/{n}.failed-dump.log")).exists(), "rm left the failed-dump log");
}

#[test]
fn a_socket_connected_to_the_host_netns_blocks_the_dump_before_freezing() {
    let n = name("dgram");
    let _c = Cleanup(vec![n.clone()]);
    let dir = Scratch::new("dgram");
    let path = dir.0.join("host.dgram");
    let host = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    let script = counting_python(&format!("s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.connect('{}')\ns.send(b'hello')", path.display()));
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", &script]);
    let mut buf = [0u8; 16];
    let got = host.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..got], b"hello");
    let report = check_blocks(&[&n]);
    assert!(report.contains("unix-peer-other-netns"), "{report}");
    let e = fails(&["dump", &n]);
    assert!(e.contains("another network namespace"), "{e}");
    // The real CRIU fails on it, with or without --ext-unix-sk.
    criu_refuses_with_and_without_ext_unix_sk(&n, &["without peer"]);
}
