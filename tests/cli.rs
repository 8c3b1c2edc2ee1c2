//! The command line's surface: `--help` of every subcommand is
//! snapshot-tested (a change to it is always deliberate: regenerate with
//! `CNS_UPDATE_SNAPSHOTS=1`), `inspect --json` matches the real workload,
//! and the man pages in docs/man are the ones the CLI generates.

mod common;
use common::*;

use std::path::Path;

const SUBCOMMANDS: [&str; 16] = [
    "", "run", "ps", "exec", "logs", "kill", "rm", "dump", "restore", "check", "inspect", "export", "import", "migrate", "key", "completions",
];

#[test]
fn help_of_every_subcommand_matches_its_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("CNS_UPDATE_SNAPSHOTS").is_some();
    let mut changed = Vec::new();
    for sub in SUBCOMMANDS {
        let mut args: Vec<&str> = Vec::new();
        if !sub.is_empty() {
            args.push(sub);
        }
        args.push("--help");
        let out = cns(&args);
        assert!(out.status.success(), "cns {args:?} failed");
        let text = String::from_utf8(out.stdout).expect("utf8");
        let file = dir.join(format!("{}.help", if sub.is_empty() { "cns" } else { sub }));
        if update {
            std::fs::write(&file, &text).expect("write snapshot");
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if want != text {
            changed.push(format!("--- {}\n{text}", file.display()));
        }
    }
    assert!(changed.is_empty(), "--help changed (run with CNS_UPDATE_SNAPSHOTS=1 if on purpose):\n{}", changed.join("\n"));
}

#[test]
fn every_visible_subcommand_is_snapshotted_and_has_a_man_page() {
    let help = ok(&["--help"]);
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    for c in &listed {
        assert!(SUBCOMMANDS.contains(&c.as_str()), "subcommand {c} has no --help snapshot");
        let man = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/man/cns-{c}.1"));
        assert!(man.exists(), "docs/man/cns-{c}.1 is missing: run `cns __man docs/man`");
    }
    // The committed man pages are exactly what the CLI generates.
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&["__man", tmp.path().to_str().expect("utf8")]);
    for e in std::fs::read_dir(tmp.path()).expect("man").flatten() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man").join(e.file_name());
        assert_eq!(std::fs::read(e.path()).ok(), std::fs::read(&committed).ok(), "{:?} is stale: run `cns __man docs/man`", e.file_name());
    }
}

#[test]
fn inspect_json_matches_the_running_workload_and_its_checkpoint() {
    let n = name("insp");
    let _c = Cleanup(vec![n.clone()]);
    ok(&["run", "-d", "--name", &n, "--", "sh", "-c", "sleep 1000 & exec sleep 1001"]);
    wait_for("both sleeps", 10, || {
        let pid = pid_of(&n);
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| {
            c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).any(|p| std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).is_ok_and(|cc| !cc.trim().is_empty()))
        })
    });
    ok(&["dump", "--leave-running", &n]);
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", &n])).expect("json");
    let pid = pid_of(&n);
    assert_eq!(v["name"], n.as_str());
    assert_eq!(v["state"], "running");
    assert_eq!(v["pid"].as_i64(), Some(i64::from(pid)));
    for ns in ["pid", "mnt", "net", "uts", "ipc", "time"] {
        assert_eq!(v["namespaces"][ns].as_u64(), Some(ns_inode(pid, ns)), "{ns} inode");
    }
    let ip = ps_entry(&n).and_then(|e| e["ip"].as_str().map(String::from)).expect("ip");
    assert_eq!(v["network"]["ip"], ip.as_str());
    let procs = v["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 3, "init, sleep 1001 (the exec'd sh), sleep 1000: {procs:?}");
    assert!(procs.iter().any(|p| p["pid"] == pid && p["ns_pid"] == 1));
    let comms: Vec<&str> = procs.iter().filter_map(|p| p["comm"].as_str()).collect();
    assert_eq!(comms.iter().filter(|c| **c == "sleep").count(), 2, "{comms:?}");
    for p in procs {
        let host = p["pid"].as_i64().expect("pid");
        let fds = std::fs::read_dir(format!("/proc/{host}/fd")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(p["fds"].as_u64(), Some(fds as u64), "fds of {host}");
    }
    let cp = &v["checkpoint"];
    assert_eq!(cp["processes"].as_array().map(Vec::len), Some(3));
    let criu = std::process::Command::new(criu()).arg("--version").output().expect("criu --version");
    let version = String::from_utf8_lossy(&criu.stdout).lines().next().and_then(|l| l.strip_prefix("Version: ")).map(|v| v.trim().to_string()).expect("a version line");
    assert_eq!(cp["criu_version"], version.as_str(), "the checkpoint names another CRIU than the one that dumped it");
    assert!(cp["page_bytes"].as_u64().is_some_and(|b| b > 0));
    let dir = cp["dir"].as_str().expect("dir");
    let on_disk: u64 = std::fs::read_dir(dir).expect("images").flatten().map(|e| e.metadata().map(|m| m.len()).unwrap_or(0)).sum();
    let reported = cp["image_bytes"].as_u64().expect("image_bytes");
    assert!(reported <= on_disk && reported > 0, "image_bytes {reported} vs {on_disk} on disk");
    assert!(cp["dump_stats"]["pages_written"].as_u64().is_some());
    // A checkpoint directory inspects on its own.
    let d: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", dir])).expect("json");
    assert_eq!(d["checkpoint"]["name"], n.as_str());
    assert!(d.get("state").is_none());
}

#[test]
fn progress_shows_stages_on_a_terminal_only() {
    let n = name("prog");
    let _c = Cleanup(vec![n.clone()]);
    start_counter(&n);
    // On a terminal (util-linux `script` gives the command a pty).
    let cmd = format!("{} dump --leave-running {n}", cns_bin().display());
    let out = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    for stage in ["freezing the tree", "dumping memory", "writing the images"] {
        assert!(tty.contains(stage), "no '{stage}' stage on a terminal: {tty:?}");
    }
    // Not a terminal: only the result. -q: nothing at all.
    let out = cns(&["dump", "--leave-running", &n]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("freezing"), "{err}");
    let out = std::process::Command::new("script").args(["-qec", &format!("{cmd} -q"), "/dev/null"]).output().expect("script");
    let quiet = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && quiet.trim().is_empty(), "-q printed {quiet:?}");
}
