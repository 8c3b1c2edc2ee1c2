//! Real programs from Debian packages, each with real client state, dumped
//! and restored by cns: redis (a client connection held open across the
//! dump and restore), memcached, nginx (master and workers), Python's HTTP
//! server, a shell pipeline. Where this platform cannot dump a program (its
//! workers run as another user and root lacks CAP_SYS_RESOURCE), the test
//! asserts pre-flight's clear refusal and that the real CRIU fails too.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn ip_of(n: &str) -> String {
    ps_entry(n).and_then(|e| e["ip"].as_str().map(String::from)).expect("ip")
}

fn connect(addr: &str) -> TcpStream {
    let mut last = None;
    for _ in 0..250 {
        match TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                return s;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    panic!("cannot connect to {addr}: {last:?}");
}

/// One RESP command on an open redis connection; the reply's first line.
fn redis(s: &mut TcpStream, r: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(cmd.as_bytes()).expect("send");
    let mut line = String::new();
    r.read_line(&mut line).expect("reply");
    if line.starts_with('$') && !line.starts_with("$-1") {
        let mut v = String::new();
        r.read_line(&mut v).expect("bulk");
        return v.trim().to_string();
    }
    line.trim().to_string()
}

/// The body of GET `path` from `addr` (HTTP/1.0).
fn http_get(addr: &str, path: &str) -> String {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.") && text.contains(" 200 "), "GET {path}: {text}");
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

#[test]
fn redis_keeps_its_data_and_a_client_connection_across_dump_and_restore() {
    let n = name("redis");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    ok(&["run", "-d", "--name", &n, "--", "redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", dir.path().to_str().expect("utf8")]);
    let addr = format!("{}:6379", ip_of(&n));
    let mut s = connect(&addr);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(redis(&mut s, &mut r, &["SET", "greeting", "kept across a checkpoint"]), "+OK");
    assert_eq!(redis(&mut s, &mut r, &["INCRBY", "counter", "41"]), ":41");
    // Pre-flight sees the established connection and turns on --tcp-established.
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    // The same connection, still open: the data and the counter continue.
    assert_eq!(redis(&mut s, &mut r, &["GET", "greeting"]), "kept across a checkpoint");
    assert_eq!(redis(&mut s, &mut r, &["INCR", "counter"]), ":42");
    let mut fresh = connect(&addr);
    let mut fr = BufReader::new(fresh.try_clone().expect("clone"));
    assert_eq!(redis(&mut fresh, &mut fr, &["GET", "counter"]), "42");
}

#[test]
fn memcached_keeps_its_items_across_dump_and_restore() {
    let n = name("memc");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "memcached", "-u", "root", "-p", "11211", "-U", "0", "-l", "0.0.0.0", "-m", "16"]);
    let addr = format!("{}:11211", ip_of(&n));
    let mut s = connect(&addr);
    s.write_all(b"set k 0 0 5\r\nvalue\r\n").expect("set");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("reply");
    assert_eq!(line.trim(), "STORED");
    drop((s, r));
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    let mut s = connect(&addr);
    s.write_all(b"get k\r\n").expect("get");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let lines: Vec<String> = (0..3).map(|_| {
        let mut l = String::new();
        r.read_line(&mut l).expect("line");
        l.trim().to_string()
    }).collect();
    assert_eq!(lines, vec!["VALUE k 0 5", "value", "END"]);
}

fn nginx_conf(dir: &std::path::Path, user: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("index.html"), "served from a checkpoint\n").expect("index");
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "user {user}; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 8080; root {d}; }} }}\n"
        ),
    )
    .expect("conf");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    conf
}

#[test]
fn nginx_master_and_workers_serve_after_restore() {
    let n = name("nginx");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let conf = nginx_conf(dir.path(), "root");
    ok(&["run", "-d", "--name", &n, "--", "nginx", "-c", conf.to_str().expect("utf8"), "-g", "daemon off;"]);
    let addr = format!("{}:8080", ip_of(&n));
    assert_eq!(http_get(&addr, "/index.html"), "served from a checkpoint\n");
    let workers = |n: &str| inspect_processes(n).iter().filter(|c| c.as_str() == "nginx").count();
    assert_eq!(workers(&n), 3, "master and two workers");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    assert_eq!(workers(&n), 3, "master and workers after the restore");
    for _ in 0..4 {
        assert_eq!(http_get(&addr, "/index.html"), "served from a checkpoint\n");
    }
}

/// Names of the live processes of a workload (`cns inspect`).
fn inspect_processes(n: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", n])).expect("json");
    v["processes"].as_array().map(|a| a.iter().filter_map(|p| p["comm"].as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn nginx_with_workers_of_another_user_is_refused_clearly_here() {
    let n = name("nginxw");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let conf = nginx_conf(dir.path(), "www-data");
    ok(&["run", "-d", "--name", &n, "--", "nginx", "-c", conf.to_str().expect("utf8"), "-g", "daemon off;"]);
    let addr = format!("{}:8080", ip_of(&n));
    assert_eq!(http_get(&addr, "/index.html"), "served from a checkpoint\n");
    if cns_engine::preflight::caps_of_self() & (1 << 24) != 0 {
        // Root has CAP_SYS_RESOURCE on this host: it dumps and restores.
        ok(&["dump", &n]);
        ok(&["restore", "-d", &n]);
        assert_eq!(http_get(&addr, "/index.html"), "served from a checkpoint\n");
        return;
    }
    let out = cns(&["check", &n]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "cns check said yes: {text}");
    assert!(text.contains("criu-privileges"), "{text}");
    let e = fails(&["dump", &n]);
    assert!(e.contains("CAP_SYS_RESOURCE") && e.contains("hint:"), "{e}");
    let (dumped, log) = raw_criu_dump(pid_of(&n));
    assert!(!dumped && log.contains("Can't get rlimit"), "the real CRIU did not fail the same way");
    // Nothing was frozen or lost: nginx still serves.
    assert_eq!(state_of(&n), "running");
    assert_eq!(http_get(&addr, "/index.html"), "served from a checkpoint\n");
}

#[test]
fn python_http_server_serves_after_restore() {
    let n = name("pyhttp");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("hello.txt"), "hello from http.server\n").expect("file");
    let py = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    // Python's own http.server; server_bind without its reverse DNS lookup
    // of the address (the workload's network has no resolver).
    let script = format!(
        "import functools, http.server, socketserver\n\
         class S(http.server.ThreadingHTTPServer):\n    def server_bind(self):\n        socketserver.TCPServer.server_bind(self); self.server_name, self.server_port = 'cns', 8000\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={:?})\n\
         S(('0.0.0.0', 8000), h).serve_forever()\n",
        dir.path().to_str().expect("utf8")
    );
    ok(&["run", "-d", "--name", &n, "--", py, "-c", &script]);
    let addr = format!("{}:8000", ip_of(&n));
    assert_eq!(http_get(&addr, "/hello.txt"), "hello from http.server\n");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    assert_eq!(http_get(&addr, "/hello.txt"), "hello from http.server\n");
}

#[test]
fn a_shell_pipeline_continues_through_its_pipes() {
    let n = name("pipeline");
    let _c = Cleanup(vec![n.clone()]);
    // A counter piped into a second shell, which doubles it: state in two
    // processes and the pipe between them.
    let script = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done | while read n; do echo $((n * 2)); done";
    ok(&["run", "-d", "--name", &n, "--", "sh", "-c", script]);
    wait_for("the pipeline", 20, || last_count(&n).is_some_and(|c| c >= 6));
    ok(&["dump", &n]);
    let k = last_count(&n).expect("k");
    ok(&["restore", "-d", &n]);
    wait_for("the pipeline to go on", 20, || last_count(&n).is_some_and(|c| c > k + 4));
    let nums: Vec<u64> = log_of(&n).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let pos = nums.iter().position(|&v| v == k).expect("k in the log");
    assert_eq!(nums.get(pos + 1), Some(&(k + 2)), "the pipeline did not continue from {k}");
    assert!(nums.iter().all(|v| v % 2 == 0), "the second stage's output is not all doubled");
}
