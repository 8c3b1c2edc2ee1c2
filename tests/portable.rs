//! Portable checkpoints: export → rm → import → restore, and archives that
//! must be refused.

mod common;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};

struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn archive_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.cnsx", name(tag)))
}

#[test]
fn export_rm_import_restore_continues_the_workload() {
    for compress in ["zstd", "gzip", "none"] {
        let n = name(&format!("exp-{compress}"));
        let _c = Cleanup(vec![n.clone()]);
        let file = archive_path(&format!("exp-{compress}"));
        let _t = TempFiles(vec![file.clone()]);
        start_counter(&n);
        wait_for("the counter", 10, || last_count(&n).is_some_and(|c| c > 3));
        ok(&["dump", &n]);
        let k = last_count(&n).expect("count");
        ok(&["export", &n, "-o", file.to_str().expect("utf8"), "--compress", compress]);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("archive").permissions());
        assert_eq!(mode & 0o077, 0, "the archive holds memory: it must not be readable by others");
        ok(&["rm", &n]);
        assert!(ps_entry(&n).is_none());
        assert!(!Path::new(&format!("/var/lib/cns/images/{n}")).exists());
        ok(&["import", file.to_str().expect("utf8")]);
        assert_eq!(state_of(&n), "dumped");
        ok(&["check", "--image", &n]);
        // rm released the address and parallel tests may hold it by now.
        ok(&["restore", "-d", "--new-ip", &n]);
        wait_for("the counter to continue", 20, || last_count(&n).is_some_and(|c| c > k + 2));
        let nums: Vec<u64> = log_of(&n).lines().filter_map(|l| l.trim().parse().ok()).collect();
        let pos = nums.iter().position(|&v| v == k).expect("the old output came along");
        assert_eq!(nums.get(pos + 1), Some(&(k + 1)), "{compress}: did not continue from {k}");
    }
}

#[test]
fn import_as_a_new_name_restores_beside_the_original() {
    let n = name("impas");
    let copy = name("impas-c");
    let _c = Cleanup(vec![n.clone(), copy.clone()]);
    let file = archive_path("impas");
    let _t = TempFiles(vec![file.clone()]);
    start_counter(&n);
    ok(&["dump", "--leave-running", &n]);
    ok(&["export", &n, "-o", file.to_str().expect("utf8")]);
    let e = fails(&["import", file.to_str().expect("utf8")]);
    assert!(e.contains("already exists"), "{e}");
    ok(&["import", file.to_str().expect("utf8"), "--as", &copy]);
    // The archive's address is not believed (docs/security.md): the import
    // restores on a fresh one, beside the original that holds the old one.
    assert_eq!(state_of(&copy), "dumped");
    let k = last_count(&copy).expect("the log came along");
    ok(&["restore", "-d", &copy]);
    wait_for("the imported copy to count on", 20, || last_count(&copy).is_some_and(|c| c > k + 2));
    let ip = |n: &str| ps_entry(n).and_then(|e| e["ip"].as_str().map(String::from)).expect("ip");
    assert_ne!(ip(&n), ip(&copy));
    assert_eq!(state_of(&n), "running");
}

/// Raw tar bytes: one header + data per entry, names and types as given
/// (the tar crate refuses to *write* hostile names, so headers are built
/// by hand), then the end marker.
fn raw_tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data) in entries {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        if *kind == b'2' {
            h[157..157 + 11].copy_from_slice(b"/etc/passwd");
        }
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn manifest(files: &[(&str, usize)]) -> Vec<u8> {
    let files: Vec<serde_json::Value> = files.iter().map(|(p, s)| serde_json::json!({"path": p, "size": s, "sha256": "0".repeat(64)})).collect();
    serde_json::to_vec(&serde_json::json!({
        "format": "cns-checkpoint", "format_version": 2, "name": "evil", "cns_version": "0", "criu_version": "4.2.1",
        "kernel": "x", "dumped_at": 0, "exported_at": 0, "tcp_established": false, "file_locks": false,
        "ext_unix_sk": false, "shell_job": false, "command": ["x"], "net_mode": "none", "files": files
    }))
    .expect("json")
}

#[test]
fn tampered_archives_are_refused_and_write_nothing_outside() {
    let n = name("tamper");
    let _c = Cleanup(vec![n.clone(), "evil".into()]);
    let dir = std::env::temp_dir().join(name("tamper-dir"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut temps = TempFiles(vec![dir.clone()]);
    let escape = dir.join("escaped");
    let escape_rel = format!("../../../../../../..{}", escape.display());
    let payload: &[u8] = b"pwned";
    let good = archive_path("tamper-good");
    temps.0.push(good.clone());
    start_counter(&n);
    ok(&["dump", "--leave-running", &n]);
    ok(&["export", &n, "-o", good.to_str().expect("utf8"), "--compress", "none"]);
    let good_bytes = std::fs::read(&good).expect("archive");
    let m_trav = manifest(&[(&escape_rel, payload.len())]);
    let m_img = manifest(&[("images/x.img", payload.len())]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("path traversal entry", raw_tar(&[("cns-checkpoint.json", b'0', &manifest(&[])), (&escape_rel, b'0', payload)]), "not a listed"),
        ("path traversal in the manifest", raw_tar(&[("cns-checkpoint.json", b'0', &m_trav), (&escape_rel, b'0', payload)]), "not a plain"),
        ("absolute path", raw_tar(&[("cns-checkpoint.json", b'0', &manifest(&[])), (escape.to_str().expect("utf8"), b'0', payload)]), "not a listed"),
        ("symlink entry", raw_tar(&[("cns-checkpoint.json", b'0', &m_img), ("images/x.img", b'2', b"")]), "only regular files"),
        ("hard link entry", raw_tar(&[("cns-checkpoint.json", b'0', &m_img), ("images/x.img", b'1', b"")]), "only regular files"),
        ("no manifest (a foreign tar)", raw_tar(&[("etc/hosts", b'0', payload)]), "not a cns checkpoint"),
        ("wrong magic", b"PK\x03\x04 this is a zip file, not a checkpoint at all........".repeat(10), "not a cns checkpoint archive"),
        ("truncated file", good_bytes[..good_bytes.len() / 2].to_vec(), "truncated"),
        ("empty file", Vec::new(), "not a cns checkpoint archive"),
    ];
    let images_before: Vec<String> = list("/var/lib/cns/images");
    for (what, bytes, expect) in &cases {
        let f = dir.join(format!("{}.tar", what.replace(' ', "-")));
        std::fs::File::create(&f).and_then(|mut h| h.write_all(bytes)).expect("write case");
        let e = fails(&["import", f.to_str().expect("utf8"), "--as", &name("tamper-imp")]);
        assert!(e.contains(expect), "{what}: {e}");
        assert!(!escape.exists(), "{what}: wrote outside the target");
        assert!(ps_entry(&name("tamper-imp")).is_none() && ps_entry("evil").is_none(), "{what}: left a record");
        assert_eq!(list("/var/lib/cns/images"), images_before, "{what}: left something in the images dir");
    }
}

/// What a refused import could leave in the images dir: checkpoints named
/// by this test, or staging dirs of imports that are over.
fn list(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.retain(|n| match n.strip_prefix(".import-") {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        None => n.contains("tamper") || n == "evil",
    });
    v.sort();
    v
}
