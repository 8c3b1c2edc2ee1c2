//! The runtime library called from code (no `cns` subprocess for the
//! operation under test), and the defects the library split fixed.

mod common;
use common::*;

use cns_runtime::ops::{self, DumpOptions, RestoreOptions};
use cns_runtime::{ErrorKind, NoEvents, Runtime};

#[test]
fn library_dump_and_restore_continue_a_counter() {
    let n = name("lib");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    let rt = Runtime::from_env(None).expect("runtime");
    let out = ops::dump(&rt, &DumpOptions { name: n.clone(), ..Default::default() }, &NoEvents).expect("library dump");
    assert_eq!(out.name, n);
    assert!(out.images.join("cns.json").exists(), "no checkpoint at {}", out.images.display());
    assert_eq!(state_of(&n), "dumped");
    let k = last_count(&n).expect("k");
    // Foreground: the restored root becomes a child of this process.
    let r = ops::restore(&rt, &RestoreOptions { name: n.clone(), ..Default::default() }, &NoEvents).expect("library restore");
    assert!(alive(r.pid));
    assert_eq!(pid_of(&n), r.pid);
    wait_for("the counter to pass its dumped value", 20, || last_count(&n).is_some_and(|c| c > k + 2));
    let log = log_of(&n);
    let values: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let pos = values.iter().position(|&v| v == k).expect("k in the log");
    assert_eq!(values.get(pos + 1), Some(&(k + 1)), "the restored counter did not continue from {k}");
    ok(&["rm", "-f", &n]);
    // SAFETY: reaping our own child (the restored root) by PID.
    unsafe { libc::waitpid(r.pid, std::ptr::null_mut(), 0) };
}

#[test]
fn library_errors_are_typed() {
    let rt = Runtime::from_env(None).expect("runtime");
    let e = ops::dump(&rt, &DumpOptions { name: name("nosuch"), ..Default::default() }, &NoEvents).expect_err("no such workload");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.hint().is_some_and(|h| h.contains("cns ps")), "{e:?}");
    let e = ops::dump(&rt, &DumpOptions { name: "../x".into(), ..Default::default() }, &NoEvents).expect_err("bad name");
    assert_eq!(e.kind(), ErrorKind::Invalid);
}

#[test]
fn print_criu_cmdline_of_a_copy_takes_no_lease_and_creates_nothing() {
    let n = name("dry");
    let copy = name("drycp");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    start_counter(&n);
    ok(&["dump", "--leave-running", &n]);
    let line = ok(&["restore", &n, "--as", &copy, "--print-criu-cmdline"]);
    assert!(line.starts_with('/') && line.contains(" restore -D "), "{line}");
    assert!(line.contains(&format!("veth[eth0]:{}", cns_runtime::net::host_veth_name(&copy))), "{line}");
    assert!(!lease_held(&copy), "the dry run leased an address for {copy}");
    assert!(ps_entry(&copy).is_none(), "the dry run created a record for {copy}");
    assert!(!std::path::Path::new(&format!("/run/cns/{copy}")).exists());
    // The printed line is the one the library runs: same flags as the plan.
    let rt = Runtime::from_env(None).expect("runtime");
    let plan = cns_runtime::checkpoint::restore::plan(&rt, &RestoreOptions { name: n.clone(), as_name: Some(copy.clone()), ..Default::default() }).expect("plan");
    assert_eq!(line.trim(), plan.command_line());
}

#[test]
fn rm_removes_images_under_a_configured_images_dir() {
    let n = name("cfgimg");
    let root = tempfile::tempdir().expect("tmp");
    let cfg = root.path().join("config.toml");
    let images_root = root.path().join("images");
    std::fs::write(&cfg, format!("images_dir = {:?}\n", images_root.to_str().expect("utf8"))).expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(cns_bin()).args(args).env("CNS_CONFIG", &cfg).output().expect("cns");
        assert!(out.status.success(), "cns {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["run", "-d", "--name", &n, "--", "sleep", "1000"]);
    run(&["dump", &n]);
    let img = images_root.join(&n);
    assert!(img.join("cns.json").exists(), "the dump did not go to the configured images_dir");
    run(&["rm", &n]);
    assert!(!img.exists(), "rm left the checkpoint in the configured images_dir");
    assert!(ps_entry(&n).is_none());
}
