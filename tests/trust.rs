//! cns runs as root: nothing a user owns is destroyed or re-permissioned,
//! no name reaches another workload's state, nothing a workload plants is
//! acted on, nothing runs that cns does not track.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

#[test]
fn dump_never_replaces_a_directory_it_did_not_write_nor_chmods_its_parent() {
    let n = name("own");
    let _c = Cleanup(vec![n.clone()]);
    let shared = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let users = shared.path().join("users-dir");
    std::fs::create_dir(&users).expect("mkdir");
    std::fs::write(users.join("thesis.txt"), "years of work").expect("write");
    start_counter(&n);
    let e = fails(&["dump", "--leave-running", &n, "--images", users.to_str().expect("utf8")]);
    assert!(e.contains("not a cns checkpoint"), "{e}");
    assert_eq!(std::fs::read_to_string(users.join("thesis.txt")).expect("the user's file"), "years of work");
    assert_eq!(std::fs::read_dir(&users).expect("ls").count(), 1, "cns wrote into the user's directory");
    assert_eq!(state_of(&n), "running", "a refused dump stopped the workload");
    // A fresh path inside the shared directory: created 0700, the parent untouched.
    let fresh = shared.path().join("ckpt");
    ok(&["dump", "--leave-running", &n, "--images", fresh.to_str().expect("utf8")]);
    assert!(fresh.join("cns.json").exists());
    assert_eq!(std::fs::metadata(shared.path()).expect("stat").permissions().mode() & 0o7777, 0o1777, "the parent was re-permissioned");
    assert_eq!(std::fs::metadata(&fresh).expect("stat").permissions().mode() & 0o777, 0o700);
    // Its own earlier checkpoint is replaced, as before.
    ok(&["dump", "--leave-running", &n, "--images", fresh.to_str().expect("utf8")]);
    // A symlink is not a checkpoint directory.
    let link = shared.path().join("link");
    std::os::unix::fs::symlink(&users, &link).expect("symlink");
    let e = fails(&["dump", "--leave-running", &n, "--images", link.to_str().expect("utf8")]);
    assert!(e.contains("not a cns checkpoint"), "{e}");
    assert_eq!(std::fs::read_dir(&users).expect("ls").count(), 1);
}

#[test]
fn restore_as_an_existing_name_is_refused_and_both_checkpoints_survive() {
    let x = name("asx");
    let b = name("asb");
    let _c = Cleanup(vec![x.clone(), b.clone()]);
    ok(&["run", "-d", "--name", &x, "--", "sh", "-c", "echo I-am-x; exec sleep 1000"]);
    ok(&["run", "-d", "--name", &b, "--", "sh", "-c", "echo I-am-b; exec sleep 1000"]);
    wait_for("both to print", 20, || log_of(&x).contains("I-am-x") && log_of(&b).contains("I-am-b"));
    ok(&["dump", &x]);
    ok(&["dump", &b]);
    let before = std::fs::read_to_string(format!("/run/cns/{b}/workload.json")).expect("record of b");
    let e = fails(&["restore", "-d", &x, "--as", &b]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(format!("/run/cns/{b}/workload.json")).expect("record of b"), before, "b's record changed");
    assert_eq!(state_of(&b), "dumped");
    // b restores as b: its own process, its own command.
    ok(&["restore", "-d", &b]);
    let cmd = ps_entry(&b).expect("b")["command"].to_string();
    assert!(cmd.contains("I-am-b"), "{cmd}");
    assert!(!lease_held(&x) || state_of(&x) == "dumped");
    // In place from someone else's images is refused too.
    let e = fails(&["restore", "-d", &x, "--images", &format!("/var/lib/cns/images/{b}")]);
    assert!(e.contains("belong to workload"), "{e}");
}

#[test]
fn a_failure_after_start_leaves_no_untracked_process() {
    let n = name("late");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    // The pidfile is a directory: writing it fails after the workload started.
    let pidfile = dir.path().join("pid-is-a-dir");
    std::fs::create_dir(&pidfile).expect("mkdir");
    let tag = format!("cns-late-{}", std::process::id());
    let e = fails(&["run", "-d", "--name", &n, "--pidfile", pidfile.to_str().expect("utf8"), "--", "sh", "-c", &format!("sleep 1000; : {tag}")]);
    assert!(e.contains("pidfile"), "{e}");
    wait_for("the started tree to be gone", 10, || processes_with(&tag).is_empty());
    assert!(ps_entry(&n).is_none(), "a record was left");
    assert!(!lease_held(&n), "the address was left leased");
    assert!(!links_named("cns-").contains(&cns_runtime::net::host_veth_name(&n)), "the veth was left");
}

/// Host PIDs whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle)))
                .filter(|&p| alive(p))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn foreground_run_with_published_ports_forwards_sigterm_instead_of_dying() {
    let n = name("sigfw");
    let _c = Cleanup(vec![n.clone()]);
    let port = 20000 + (std::process::id() % 20000) as u16;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = std::process::Command::new(cns_bin())
        .args(["run", "--name", &n, "-p", &format!("{port}:80"), "--", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cns run");
    wait_for("the workload to be ready", 20, || log_of(&n).contains("ready"));
    // With forwarder threads running, a SIGTERM to cns goes to the workload.
    for _ in 0..5 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(20));
        if log_of(&n).contains("got-term") {
            break;
        }
    }
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(7), "cns did not pass the workload's status on (killed by the signal itself?): {st:?}");
    assert!(log_of(&n).contains("got-term"));
    assert_eq!(ps_entry(&n).expect("record")["exit_code"], 7, "the exit was not recorded");
}

#[test]
fn planted_recovery_markers_reach_nothing_outside_the_workload() {
    let fake = name("plant");
    let dir = format!("/run/cns/{fake}");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // A host process, a host link and a file of the user's.
    let mut victim = std::process::Command::new("sleep").arg("1000").spawn().expect("sleep");
    let vpid = victim.id() as i32;
    let start: u64 = std::fs::read_to_string(format!("/proc/{vpid}/stat")).expect("stat").rsplit(") ").next().expect("fields").split(' ').nth(19).expect("start").parse().expect("num");
    let link = format!("pl{}", std::process::id() % 100000);
    let ok_link = std::process::Command::new("ip").args(["link", "add", &link, "type", "veth", "peer", "name", &format!("{link}p")]).status().expect("ip");
    assert!(ok_link.success());
    let precious = tempfile::NamedTempFile::new().expect("tmp");
    let precious_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(precious_dir.path().join("keep"), "x").expect("write");
    let marker = serde_json::json!({
        "owner": 999_999_999, "owner_start": 1, "root": vpid, "root_start": start, "new_record": true,
        "host_if": link, "log": precious.path(), "lease": null,
        "dump": {"images": "/var/lib/cns/images", "old": precious_dir.path(), "committed": true}
    });
    std::fs::write(format!("{dir}/pending"), marker.to_string()).expect("plant");
    // With its entry in the marker index, as cns writes its own (the sweep
    // reads the index; every dir only in its once-a-minute full pass).
    std::fs::create_dir_all("/run/cns/.pending").expect("index");
    std::fs::write(format!("/run/cns/.pending/{fake}"), "").expect("plant the index entry");
    ok(&["ps"]);
    let survived_proc = alive(vpid);
    let survived_link = Path::new(&format!("/sys/class/net/{link}")).exists();
    let survived_file = precious.path().exists();
    let _ = std::process::Command::new("ip").args(["link", "del", &link]).status();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(survived_proc, "the sweep killed a host process named by a planted marker");
    assert!(survived_link, "the sweep deleted a host link named by a planted marker");
    assert!(survived_file, "the sweep removed a file named by a planted marker");
    assert!(precious_dir.path().join("keep").exists(), "the sweep removed a directory named by a planted marker");
    assert!(!Path::new(&dir).exists(), "the planted directory itself is cleaned up");
    assert!(!Path::new(&format!("/run/cns/.pending/{fake}")).exists(), "its index entry is cleaned up");
}

#[test]
fn a_marker_missing_from_the_index_is_swept_by_the_once_a_minute_full_pass() {
    // A dead command's marker without its index entry (written by an older
    // cns, or its entry lost): the index pass cannot see it, the full pass,
    // due once the last one is a minute old, does.
    let fake = name("unidx");
    let dir = format!("/run/cns/{fake}");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(format!("{dir}/pending"), serde_json::json!({"owner": 999_999_999, "owner_start": 1, "new_record": true}).to_string()).expect("plant");
    let stamp = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open("/run/cns/.swept").expect("stamp");
    stamp.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120)).expect("backdate");
    ok(&["ps"]);
    assert!(!Path::new(&dir).exists(), "the full pass left a dead command's directory");
    let swept = std::fs::metadata("/run/cns/.swept").and_then(|m| m.modified()).expect("stamp");
    assert!(swept.elapsed().map(|d| d.as_secs() < 60).unwrap_or(true), "the full pass did not renew its stamp");
}

#[test]
fn two_long_names_with_one_interface_name_are_refused_not_shared() {
    // Find two names whose hashed interface names collide (24 bits: a few
    // thousand tries).
    let base = format!("coll{}-", std::process::id());
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..200_000)
        .find_map(|i| {
            let n = format!("{base}{i:06}");
            let h = cns_runtime::net::host_veth_name(&n);
            seen.insert(h, n.clone()).map(|other| (other, n))
        })
        .expect("a collision");
    assert_eq!(cns_runtime::net::host_veth_name(&a), cns_runtime::net::host_veth_name(&b));
    let _c = Cleanup(vec![a.clone(), b.clone()]);
    ok(&["run", "-d", "--name", &a, "--", "sleep", "1000"]);
    let veth = cns_runtime::net::host_veth_name(&a);
    let e = fails(&["run", "-d", "--name", &b, "--", "sleep", "1000"]);
    assert!(e.contains("taken by workload"), "{e}");
    assert!(links_named("cns-").contains(&veth), "the first workload lost its veth");
    assert_eq!(state_of(&a), "running");
    assert!(ps_entry(&b).is_none());
}

/// Rewrites an uncompressed archive, passing `images/cns.json` through `edit`
/// (and the manifest's size of it).
fn rewrite_archive(src: &Path, dst: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut entries: Vec<(String, Vec<u8>)> = archive_entries(src).into_iter().map(|(p, d, _)| (p, d)).collect();
    let meta_pos = entries.iter().position(|(p, _)| p == "images/cns.json").expect("cns.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&entries[meta_pos].1).expect("json");
    edit(&mut meta);
    entries[meta_pos].1 = serde_json::to_vec(&meta).expect("json");
    let size = entries[meta_pos].1.len();
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(&entries[meta_pos].1).iter().map(|b| format!("{b:02x}")).collect();
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[0].1).expect("manifest");
    for f in manifest["files"].as_array_mut().expect("files") {
        if f["path"] == "images/cns.json" {
            f["size"] = size.into();
            f["sha256"] = sha.clone().into();
        }
    }
    entries[0].1 = serde_json::to_vec(&manifest).expect("json");
    write_archive(dst, &entries);
}

#[test]
fn an_archive_is_believed_for_nothing_that_reaches_the_host() {
    let n = name("craft");
    let imp = name("crafti");
    let adopt = name("crafta");
    let _c = Cleanup(vec![n.clone(), imp.clone(), adopt.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let port = 30000 + (std::process::id() % 20000) as u16;
    ok(&["run", "-d", "--name", &n, "-p", &format!("{port}:7000"), "--", "sh", "-c", COUNTER]);
    wait_for("the counter", 20, || last_count(&n).is_some());
    ok(&["dump", "--leave-running", &n]);
    let plain = dir.path().join("plain.cnsx");
    ok(&["export", &n, "-o", plain.to_str().expect("utf8"), "--compress", "none"]);
    let planted = dir.path().join("planted-by-archive");
    let crafted = dir.path().join("crafted.cnsx");
    let (evil, p2) = (planted.clone(), port + 1);
    rewrite_archive(&plain, &crafted, move |m| {
        m["workload"]["stdio_mount"] = evil.to_str().expect("utf8").into();
        m["workload"]["net"]["publish"] = serde_json::json!([[p2, 22]]);
        m["workload"]["net"]["addrs"] = serde_json::json!({"host": "10.250.0.1", "inner": "10.250.0.2", "prefix": 30});
        m["workload"]["net"]["host_if"] = "eth0".into();
    });
    ok(&["import", crafted.to_str().expect("utf8"), "--as", &imp]);
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("/run/cns/{imp}/workload.json")).expect("record")).expect("json");
    assert_eq!(rec["stdio_mount"], "/var/lib/cns/stdio", "the archive chose the log's mountpoint");
    assert_eq!(rec["net"]["publish"], serde_json::json!([]), "the archive published ports");
    assert!(rec["net"]["addrs"].is_null(), "the archive chose the address");
    assert_ne!(rec["net"]["host_if"], "eth0");
    ok(&["restore", "-d", &imp]);
    assert!(!planted.exists(), "restoring an imported archive created a file where the archive said");
    assert!(std::net::TcpListener::bind(("0.0.0.0", p2)).is_ok(), "the archive's port was published");
    let ip = ps_entry(&imp).expect("restored")["ip"].as_str().map(String::from).expect("an address");
    assert_ne!(ip, "10.250.0.2");
    // An adopted host tree restores into the host's network namespace: refused.
    let adopted = dir.path().join("adopted.cnsx");
    rewrite_archive(&plain, &adopted, |m| {
        m["workload"]["adopted"] = true.into();
        m["workload"]["net"]["mode"] = "host".into();
    });
    let e = fails(&["import", adopted.to_str().expect("utf8"), "--as", &adopt]);
    assert!(e.contains("adopted host tree"), "{e}");
    assert!(ps_entry(&adopt).is_none());
    assert!(!Path::new(&format!("/var/lib/cns/images/{adopt}")).exists(), "a refused import left its checkpoint");
}

#[test]
fn published_ports_bind_the_host_address_asked_for_and_inspect_shows_them() {
    let n = name("pubip");
    let _c = Cleanup(vec![n.clone()]);
    let port = 40000 + (std::process::id() % 20000) as u16;
    ok(&["run", "-d", "--name", &n, "-p", &format!("127.0.0.1:{port}:7000"), "--", "sleep", "1000"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", &n])).expect("json");
    assert_eq!(v["network"]["publish"], serde_json::json!([format!("127.0.0.1:{port}:7000")]));
    assert_eq!(v["network"]["publish_connection_limit"], 256);
    // Only loopback is taken: the same port on the veth's host address is free.
    let host_ip = v["network"]["host_ip"].as_str().expect("host ip").to_string();
    assert!(std::net::TcpListener::bind((host_ip.as_str(), port)).is_ok(), "the port was bound on every address");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "the port is not bound on 127.0.0.1");
    let e = fails(&["run", "-d", "--name", &name("pubbad"), "-p", "1.2.3:80:80", "--", "true"]);
    assert!(e.contains("invalid port mapping"), "{e}");
}

#[test]
fn exec_enters_with_the_workloads_capabilities_seccomp_cwd_and_only_stdio() {
    let n = name("execcap");
    let _c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("tmp");
    let filter = dir.path().join("deny-mkdir.json");
    std::fs::write(&filter, r#"{"main":{"mismatch_action":"allow","match_action":{"errno":1},"filter":[{"syscall":"mkdir"},{"syscall":"mkdirat"}]}}"#).expect("filter");
    ok(&["run", "-d", "--name", &n, "--cap-drop", "all", "--seccomp", filter.to_str().expect("utf8"), "--cwd", "/tmp", "--", "sleep", "1000"]);
    let probe = format!("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; pwd; ls /proc/self/fd | tr '\\n' ' '; echo; mkdir /tmp/{n}-x 2>&1 || echo mkdir-denied");
    let out = ok(&["exec", &n, "--", "sh", "-c", &probe]);
    assert!(out.contains("CapEff:\t0000000000000000"), "exec kept capabilities the workload dropped:\n{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "exec ran without the workload's seccomp filter:\n{out}");
    assert!(out.contains("mkdir-denied"), "{out}");
    assert!(!std::path::Path::new(&format!("/tmp/{n}-x")).exists());
    assert!(out.lines().any(|l| l == "/tmp"), "exec did not start in the workload's cwd:\n{out}");
    // ls's own directory fd aside, only 0, 1, 2.
    let fds: Vec<&str> = out.lines().find(|l| l.starts_with("0 1 2")).expect("fd list").split_whitespace().collect();
    assert!(fds.len() <= 4, "exec carried extra fds into the workload: {fds:?}");
}

#[test]
fn the_workload_cannot_see_or_plant_files_in_cns_state_before_or_after_restore() {
    let n = name("mask");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--cap-drop", "all", "--", "sh", "-c", COUNTER]);
    wait_for("the counter", 20, || last_count(&n).is_some());
    let probe = "for d in /run/cns /var/lib/cns/images /var/lib/cns/logs /var/lib/cns/bin; do \
                 touch $d/planted-by-workload 2>/dev/null && echo WROTE $d; done; \
                 ls -A /run/cns /var/lib/cns/images /var/lib/cns/logs | grep -v ':$' | grep . && echo SAW-STATE; \
                 echo probed";
    let check = |when: &str| {
        let out = ok(&["exec", &n, "--", "sh", "-c", probe]);
        assert!(out.contains("probed"), "{out}");
        assert!(!out.contains("WROTE"), "{when}: the workload wrote into cns's directories:\n{out}");
        assert!(!out.contains("SAW-STATE"), "{when}: the workload sees cns's state:\n{out}");
        for d in ["/run/cns", "/var/lib/cns/images", "/var/lib/cns/logs", "/var/lib/cns/bin"] {
            assert!(!Path::new(&format!("{d}/planted-by-workload")).exists(), "{when}: planted in {d}");
        }
        // Each mask is a read-only bind of cns's empty directory, not a
        // tmpfs (which CRIU would archive at every dump), and a restore
        // keeps it read-only.
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid_of(&n))).expect("mountinfo");
        for d in ["/run/cns", "/var/lib/cns/images", "/var/lib/cns/logs"] {
            let line = mounts.lines().find(|l| l.split(' ').nth(4) == Some(d)).unwrap_or_else(|| panic!("{when}: {d} is not masked:\n{mounts}"));
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[3], "/var/lib/cns/.mask", "{when}: {line}");
            assert!(f[5].split(',').any(|o| o == "ro"), "{when}: {line}");
            assert!(!line.contains(" - tmpfs "), "{when}: {line}");
        }
    };
    check("after run");
    ok(&["dump", &n]);
    ok(&["restore", "-d", &n]);
    check("after restore");
    let k = last_count(&n).expect("count");
    wait_for("the restored counter to go on", 20, || last_count(&n).is_some_and(|c| c > k + 2));
}

#[test]
fn an_altered_init_binary_is_never_run_and_is_replaced() {
    let n = name("initv");
    let lib = tempfile::tempdir().expect("lib");
    let state = tempfile::tempdir().expect("state");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(cns_bin()).args(args).env("CNS_LIB_DIR", lib.path()).env("CNS_STATE_DIR", state.path()).output().expect("cns");
        assert!(out.status.success(), "cns {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    run(&["run", "-d", "--net", "none", "--name", &n, "--", "sleep", "1000"]);
    run(&["rm", "-f", &n]);
    let bin = std::fs::read_dir(lib.path().join("bin")).expect("bin").flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("cns-init-static-"))).expect("the static init");
    let good = std::fs::read(&bin).expect("init");
    // What a workload able to write there would do: same size, other bytes.
    std::fs::write(&bin, vec![0u8; good.len()]).expect("alter");
    run(&["run", "-d", "--net", "none", "--name", &n, "--", "sleep", "1000"]);
    let same = std::fs::read(&bin).expect("init") == good;
    let ps: serde_json::Value = serde_json::from_slice(&run(&["ps", "--json"]).stdout).expect("ps");
    let pid = ps.as_array().and_then(|a| a.iter().find(|e| e["name"] == n.as_str())).and_then(|e| e["pid"].as_i64()).expect("pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    run(&["rm", "-f", &n]);
    assert!(same, "the altered init was kept");
    assert!(exe.is_some_and(|e| e.to_string_lossy().contains("cns-init-static-")), "the workload's PID 1 is not the static init");
}

#[test]
fn the_lock_of_a_name_survives_rm_so_waiters_and_newcomers_share_it() {
    use std::os::unix::fs::MetadataExt;
    let n = name("lockrm");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    let lock = format!("/run/cns/.locks/{n}");
    let before = std::fs::metadata(&lock).expect("lock file").ino();
    ok(&["rm", "-f", &n]);
    assert_eq!(std::fs::metadata(&lock).expect("the lock file outlives rm").ino(), before);
    ok(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    assert_eq!(std::fs::metadata(&lock).expect("lock file").ino(), before, "a re-created name got a second lock");
}

#[test]
fn the_sweep_removes_half_done_imports_of_dead_commands() {
    let mut child = std::process::Command::new("true").spawn().expect("true");
    let dead = child.id();
    child.wait().expect("wait");
    let staging = std::path::PathBuf::from(format!("/var/lib/cns/images/.import-{dead}"));
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join("pages-1.img"), b"half an import").expect("write");
    ok(&["ps"]);
    let left = staging.exists();
    let _ = std::fs::remove_dir_all(&staging);
    assert!(!left, "a dead import's staging directory was left");
}

#[test]
fn a_host_interface_that_is_not_cns_s_veth_is_never_deleted() {
    let n = name("ifown");
    let _c = Cleanup(vec![n.clone()]);
    let link = cns_runtime::net::host_veth_name(&n);
    let made = std::process::Command::new("ip").args(["link", "add", &link, "type", "bridge"]).status().expect("ip");
    assert!(made.success());
    let e = fails(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    let still_there = Path::new(&format!("/sys/class/net/{link}")).exists();
    let _ = std::process::Command::new("ip").args(["link", "del", &link]).status();
    assert!(e.contains("is not a veth cns made"), "{e}");
    assert!(still_there, "cns deleted a host interface it did not make");
    assert!(ps_entry(&n).is_none());
    assert!(!lease_held(&n));
}
