//! Networking: veth from birth, TCP across dump/restore, copies reachable.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const ECHO: &str = r#"
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000))
s.listen(16)
print('listening', flush=True)
def h(c):
    f = c.makefile('rwb', 0)
    for line in f:
        f.write(line)
def srv():
    while True:
        c, _ = s.accept()
        threading.Thread(target=h, args=(c,), daemon=True).start()
"#;

const SERVE_FOREVER: &str = "srv()\n";

const INNER_CLIENT: &str = r#"
import time
threading.Thread(target=srv, daemon=True).start()
c = socket.create_connection(('127.0.0.1', 7000))
f = c.makefile('rwb', 0)
i = 0
while True:
    f.write(b'%d\n' % i)
    print('echoed', f.readline().decode().strip(), flush=True)
    i += 1
    time.sleep(0.05)
"#;

fn ip_of(n: &str) -> String {
    ps_entry(n).and_then(|e| e["ip"].as_str().map(String::from)).expect("ip")
}

fn echo_once(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, msg: &str) -> String {
    stream.write_all(format!("{msg}\n").as_bytes()).expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    line.trim().to_string()
}

fn connect(ip: &str) -> (TcpStream, BufReader<TcpStream>) {
    connect_to(&format!("{ip}:7000"))
}

#[test]
fn host_tcp_connection_survives_in_place_restore() {
    let n = name("echo");
    let _c = Cleanup(vec![n.clone()]);
    let script = format!("{ECHO}{SERVE_FOREVER}");
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", &script]);
    wait_for("the server", 20, || log_of(&n).contains("listening"));
    let ip = ip_of(&n);
    let (mut s, mut r) = connect(&ip);
    assert_eq!(echo_once(&mut s, &mut r, "before"), "before");
    ok(&["dump", "--tcp-established", &n]);
    // A checkpoint with an established connection is restored under CRIU's
    // network lock, whatever the restore's own flags say.
    let line = ok(&["restore", "--print-criu-cmdline", &n]);
    assert!(line.contains("--network-lock nftables ") && line.contains("--tcp-established"), "{line}");
    ok(&["restore", "-d", &n, "--tcp-established"]);
    assert_eq!(ip_of(&n), ip, "in-place restore changed the address");
    assert_eq!(echo_once(&mut s, &mut r, "after"), "after", "the host's connection did not survive");
}

#[test]

fn inner_client_connection_survives_and_copies_answer_on_their_own_address() {
    let n = name("inner");
    let c1 = name("inner-c1");
    let c2 = name("inner-c2");
    let _c = Cleanup(vec![n.clone(), c1.clone(), c2.clone()]);
    // Server and a client inside the same namespace, the client echoing a counter.
    let script = format!("{ECHO}{INNER_CLIENT}");
    ok(&["run", "-d", "--name", &n, "--", "python3", "-c", &script]);
    wait_for("the inner client", 20, || log_of(&n).contains("echoed 3"));
    ok(&["dump", &n]);
    let k = log_of(&n).lines().filter(|l| l.starts_with("echoed")).count();
    ok(&["restore", "-d", &n]);
    wait_for("the inner client to keep echoing", 20, || log_of(&n).lines().filter(|l| l.starts_with("echoed")).count() > k + 5);
    assert!(!log_of(&n).contains("Error"), "{}", log_of(&n));
    // Two copies, each on its own address, both answering the host.
    ok(&["dump", "--leave-running", &n]);
    ok(&["restore", "-d", &n, "--as", &c1]);
    ok(&["restore", "-d", &n, "--as", &c2]);
    let (ip0, ip1, ip2) = (ip_of(&n), ip_of(&c1), ip_of(&c2));
    assert!(ip0 != ip1 && ip1 != ip2 && ip0 != ip2, "{ip0} {ip1} {ip2}");
    for ip in [&ip0, &ip1, &ip2] {
        let (mut s, mut r) = connect(ip);
        assert_eq!(echo_once(&mut s, &mut r, "hi"), "hi", "{ip} does not answer");
    }
}

#[test]
fn rm_removes_veth_and_lease() {
    let n = name("netrm");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    let host_if = ps_entry(&n).and_then(|e| e["host_if"].as_str().map(String::from)).expect("host_if");
    let ip = ip_of(&n);
    assert!(std::path::Path::new(&format!("/sys/class/net/{host_if}")).exists());
    ok(&["rm", "-f", &n]);
    wait_for("the veth to go", 10, || !std::path::Path::new(&format!("/sys/class/net/{host_if}")).exists());
    assert!(!lease_held(&n), "lease of {ip} left");
}

#[test]
fn twenty_concurrent_runs_get_distinct_addresses() {
    let names: Vec<String> = (0..20).map(|i| name(&format!("par{i}"))).collect();
    let _c = Cleanup(names.clone());
    run_sleepers_in_parallel(&names);
    let mut ips: Vec<String> = names.iter().map(|n| ip_of(n)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn connect_to(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                let r = BufReader::new(s.try_clone().expect("clone"));
                return (s, r);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot connect to {addr}: {last:?}");
}

#[test]
fn published_port_answers_before_and_after_dump_and_restore() {
    let n = name("pub");
    let other = name("pub2");
    let _c = Cleanup(vec![n.clone(), other.clone()]);
    let port = free_port();
    let script = format!("{ECHO}{SERVE_FOREVER}");
    ok(&["run", "-d", "--name", &n, "-p", &format!("{port}:7000"), "--", "python3", "-c", &script]);
    wait_for("the server", 20, || log_of(&n).contains("listening"));
    let addr = format!("127.0.0.1:{port}");
    let (mut s, mut r) = connect_to(&addr);
    assert_eq!(echo_once(&mut s, &mut r, "one"), "one");
    drop((s, r));
    // The same host port cannot be published twice: a clear error, nothing started.
    let err = fails(&["run", "-d", "--name", &other, "-p", &format!("{port}:7000"), "--", "sleep", "100"]);
    assert!(err.contains(&format!("cannot publish host port {port}")), "{err}");
    assert!(ps_entry(&other).is_none(), "a failed run left a record");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    let (mut s, mut r) = connect_to(&addr);
    assert_eq!(echo_once(&mut s, &mut r, "two"), "two", "the published port does not answer after restore");
}

#[test]
fn twenty_runs_release_all_their_leases_at_rm() {
    let names: Vec<String> = (0..20).map(|i| name(&format!("lease{i}"))).collect();
    let _c = Cleanup(names.clone());
    run_sleepers_in_parallel(&names);
    assert!(names.iter().all(|n| lease_held(n)), "a running workload has no lease");
    let veths: Vec<String> = names.iter().map(|n| ps_entry(n).and_then(|e| e["host_if"].as_str().map(String::from)).expect("host_if")).collect();
    let hs: Vec<_> = names.iter().cloned().map(|n| std::thread::spawn(move || ok(&["rm", "-f", &n]))).collect();
    for h in hs {
        h.join().expect("join");
    }
    let left: Vec<&String> = names.iter().filter(|n| lease_held(n)).collect();
    assert!(left.is_empty(), "leases left after rm: {left:?}");
    let links = links_named("cns-");
    assert!(veths.iter().all(|v| !links.contains(v)), "veths left after rm");
}
