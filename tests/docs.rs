//! The user guide's examples are run: every ```sh block of docs/guide.md, in
//! order, in one bash, with its workload names made unique to this run.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

/// The ```sh blocks of a markdown file, in order.
fn sh_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, "```sh") => cur = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The guide's names (whole words, also inside `web-copy` or `/tmp/web.pid`).
const NAMES: [&str; 4] = ["web", "once", "api", "adopted"];

fn uniquify(script: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let bytes = script.as_bytes();
    let mut i = 0;
    'outer: while i < bytes.len() {
        let boundary_before = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$');
        if boundary_before {
            for n in NAMES {
                let end = i + n.len();
                if script[i..].starts_with(n) && (end == bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')) {
                    out.push_str(prefix);
                    out.push_str(n);
                    i = end;
                    continue 'outer;
                }
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[test]
fn uniquify_renames_whole_words_only() {
    assert_eq!(uniquify("cns dump web; cat /tmp/web.pid; cns rm web-copy; webby $web", "t1-"), "cns dump t1-web; cat /tmp/t1-web.pid; cns rm t1-web-copy; webby $web");
}

#[test]
fn the_guide_examples_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).expect("guide");
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() >= 8, "the guide lost its examples");
    let prefix = format!("{}-", name("doc"));
    let _c = Cleanup(["web", "web-copy", "web-moved", "once", "api", "adopted"].iter().map(|n| format!("{prefix}{n}")).collect());
    let bin_dir = cns_bin().parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for (i, block) in blocks.iter().enumerate() {
        let script = format!("set -eu\n{}", uniquify(block, &prefix));
        let out = Command::new("bash").arg("-c").arg(&script).env("PATH", &path).output().expect("bash");
        assert!(
            out.status.success(),
            "guide example {} failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            i + 1,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
