//! Helpers for the integration tests: run the real `cns` binary (as root,
//! with the real CRIU), unique names per test, waiting on conditions, and
//! cleanup of everything a test made.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn cns_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cns"))
}

/// Runs cns with `args`.
pub fn cns(args: &[&str]) -> Output {
    Command::new(cns_bin()).args(args).output().expect("run cns")
}

/// Runs cns and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = cns(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Show the error lines of the CRIU log cns points at, if any.
    let criu_log = stderr
        .split("CRIU log: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().filter(|l| l.contains("Error")).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "cns {:?} failed ({}):\nstdout: {}\nstderr: {}\n{criu_log}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs cns and asserts failure with a one-line `cns: ...` error; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = cns(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "cns {args:?} unexpectedly succeeded: {err}");
    let first = err.lines().next().unwrap_or("");
    assert!(first.starts_with("cns: ") || first.starts_with("error:"), "cns {args:?}: error is not one clear line: {err:?}");
    assert!(!err.contains("panicked"), "cns {args:?} panicked: {err}");
    err
}

/// A name unique to this test process.
pub fn name(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Waits for `cond` up to `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Removes the named workloads (and their images) when dropped.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = cns(&["rm", "-f", n]);
            let _ = std::fs::remove_dir_all(format!("/var/lib/cns/images/{n}"));
            let _ = std::fs::remove_file(format!("/var/lib/cns/images/{n}.failed-dump.log"));
        }
    }
}

/// `cns ps --json` entry of `name`.
pub fn ps_entry(name: &str) -> Option<serde_json::Value> {
    let out = ok(&["ps", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ps json");
    v.as_array()?.iter().find(|e| e["name"] == name).cloned()
}

pub fn pid_of(name: &str) -> i32 {
    ps_entry(name).and_then(|e| e["pid"].as_i64()).unwrap_or_else(|| panic!("{name} has no pid")) as i32
}

pub fn state_of(name: &str) -> String {
    ps_entry(name).map(|e| e["state"].as_str().unwrap_or("").to_string()).unwrap_or_default()
}

pub fn log_of(name: &str) -> String {
    std::fs::read_to_string(format!("/var/lib/cns/logs/{name}.log")).unwrap_or_default()
}

/// The last integer printed in a workload's log.
pub fn last_count(name: &str) -> Option<u64> {
    log_of(name).lines().rev().find_map(|l| l.trim().parse().ok())
}

pub const COUNTER: &str = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done";

/// Starts a detached counter workload.
pub fn start_counter(name: &str) {
    ok(&["run", "-d", "--name", name, "--", "sh", "-c", COUNTER]);
    wait_for("the counter to count", 20, || last_count(name).is_some_and(|c| c >= 3));
}

pub fn ns_inode(pid: i32, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}")).expect("ns").ino()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let st = s.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("");
        st != "Z" && st != "X"
    })
}

/// Host links whose name starts with `prefix`.
pub fn links_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect())
        .unwrap_or_default()
}

pub fn criu() -> String {
    for p in ["/usr/local/sbin/criu", "/usr/sbin/criu"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "criu".into()
}

/// Runs a plain `criu dump --leave-running` of `pid` (the flags from
/// shared/criu.md) into a fresh temp dir; returns success and the log.
pub fn raw_criu_dump(pid: i32) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let st = Command::new(criu())
        .args(["dump", "-t", &pid.to_string(), "-D", dir.path().to_str().expect("utf8"), "-o", "dump.log", "-v4", "--network-lock", "nftables", "--leave-running"])
        .status()
        .expect("criu");
    (st.success(), std::fs::read_to_string(dir.path().join("dump.log")).unwrap_or_default())
}

/// Whether an address lease is held by workload `n` (lease files name their owner).
pub fn lease_held(n: &str) -> bool {
    std::fs::read_dir("/run/cns/.leases")
        .map(|rd| rd.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).any(|l| l.contains(&format!("\"{n}\""))))
        .unwrap_or(false)
}

/// Starts `sleep 1000` workloads under `names`, all at once.
pub fn run_sleepers_in_parallel(names: &[String]) {
    let hs: Vec<_> = names.iter().cloned().map(|n| std::thread::spawn(move || ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]))).collect();
    for h in hs {
        h.join().expect("a parallel run failed");
    }
}

/// The entries of an uncompressed tar archive: (path, bytes, offset of the data).
pub fn archive_entries(archive: &std::path::Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut ar = tar::Archive::new(std::fs::File::open(archive).expect("archive"));
    ar.entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let off = e.raw_file_position();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            (path, data, off)
        })
        .collect()
}

/// Writes an uncompressed tar archive of `entries`, in order (as cns lays them out).
pub fn write_archive(dst: &std::path::Path, entries: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(dst).expect("create"));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("append");
    }
    b.into_inner().expect("finish");
}

/// What a test tried and saw, written to `target/DIR/NAME.json` when the
/// test ends — whether it passed or panicked (`passed`), so the documents
/// generated from these files show a failure as a failure.
pub struct RunRecord {
    path: PathBuf,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl RunRecord {
    pub fn new(dir: &str, name: &str) -> RunRecord {
        RunRecord { path: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(dir).join(format!("{name}.json")), fields: serde_json::Map::new() }
    }

    pub fn set(&mut self, key: &str, v: impl Into<serde_json::Value>) {
        self.fields.insert(key.into(), v.into());
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut v = self.fields.clone();
        v.insert("passed".into(), (!std::thread::panicking()).into());
        let _ = std::fs::write(&self.path, serde_json::to_vec_pretty(&v).unwrap_or_default());
    }
}

/// A network namespace of a test's own, joined to this one by a veth:
/// `host_ip` on the host end, `peer_ip` on `eth0` inside, both /30, lo up.
/// Removed (link and namespace) when dropped.
pub struct PeerNs {
    pub ns: String,
    pub host_if: String,
}

impl PeerNs {
    pub fn create(ns: &str, host_if: &str, host_ip: &str, peer_ip: &str) -> PeerNs {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", ns]);
        let made = PeerNs { ns: ns.to_string(), host_if: host_if.to_string() };
        ip(&["link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{peer_ip}/30"), "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        made
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// fs.pipe-max-size (CRIU's lazy pages need 4 MiB), raised by the tests
/// of lazy restores and put back; they hold one lock while they do, so
/// they never undo each other's setting.
pub const PIPE_MAX: &str = "/proc/sys/fs/pipe-max-size";

/// Holds the host's fs.pipe-max-size at `value` until dropped, then puts
/// the old value back. Serialised across test processes with flock(2).
pub struct PipeMax {
    old: String,
    _lock: std::fs::File,
}

impl PipeMax {
    pub fn set(value: u64) -> PipeMax {
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/cns-test-pipe-max.lock").expect("lock");
        // SAFETY: flock(2) on an fd we own; released when it is closed.
        assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
        let old = std::fs::read_to_string(PIPE_MAX).expect("read").trim().to_string();
        std::fs::write(PIPE_MAX, value.to_string()).expect("set fs.pipe-max-size");
        PipeMax { old, _lock: lock }
    }
}

impl Drop for PipeMax {
    fn drop(&mut self) {
        let _ = std::fs::write(PIPE_MAX, &self.old);
    }
}

