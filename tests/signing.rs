//! Signed checkpoints: keys, signed exports, the import's trust policy,
//! hashes checked while streaming, and minisign interoperability both ways.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

struct Setup {
    n: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    _c: Cleanup,
}

/// A dumped counter and a fresh key pair made by `cns key generate`.
fn setup(tag: &str) -> Setup {
    let n = name(tag);
    let c = Cleanup(vec![n.clone()]);
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("ops.key");
    let out = ok(&["key", "generate", s(&key)]);
    assert!(out.contains("key "), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    assert!(dir.path().join("ops.key.pub").exists());
    let e = fails(&["key", "generate", s(&key)]);
    assert!(e.contains("never overwrites"), "{e}");
    start_counter(&n);
    ok(&["dump", &n]);
    Setup { n, dir, key, _c: c }
}

#[test]
fn a_signed_export_imports_with_the_key_trusted_and_continues() {
    let t = setup("sig-ok");
    let file = t.dir.path().join("web.cnsx");
    let out = ok(&["export", &t.n, "-o", s(&file), "--sign", s(&t.key)]);
    assert!(out.contains("signed by key"), "{out}");
    let k = last_count(&t.n).expect("k");
    ok(&["rm", &t.n]);
    // inspect: who signed it, and that this host does not trust that key yet.
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s(&file)])).expect("json");
    assert_eq!(v["signature"]["trusted"], false);
    assert!(v["signature"]["signed_by"].as_str().is_some_and(|id| id.len() == 16), "{v}");
    // Not trusted: refused with the key id, nothing imported.
    let id = v["signature"]["signed_by"].as_str().expect("id").to_string();
    let e = fails(&["import", s(&file)]);
    assert!(e.contains(&format!("signed by key {id}, which this host does not trust")), "{e}");
    assert!(ps_entry(&t.n).is_none());
    // Trusted: imported, restored, and the counter continues.
    let pubkey = t.dir.path().join("ops.key.pub");
    let out = ok(&["import", s(&file), "--trust", s(&pubkey)]);
    assert!(out.contains(&format!("signed by trusted key {id}")), "{out}");
    ok(&["restore", "-d", &t.n]);
    wait_for("the counter to continue", 20, || last_count(&t.n).is_some_and(|c| c > k + 2));
    let nums: Vec<u64> = log_of(&t.n).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let pos = nums.iter().position(|&v| v == k).expect("k");
    assert_eq!(nums.get(pos + 1), Some(&(k + 1)));
}

#[test]
fn one_changed_byte_is_refused_naming_the_file_signed_or_not() {
    let t = setup("sig-flip");
    for signed in [true, false] {
        let file = t.dir.path().join(format!("{signed}.cnsx"));
        let mut args = vec!["export", &t.n, "-o", s(&file), "--compress", "none"];
        if signed {
            args.extend(["--sign", s(&t.key)]);
        }
        ok(&args);
        // Flip one byte in the middle of the largest file's data.
        let (path, data, off) = archive_entries(&file).into_iter().max_by_key(|(_, d, _)| d.len()).expect("entries");
        let mut bytes = std::fs::read(&file).expect("read");
        let at = off as usize + data.len() / 2;
        bytes[at] ^= 0x5a;
        std::fs::write(&file, bytes).expect("write");
        let as_name = name(&format!("flip{signed}"));
        let pubkey = t.dir.path().join("ops.key.pub");
        let e = fails(&["import", s(&file), "--as", &as_name, "--trust", s(&pubkey)]);
        assert!(e.contains(&format!("{path} was altered")), "signed={signed}: {e}");
        assert!(ps_entry(&as_name).is_none());
        assert!(!Path::new(&format!("/var/lib/cns/images/{as_name}")).exists(), "a refused import left images");
    }
}

#[test]
fn the_signature_policy_refuses_unsigned_when_required_and_truncated_signatures() {
    let t = setup("sig-pol");
    let file = t.dir.path().join("plain.cnsx");
    ok(&["export", &t.n, "-o", s(&file), "--compress", "none"]);
    let cfg = t.dir.path().join("config.toml");
    std::fs::write(&cfg, "require_signature = true\n").expect("config");
    let as_name = name("sig-pol-i");
    let _c = Cleanup(vec![as_name.clone()]);
    let out = Command::new(cns_bin()).args(["import", s(&file), "--as", &as_name]).env("CNS_CONFIG", &cfg).output().expect("cns");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("it is not signed, and this host requires signed checkpoints"), "{e}");
    assert!(ps_entry(&as_name).is_none());
    // Without the requirement, the same archive imports.
    ok(&["import", s(&file), "--as", &as_name]);
    // A truncated signature is refused in one sentence.
    let signed = t.dir.path().join("signed.cnsx");
    ok(&["export", &t.n, "-o", s(&signed), "--compress", "none", "--sign", s(&t.key)]);
    let mut es: Vec<(String, Vec<u8>)> = archive_entries(&signed).into_iter().map(|(p, d, _)| (p, d)).collect();
    assert_eq!(es[1].0, "cns-checkpoint.json.minisig");
    let half = es[1].1.len() / 2;
    es[1].1.truncate(half);
    let cut = t.dir.path().join("cut.cnsx");
    write_archive(&cut, &es);
    let pubkey = t.dir.path().join("ops.key.pub");
    let e = fails(&["import", s(&cut), "--as", &name("sig-cut"), "--trust", s(&pubkey)]);
    assert!(e.contains("its signature is unreadable"), "{e}");
}

#[test]
fn minisign_verifies_what_cns_signs_and_cns_what_minisign_signs() {
    if Command::new("minisign").arg("-v").output().is_err() {
        panic!("minisign is not installed (scripts/setup installs it)");
    }
    let t = setup("sig-mini");
    let file = t.dir.path().join("signed.cnsx");
    ok(&["export", &t.n, "-o", s(&file), "--compress", "none", "--sign", s(&t.key)]);
    let es = archive_entries(&file);
    let manifest = t.dir.path().join("manifest.json");
    let sig = t.dir.path().join("manifest.json.minisig");
    std::fs::write(&manifest, &es[0].1).expect("manifest");
    std::fs::write(&sig, &es[1].1).expect("sig");
    let pubkey = t.dir.path().join("ops.key.pub");
    let out = Command::new("minisign").args(["-V", "-q", "-m", s(&manifest), "-x", s(&sig), "-p", s(&pubkey)]).output().expect("minisign");
    assert!(out.status.success(), "minisign -V rejected cns's signature: {}", String::from_utf8_lossy(&out.stderr));
    // minisign signs with a key cns made, and cns verifies it.
    let sig2 = t.dir.path().join("by-minisign-with-cns-key.minisig");
    let out = Command::new("minisign").args(["-S", "-s", s(&t.key), "-m", s(&manifest), "-x", s(&sig2)]).output().expect("minisign -S");
    assert!(out.status.success(), "minisign cannot use a cns key: {}", String::from_utf8_lossy(&out.stderr));
    // The other way: a key and a signature made by minisign itself.
    let mpub = t.dir.path().join("m.pub");
    let msec = t.dir.path().join("m.key");
    let out = Command::new("minisign").args(["-G", "-W", "-p", s(&mpub), "-s", s(&msec)]).output().expect("minisign -G");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&sig).expect("rm");
    let out = Command::new("minisign").args(["-S", "-s", s(&msec), "-m", s(&manifest), "-x", s(&sig)]).output().expect("minisign -S");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rebuilt: Vec<(String, Vec<u8>)> = es.into_iter().map(|(p, d, _)| (p, d)).collect();
    rebuilt[1].1 = std::fs::read(&sig).expect("sig");
    let re = t.dir.path().join("minisigned.cnsx");
    write_archive(&re, &rebuilt);
    let as_name = name("sig-mini-i");
    let _c = Cleanup(vec![as_name.clone()]);
    let out = ok(&["import", s(&re), "--as", &as_name, "--trust", s(&mpub)]);
    assert!(out.contains("signed by trusted key"), "{out}");
    // cns signs with a key minisign made.
    let file2 = t.dir.path().join("cns-with-minisign-key.cnsx");
    ok(&["export", &t.n, "-o", s(&file2), "--sign", s(&msec)]);
    // Trust through /etc/cns/trusted.d is what `inspect` reads: not trusted here.
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s(&file2)])).expect("json");
    assert_eq!(v["signature"]["status"], "signed by a key this host does not trust");
}
