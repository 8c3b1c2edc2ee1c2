//! `cns migrate` between two "hosts" on this machine: the destination is a
//! network namespace of its own, joined to this one by a veth, with its own
//! sshd (started here, throwaway keys) whose one key runs `cns receive`
//! with the destination's own state and lib directories. Everything is
//! removed at the end.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct DestHost {
    // Dropped after the sshd is killed (fields drop in order, after Drop::drop).
    _net: PeerNs,
    ns: String,
    addr: String,
    dir: tempfile::TempDir,
    sshd: Child,
}

impl DestHost {
    /// `forced` wraps the receiving command (e.g. to cut the link after N bytes).
    fn start(tag: &str, forced: impl Fn(&str) -> String) -> DestHost {
        let id = std::process::id();
        let ns = format!("cnsm{id}{tag}");
        let host_if = format!("cm{}{tag}", id % 100_000);
        let third = (id % 250) as u8;
        let fourth = match tag { "a" => 0, "b" => 4, "c" => 8, "d" => 12, "e" => 20, "f" => 24, "g" => 28, _ => 16 };
        let (host_ip, addr) = (format!("10.204.{third}.{}", fourth + 1), format!("10.204.{third}.{}", fourth + 2));
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        for sub in ["state", "lib"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let keygen = |f: &str| assert!(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(f)).status().expect("ssh-keygen").success());
        keygen("hostkey");
        keygen("clientkey");
        let receive = format!("env CNS_STATE_DIR={0}/state CNS_LIB_DIR={0}/lib {1} receive", d.display(), cns_bin().display());
        let pubkey = std::fs::read_to_string(d.join("clientkey.pub")).expect("pub");
        std::fs::write(d.join("authorized_keys"), format!("command=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {pubkey}", forced(&receive))).expect("keys");
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {addr}\nHostKey {0}/hostkey\nPidFile {0}/sshd.pid\nAuthorizedKeysFile {0}/authorized_keys\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                d.display()
            ),
        )
        .expect("config");
        let net = PeerNs::create(&ns, &host_if, &host_ip, &addr);
        // sshd's privilege-separation directory (Debian's package makes it at boot).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let sshd = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/sbin/sshd", "-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd (scripts/setup installs openssh-server)");
        let host = DestHost { _net: net, ns, addr, dir, sshd };
        let target = format!("{}:22", host.addr);
        wait_for("the destination's sshd", 20, || std::net::TcpStream::connect(&target).is_ok());
        host
    }

    fn ssh(&self) -> String {
        format!("ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR", self.dir.path().join("clientkey").display())
    }

    fn dest(&self) -> String {
        format!("root@{}", self.addr)
    }

    /// cns on the destination (its namespace, its state).
    fn cns(&self, args: &[&str]) -> std::process::Output {
        let d = self.dir.path();
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(cns_bin())
            .args(args)
            .env("CNS_STATE_DIR", d.join("state"))
            .env("CNS_LIB_DIR", d.join("lib"))
            .output()
            .expect("cns there")
    }

    fn ps(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.cns(&["ps", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps json");
        v.as_array()?.iter().find(|e| e["name"] == name).cloned()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.lib().join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    fn lib(&self) -> PathBuf {
        self.dir.path().join("lib")
    }
}

impl Drop for DestHost {
    fn drop(&mut self) {
        let out = self.cns(&["ps", "--json"]);
        if let Ok(serde_json::Value::Array(ws)) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            for w in ws {
                if let Some(n) = w["name"].as_str() {
                    let _ = self.cns(&["rm", "-f", n]);
                }
            }
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

fn migrate(n: &str, host: &DestHost) -> std::process::Output {
    cns(&["migrate", n, &host.dest(), "--ssh", &host.ssh()])
}

fn numbers(log: &str) -> Vec<u64> {
    log.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn a_counter_moves_and_continues_and_nothing_of_it_stays_here() {
    let host = DestHost::start("a", |r| r.to_string());
    let n = name("mig");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let ip = ps_entry(&n).expect("ps")["ip"].as_str().expect("ip").to_string();
    let host_if = ps_entry(&n).expect("ps")["host_if"].as_str().expect("host_if").to_string();
    let out = migrate(&n, &host);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "migrate failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("migrated {n} to {}", host.dest())) && text.contains("frozen"), "{text}");
    // Here: no record, no veth, no lease, no images.
    assert!(ps_entry(&n).is_none(), "the source kept a record");
    assert!(links_named(&host_if).is_empty(), "the source kept its veth");
    assert!(!lease_held(&n));
    assert!(!Path::new(&format!("/var/lib/cns/images/{n}")).exists());
    // There: running, same address, counting on from the source's value.
    let there = host.ps(&n).expect("the destination has no record");
    assert_eq!(there["state"], "running");
    assert_eq!(there["ip"].as_str(), Some(ip.as_str()), "the address was free there and should be kept");
    let source_last = last_count(&n);
    assert!(source_last.is_none(), "the source's log went with its record");
    wait_for("the moved counter", 20, || numbers(&host.log(&n)).len() >= 3);
    let moved = numbers(&host.log(&n));
    assert!(moved[0] > 3, "the counter restarted from scratch: {moved:?}");
    assert!(moved.windows(2).all(|w| w[1] == w[0] + 1), "{moved:?}");
}

#[test]
fn a_tcp_server_moves_and_answers_on_the_destination() {
    let host = DestHost::start("b", |r| r.to_string());
    let n = name("migtcp");
    let _c = Cleanup(vec![n.clone()]);
    let server = "import socketserver\nclass H(socketserver.StreamRequestHandler):\n    def handle(self): self.wfile.write(b'hello from the workload\\n')\nsocketserver.TCPServer(('', 7000), H).serve_forever()\n";
    ok(&["run", "-d", "--name", &n, "--", "/usr/bin/python3", "-c", server]);
    let ip = ps_entry(&n).expect("ps")["ip"].as_str().expect("ip").to_string();
    let ask = format!("import socket; print(socket.create_connection(('{ip}', 7000), timeout=2).recv(100).decode().strip())");
    wait_for("the server", 20, || Command::new("/usr/bin/python3").args(["-c", &ask]).output().is_ok_and(|o| o.status.success()));
    let out = migrate(&n, &host);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let there = Command::new("ip").args(["netns", "exec", &host.ns, "/usr/bin/python3", "-c", &ask]).output().expect("ask there");
    assert_eq!(String::from_utf8_lossy(&there.stdout).trim(), "hello from the workload", "{}", String::from_utf8_lossy(&there.stderr));
}

#[test]
fn a_destination_that_refuses_stops_nothing_here() {
    let host = DestHost::start("c", |r| r.to_string());
    let n = name("migno");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    // The destination already has a workload of that name.
    let taken = host.cns(&["run", "-d", "--name", &n, "--net", "none", "--", "sleep", "1000"]);
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let pid = pid_of(&n);
    let out = migrate(&n, &host);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with(&format!("cns: {} refuses {n}: a workload named {n} already exists on the destination", host.dest())), "{err}");
    assert_eq!(pid_of(&n), pid);
    let k = last_count(&n).expect("count");
    wait_for("the counter to go on here", 20, || last_count(&n).is_some_and(|c| c > k + 2));
}

#[test]
fn a_link_cut_mid_transfer_leaves_the_workload_running_here() {
    // The destination's side of the link ends after 30 000 bytes: past the
    // pre-check, inside the images.
    let host = DestHost::start("d", |r| format!("stdbuf -o0 head -c 30000 | {r}"));
    let n = name("migcut");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let pid = pid_of(&n);
    let out = migrate(&n, &host);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut link reported success");
    // The cut falls inside the pages, which stream to the destination's
    // page server while CRIU dumps.
    assert!(err.starts_with("cns: the migration's dump failed: "), "{err}");
    assert!(err.contains("hint: the workload runs on here"), "{err}");
    // Running (not stopped), counting, its record as before.
    assert_eq!(pid_of(&n), pid);
    assert_eq!(state_of(&n), "running");
    let k = last_count(&n).expect("count");
    wait_for("the counter to go on here", 20, || last_count(&n).is_some_and(|c| c > k + 2));
    let stat = std::fs::read_to_string(format!("/proc/{}/task/{}/children", pid, pid)).expect("children");
    let child = stat.split_whitespace().next().expect("the command");
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).expect("status");
    assert!(!status.lines().any(|l| l.starts_with("State:") && l.contains("stopped")), "{status}");
    // Nothing of it is left there, nor here.
    assert!(host.ps(&n).is_none());
    let left: Vec<_> = std::fs::read_dir(host.lib().join("images")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the destination kept {left:?}");
    assert!(std::fs::read_dir("/var/lib/cns/migrate").map(|d| d.flatten().all(|e| !e.file_name().to_string_lossy().starts_with(&n))).unwrap_or(true));
}

#[test]
fn precopy_is_refused_in_one_sentence_where_the_kernel_cannot_track_dirty_memory() {
    let n = name("migpre");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let soft_dirty = Command::new(criu()).args(["check", "--feature", "mem_dirty_track"]).output().is_ok_and(|o| o.status.success());
    if soft_dirty {
        // A kernel that tracks dirty memory: the rounds run and the counter moves.
        let host = DestHost::start("g", |r| r.to_string());
        let out = cns(&["migrate", &n, &host.dest(), "--ssh", &host.ssh(), "--precopy"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_for("the moved counter", 20, || numbers(&host.log(&n)).len() >= 3);
        assert!(numbers(&host.log(&n))[0] > 2);
    } else {
        let e = fails(&["migrate", &n, "root@10.204.255.254", "--precopy"]);
        assert!(e.starts_with("cns: --precopy needs the kernel's soft-dirty memory tracking, which this kernel lacks (CRIU: mem_track)"), "{e}");
        assert_eq!(state_of(&n), "running");
    }
    let e = fails(&["migrate", &n, "root@10.204.255.254", "--precopy", "--lazy"]);
    assert!(e.starts_with("cns: --precopy and --lazy are two ways to move memory; choose one"), "{e}");
    let e = fails(&["migrate", &n, "--", "-oProxyCommand=touch /tmp/pwned"]);
    assert!(e.contains("invalid destination"), "{e}");
    assert_eq!(state_of(&n), "running");
}

/// A counter holding `mib` MiB whose every page carries its own number: it
/// prints `i` while all of them still do, `BAD i` once one does not.
fn start_checked_counter(n: &str, mib: u64) {
    let script = format!(
        "import time\nb = bytearray({mib} << 20)\nfor p in range(len(b) >> 12): b[p << 12] = p % 251\ni = 0\nwhile True:\n    good = all(b[p << 12] == p % 251 for p in range(len(b) >> 12))\n    print(i if good else 'BAD %d' % i, flush=True); i += 1; time.sleep(0.05)\n"
    );
    ok(&["run", "-d", "--name", n, "--", "/usr/bin/python3", "-c", &script]);
    wait_for("the counter", 60, || last_count(n).is_some_and(|c| c >= 2));
}

#[test]
fn post_copy_resumes_there_at_once_and_every_page_follows() {
    let _p = PipeMax::set(4 << 20);
    let host = DestHost::start("e", |r| r.to_string());
    let n = name("miglazy");
    let _c = Cleanup(vec![n.clone()]);
    start_checked_counter(&n, 64);
    let out = cns(&["migrate", &n, &host.dest(), "--ssh", &host.ssh(), "--lazy", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["mode"], "post-copy");
    // The memory went over after the restore, on demand: more than 64 MiB
    // moved in all, though the images sent before it held far less.
    assert!(r["bytes"].as_u64().expect("bytes") > 64 << 20, "{r}");
    assert!(ps_entry(&n).is_none(), "the source kept a record");
    assert!(std::fs::read_dir("/var/lib/cns/migrate").map(|d| d.flatten().all(|e| !e.file_name().to_string_lossy().starts_with(&n))).unwrap_or(true), "the source kept its dump");
    let there = host.ps(&n).expect("the destination has no record");
    assert_eq!(there["state"], "running");
    wait_for("the moved counter", 20, || numbers(&host.log(&n)).len() >= 5);
    let log = host.log(&n);
    assert!(!log.contains("BAD"), "a page arrived wrong: {log}");
    let moved = numbers(&log);
    assert!(moved[0] > 2 && moved.windows(2).all(|w| w[1] == w[0] + 1), "{moved:?}");
    // Its lazy-pages daemon is done and gone there.
    assert!(!host.lib().join("images").join(&n).join(format!(".lazy-{n}")).exists());
}

/// The destination's end of the link for the post-copy cut: it relays the
/// channel to `cns receive` frame by frame (wire.rs: a kind byte, a
/// big-endian u32 length, the payload) and, once the destination has
/// answered the restore (the copy runs there) and `limit` bytes of memory
/// have gone to it, stops reading, kills the receiver and exits, so both
/// directions of the link close at once. Counting frames instead of
/// watching the copy's memory makes the cut land mid-transfer however fast
/// or loaded the machine is.
const CUT_RELAY: &str = r#"
import os, subprocess, sys, threading
limit = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
restoring = threading.Event()
answered = threading.Event()
def read_exact(fd, n):
    b = b''
    while len(b) < n:
        c = os.read(fd, n - len(b))
        if not c:
            return None
        b += c
    return b
def frame(fd):
    head = read_exact(fd, 5)
    if head is None:
        return None
    body = read_exact(fd, int.from_bytes(head[1:], 'big'))
    return None if body is None else head + body
def write_all(fd, b):
    while b:
        b = b[os.write(fd, b):]
def out():
    while True:
        f = frame(child.stdout.fileno())
        if f is None:
            return
        write_all(1, f)
        if f[:1] == b'A' and restoring.is_set():
            answered.set()
threading.Thread(target=out, daemon=True).start()
pulled = 0
while pulled < limit:
    f = frame(0)
    if f is None:
        break
    if f[:1] == b'S':
        restoring.set()
    child.stdin.write(f)
    child.stdin.flush()
    if f[:1] == b'l':
        pulled += len(f) - 5
answered.wait(120)
child.kill()
os._exit(0)
"#;

#[test]
fn post_copy_cut_while_the_memory_moves_kills_the_copy_there_and_resumes_here() {
    let _p = PipeMax::set(4 << 20);
    let relay = tempfile::NamedTempFile::new().expect("relay");
    std::fs::write(relay.path(), CUT_RELAY).expect("relay");
    // Cut after 64 MiB of the counter's 512 MiB.
    let script = relay.path().display().to_string();
    let host = DestHost::start("f", move |r| format!("/usr/bin/python3 {script} {} {r}", 64 << 20));
    let n = name("miglcut");
    let _c = Cleanup(vec![n.clone()]);
    start_checked_counter(&n, 512);
    let pid = pid_of(&n);
    let out = cns(&["migrate", &n, &host.dest(), "--ssh", &host.ssh(), "--lazy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut link reported success");
    assert!(err.starts_with("cns: the link broke while the destination pulled the memory"), "{err}");
    // Here: the same tree, running again from where it was frozen.
    assert_eq!(pid_of(&n), pid);
    assert_eq!(state_of(&n), "running");
    let k = last_count(&n).expect("count");
    wait_for("the counter to go on here", 20, || last_count(&n).is_some_and(|c| c > k + 2));
    assert!(!log_of(&n).contains("BAD"));
    // There: the copy, which ran (the restore was answered) but without
    // its memory, was killed.
    wait_for("the copy there to be killed", 20, || host.ps(&n).is_none_or(|w| w["state"] != "running"));
    // The daemon's watcher says why in the copy's log once it has reaped
    // the tree (the exit may be recorded a moment before).
    wait_for("the reason in the copy's log", 20, || host.log(&n).contains("lazy-pages daemon"));
}

/// The source's CPU description with FPU state bits (xfeatures) this CPU
/// lacks: a `criu cpuinfo dump` of this host with xfeatures_mask (field 8
/// of the x86 entry) appended as all ones, which protobuf reads as the last
/// value.
fn foreign_cpuinfo() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("dir");
    let ok = Command::new(criu()).args(["cpuinfo", "dump", "-D"]).arg(dir.path()).status().expect("criu cpuinfo dump").success();
    assert!(ok, "criu cpuinfo dump failed");
    let img = std::fs::read(dir.path().join("cpuinfo.img")).expect("cpuinfo.img");
    let size = u32::from_le_bytes(img[8..12].try_into().expect("size")) as usize;
    let entry = &img[12..12 + size];
    assert_eq!(entry[0], 0x0a, "one x86 entry");
    let mut inner = entry[2..2 + entry[1] as usize].to_vec();
    inner.extend_from_slice(&[0x40, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut out = img[..8].to_vec();
    out.extend_from_slice(&((inner.len() + 2) as u32).to_le_bytes());
    out.extend_from_slice(&[0x0a, inner.len() as u8]);
    out.extend_from_slice(&inner);
    out
}

#[test]
fn a_destination_whose_cpu_lacks_what_the_source_has_refuses_in_the_pre_check() {
    use base64::Engine;
    use cns_runtime::migrate::wire;
    let d = tempfile::tempdir().expect("dir");
    let mut rx = Command::new(cns_bin())
        .arg("receive")
        .env("CNS_STATE_DIR", d.path().join("state"))
        .env("CNS_LIB_DIR", d.path().join("lib"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cns receive");
    let hello = wire::Hello {
        protocol: wire::PROTOCOL,
        name: name("migcpu"),
        criu_version: "0.1".into(),
        memory_bytes: 0,
        files: vec![],
        address: None,
        publish: vec![],
        rootfs: None,
        binds: vec![],
        lazy: false,
        cpuinfo: Some(base64::engine::general_purpose::STANDARD.encode(foreign_cpuinfo())),
    };
    let mut stdin = rx.stdin.take().expect("stdin");
    wire::send(&mut stdin, wire::HELLO, &hello).expect("hello");
    let answer: wire::Answer = wire::expect(&mut rx.stdout.take().expect("stdout"), wire::ANSWER).expect("answer");
    drop(stdin);
    let _ = rx.wait();
    assert!(!answer.ok, "a CPU without the source's features was accepted");
    assert!(answer.message.starts_with("this host's CPU lacks what the workload may use on the source's (criu cpuinfo check failed: "), "{}", answer.message);
    assert!(answer.message.contains("xfeatures has unsupported bits"), "{}", answer.message);
    assert_eq!(answer.hint, "migrate between hosts with the same CPU features");
}
