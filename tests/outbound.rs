//! Outbound network for veth workloads: NAT through nf_tables, kept across
//! dump and restore, off with --no-outbound, removed with the workload and
//! by the sweep. The "world" is a peer network namespace the test makes,
//! joined to the host by a veth, that knows no route back to the
//! workloads' pool: only masquerading lets an answer come back.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};

/// A peer namespace with a TCP server that answers "pong from <client address>".
struct Peer {
    _net: PeerNs,
    server: Child,
    addr: String,
}

impl Peer {
    fn start(tag: &str) -> Peer {
        let id = std::process::id();
        let ns = format!("cnst{id}{tag}");
        let host_if = format!("cp{}{tag}", id % 100_000);
        // A /30 of 10.201.0.0/16 of this test's own (process id and tag).
        let third = (id % 250) as u8;
        let fourth = if tag == "a" { 0 } else { 4 };
        let (host_ip, peer_ip) = (format!("10.201.{third}.{}", fourth + 1), format!("10.201.{third}.{}", fourth + 2));
        let net = PeerNs::create(&ns, &host_if, &host_ip, &peer_ip);
        let script = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{peer_ip}', 7070)); s.listen()\nprint('ready', flush=True)\nwhile True:\n    c,a=s.accept(); c.sendall(('pong from '+a[0]+'\\n').encode()); c.close()\n"
        );
        let mut server = Command::new("ip").args(["netns", "exec", &ns, "/usr/bin/python3", "-c", &script]).stdout(Stdio::piped()).spawn().expect("server");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut line).expect("ready");
        assert_eq!(line.trim(), "ready");
        Peer { _net: net, server, addr: peer_ip }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The server goes first; then PeerNs removes the link and namespace.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Connects from inside workload `n` to the peer; returns its answer or the error.
fn call_out(n: &str, peer: &Peer) -> (bool, String) {
    let script = format!("import socket\ns = socket.create_connection(('{}', 7070), timeout=2)\nprint(s.recv(100).decode().strip())", peer.addr);
    let out = cns(&["exec", n, "--", "/usr/bin/python3", "-c", &script]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn has_table(n: &str) -> bool {
    cns_netns::nat::installed().expect("tables").iter().any(|t| t == n)
}

fn host_end_ip(n: &str) -> String {
    ps_entry(n).expect("ps")["ip"].as_str().expect("ip").to_string()
}

#[test]
fn outbound_tcp_works_before_dump_and_after_restore_and_a_copy_gets_its_own_rules() {
    let peer = Peer::start("a");
    let n = name("out");
    let copy = name("out-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    assert!(has_table(&n), "no nf_tables rules for {n}");
    let (reached, answer) = call_out(&n, &peer);
    assert!(reached, "outbound TCP failed before the dump: {answer}");
    // Masqueraded: the peer saw the host's address on its link, not the workload's.
    assert!(answer.starts_with("pong from 10.201."), "{answer}");
    assert!(!answer.contains(&host_end_ip(&n)), "{answer}");
    ok(&["dump", "--leave-running", &n]);
    ok(&["restore", "-d", &n, "--as", &copy]);
    assert!(has_table(&copy), "the copy has no rules of its own");
    let (reached, answer) = call_out(&copy, &peer);
    assert!(reached, "outbound TCP from the copy failed: {answer}");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    let (reached, answer) = call_out(&n, &peer);
    assert!(reached, "outbound TCP failed after the restore: {answer}");
    ok(&["rm", "-f", &copy]);
    assert!(!has_table(&copy), "rm left the copy's rules");
    assert!(has_table(&n), "removing the copy took the original's rules");
}

#[test]
fn no_outbound_keeps_the_workload_in_even_with_forwarding_on_and_after_restore() {
    let peer = Peer::start("b");
    let (open, closed) = (name("open"), name("closed"));
    let _c = Cleanup(vec![open.clone(), closed.clone()]);
    // A workload with outbound access turns forwarding on.
    ok(&["run", "-d", "--name", &open, "--", "sleep", "1000"]);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read").trim(), "1");
    ok(&["run", "-d", "--name", &closed, "--no-outbound", "--", "sleep", "1000"]);
    let (reached, answer) = call_out(&closed, &peer);
    assert!(!reached && answer.contains("timed out"), "--no-outbound reached the peer: {answer}");
    let (reached, answer) = call_out(&open, &peer);
    assert!(reached, "{answer}");
    ok(&["dump", &closed]);
    ok(&["restore", "-d", &closed]);
    let (reached, answer) = call_out(&closed, &peer);
    assert!(!reached && answer.contains("timed out"), "--no-outbound reached the peer after restore: {answer}");
    // The host itself stays reachable (published ports, the host address).
    let e = fails(&["run", "--name", &name("none"), "--net", "none", "--no-outbound", "--", "true"]);
    assert!(e.contains("--no-outbound needs a veth"), "{e}");
}

#[test]
fn the_sweep_removes_rules_of_workloads_that_are_gone() {
    let ghost = name("ghost");
    // A run of that name failed (cns knows the name; its rules went with it)...
    fails(&["run", "--name", &ghost, "--", "/nonexistent-command"]);
    assert!(!has_table(&ghost));
    // ...and a later one was killed after installing its rules, before its
    // record: what it leaves is its rules and its recovery marker (with its
    // index entry), naming a command that is gone.
    cns_netns::nat::install(&ghost, std::net::Ipv4Addr::new(10, 254, 254, 2), cns_netns::nat::Policy::Isolated).expect("install");
    assert!(has_table(&ghost));
    let dir = format!("/run/cns/{ghost}");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(format!("{dir}/pending"), serde_json::json!({"owner": 999_999_999, "owner_start": 1, "new_record": true}).to_string()).expect("marker");
    std::fs::create_dir_all("/run/cns/.pending").expect("index");
    std::fs::write(format!("/run/cns/.pending/{ghost}"), "").expect("index entry");
    // Rules of a name this store never knew (another cns state dir's) are
    // there at the same sweep, and stay.
    let foreign = format!("{ghost}-elsewhere");
    cns_netns::nat::install(&foreign, std::net::Ipv4Addr::new(10, 254, 254, 6), cns_netns::nat::Policy::Isolated).expect("install");
    ok(&["ps"]);
    let (ghost_left, foreign_left) = (has_table(&ghost), has_table(&foreign));
    cns_netns::nat::remove(&foreign).expect("remove");
    assert!(!ghost_left, "the sweep left the rules of a workload with no record");
    assert!(!std::path::Path::new(&dir).exists(), "the sweep left the dead command's state dir");
    assert!(foreign_left, "the sweep removed rules that are not this store's");
}

#[test]
fn behind_a_loopback_resolver_a_workload_gets_its_upstream_servers_and_keeps_them_after_restore() {
    // A host whose /etc/resolv.conf names only systemd-resolved's stub,
    // made in a mount namespace of this test's own (the host's files are
    // not touched): cns runs there.
    let n = name("resolv");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let stub = dir.path().join("stub-resolv.conf");
    std::fs::write(&stub, "nameserver 127.0.0.53\noptions edns0\n").expect("stub");
    let script = format!(
        "set -e; mount -t tmpfs cns-test /run/systemd; mkdir /run/systemd/resolve; printf 'nameserver 10.77.0.53\\n' > /run/systemd/resolve/resolv.conf; mount --bind {} /etc/resolv.conf; {} run -d --name {n} -- sleep 1000; {} dump {n}; {} restore -d {n}",
        stub.display(),
        cns_bin().display(),
        cns_bin().display(),
        cns_bin().display()
    );
    let out = std::process::Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().expect("unshare");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = ok(&["exec", &n, "--", "cat", "/etc/resolv.conf"]);
    assert!(inside.contains("nameserver 10.77.0.53") && !inside.contains("127.0.0.53"), "{inside}");
    // Read-only inside, as every resolv.conf cns writes.
    let w = cns(&["exec", &n, "--", "sh", "-c", "echo x >> /etc/resolv.conf"]);
    assert!(!w.status.success(), "the workload could change the shared resolv.conf");
}
