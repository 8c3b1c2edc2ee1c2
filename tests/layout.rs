//! The shape of launcher/: the library never depends on clap, no module
//! imports a module that imports it back (file by file, and folder by
//! folder), and no function runs past 80 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path (`checkpoint::dump`) of each library file, with its text.
fn library_modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("launcher/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src").with_extension("");
            let m = rel.to_string_lossy().trim_end_matches("/mod").replace('/', "::");
            let m = if m == "lib" { String::new() } else { m };
            (m, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

/// The modules each module names through `crate::…` paths (including
/// `use crate::a::{b, c}` groups).
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeMap::new();
    for (m, src) in mods {
        let mut refs = BTreeSet::new();
        for (i, _) in src.match_indices("crate::") {
            let rest = &src[i + 7..];
            let path: String = rest.chars().take_while(|&c| ident(c)).collect();
            let parts: Vec<&str> = path.trim_end_matches(':').split("::").collect();
            let longest = (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|c| mods.contains_key(c));
            if let Some(c) = longest {
                refs.insert(c.clone());
                // `crate::a::{b, c}`
                let after = &rest[path.len()..];
                if let (true, Some(end)) = (after.starts_with('{'), after.find('}')) {
                    for item in after[1..end].split(',') {
                        let first = item.trim().split("::").next().unwrap_or("");
                        let sub = format!("{c}::{first}");
                        if mods.contains_key(&sub) {
                            refs.insert(sub);
                        }
                    }
                }
            }
        }
        refs.remove(m);
        out.insert(m.clone(), refs);
    }
    out
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(n: &str, g: &BTreeMap<String, BTreeSet<String>>, stack: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = dfs(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| dfs(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mods = library_modules();
    assert!(mods.len() > 20, "the library's modules were not found");
    let files = edges(&mods);
    assert_eq!(find_cycle(&files), None, "a cycle between library files");
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, refs) in &files {
        for r in refs {
            if top(m) != top(r) && !top(m).is_empty() {
                folders.entry(top(m)).or_default().insert(top(r));
            }
        }
    }
    assert_eq!(find_cycle(&folders), None, "a cycle between library folders: {folders:?}");
}

#[test]
fn the_detector_sees_a_cycle() {
    let mut mods = BTreeMap::new();
    mods.insert("a".to_string(), "use crate::b::{c, d};".to_string());
    mods.insert("b".to_string(), String::new());
    mods.insert("b::c".to_string(), "fn f() { crate::a::g() }".to_string());
    let g = edges(&mods);
    assert!(g["a"].contains("b::c"));
    assert!(find_cycle(&g).is_some());
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("launcher");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut long = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            let is_fn = ["fn ", "pub fn ", "pub(crate) fn ", "unsafe fn ", "pub unsafe fn "].iter().any(|p| t.starts_with(p));
            if !is_fn || t.ends_with(';') {
                continue;
            }
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|x| *x == close) {
                if end + 2 > 80 {
                    long.push(format!("{}:{} ({} lines)", p.display(), i + 1, end + 2));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions longer than 80 lines: {long:?}");
}

#[test]
fn the_library_does_not_depend_on_clap() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("launcher/Cargo.toml")).expect("manifest");
    assert!(!manifest.contains("clap"), "launcher/Cargo.toml (the library) names clap");
    let mods = library_modules();
    for (m, src) in &mods {
        assert!(!src.contains("clap::") && !src.contains("anyhow"), "library module {m} uses clap or anyhow");
    }
}
