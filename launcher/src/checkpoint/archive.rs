//! Portable checkpoints: `cns export NAME -o FILE` and `cns import FILE`.
//!
//! The archive is a tar stream (zstd by default, or gzip, or plain) of:
//! - `cns-checkpoint.json` first: the manifest (format, versions, the
//!   checkpoint's name, the pre-flight facts of the dump, and every file with
//!   its size);
//! - `images/FILE` for each file of the image directory (CRIU's images are
//!   one flat directory) including cns's own `cns.json`;
//! - `log/NAME.log`, the workload's output so far.
//!
//! Import trusts nothing in the archive: the manifest must come first; every
//! other entry must be a regular file it lists, at a plain name (no `/` past
//! the prefix, no `..`, no leading dot), no bigger than listed; the total must
//! fit a limit and the free space; links, devices and directories are
//! refused. Everything unpacks into a fresh staging directory under the
//! images root, which becomes the checkpoint only once complete and valid.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bail_hint;
use crate::checkpoint::meta::{Meta, read_meta};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::files::{mkdir_private, now};
use crate::runtime::Runtime;
use crate::workload::{Locked, NetMode, validate_name};

const MANIFEST: &str = "cns-checkpoint.json";
const FORMAT: &str = "cns-checkpoint";
const FORMAT_VERSION: u32 = 1;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    format_version: u32,
    name: String,
    cns_version: String,
    criu_version: String,
    kernel: String,
    dumped_at: u64,
    exported_at: u64,
    /// What pre-flight learned at dump time and the restore needs.
    tcp_established: bool,
    file_locks: bool,
    ext_unix_sk: bool,
    shell_job: bool,
    command: Vec<String>,
    net_mode: NetMode,
    files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    /// `images/NAME` or `log/NAME`.
    path: String,
    size: u64,
}

/// Compression of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression {s:?}: use none, gzip or zstd")),
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The workload whose last checkpoint to export.
    pub name: String,
    /// The archive to write.
    pub output: PathBuf,
    pub compression: Compression,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub name: String,
    pub output: PathBuf,
    pub bytes: u64,
}

/// Writes the last checkpoint of `opts.name` (and its log) into one archive.
pub fn export(rt: &Runtime, opts: &ExportOptions) -> Result<Exported> {
    let w = rt.store.get(&opts.name)?;
    let Some(images) = w.images.clone().filter(|p| p.join(cns_engine::image::META_FILE).exists()) else {
        bail_hint!(kind: ErrorKind::State, format!("dump it first: `cns dump --leave-running {0}` keeps it running", opts.name), "workload {} has no checkpoint to export", opts.name);
    };
    cns_engine::ImageDir::new(&images).validate().map_err(|e| Error::new(ErrorKind::Invalid, format!("cannot export {}: {e}", opts.name)).with_hint("dump it again"))?;
    let meta = read_meta(&images)?;
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let mut names: Vec<String> = fs::read_dir(&images)?.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // Logs of CRIU runs stay behind; everything else is the checkpoint.
    entries.extend(names.into_iter().filter(|n| !n.ends_with(".log")).map(|n| (format!("images/{n}"), images.join(&n))));
    if w.log.exists() {
        entries.push((format!("log/{}.log", w.name), w.log.clone()));
    }
    let mut files = Vec::new();
    for (path, src) in &entries {
        files.push(FileEntry { path: path.clone(), size: fs::metadata(src)?.len() });
    }
    let manifest = manifest_of(&meta, &w.name, files);
    let out = &opts.output;
    let tmp = out.with_file_name(format!(".{}.tmp.{:016x}", out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), crate::files::random_u64()));
    if let Err(e) = write_archive(&tmp, opts.compression, &manifest, &entries) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Exported { name: w.name.clone(), output: out.clone(), bytes })
}

fn manifest_of(meta: &Meta, name: &str, files: Vec<FileEntry>) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: name.to_string(),
        cns_version: env!("CARGO_PKG_VERSION").into(),
        criu_version: meta.criu_version.clone(),
        kernel: meta.kernel.clone(),
        dumped_at: meta.dumped_at,
        exported_at: now(),
        tcp_established: meta.flags.tcp_established,
        file_locks: meta.flags.file_locks,
        ext_unix_sk: meta.flags.ext_unix_sk,
        shell_job: meta.flags.shell_job,
        command: meta.workload.command.clone(),
        net_mode: meta.workload.net.mode,
        files,
    }
}

fn write_archive(tmp: &Path, compression: Compression, manifest: &Manifest, entries: &[(String, PathBuf)]) -> Result<()> {
    let file = fs::OpenOptions::new().write(true).create_new(true).mode_private().open(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let sink: Box<dyn Write> = match compression {
        Compression::None => Box::new(io::BufWriter::new(file)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::fast())),
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(io::BufWriter::new(file), 3)?.auto_finish()),
    };
    let mut tar = tar::Builder::new(sink);
    let body = serde_json::to_vec_pretty(manifest)?;
    append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice())?;
    // The sizes of the manifest: a running workload's log keeps growing.
    for ((path, src), entry) in entries.iter().zip(&manifest.files) {
        let mut f = fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
        append(&mut tar, path, entry.size, &mut (&mut f).take(entry.size))?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

fn append(tar: &mut tar::Builder<Box<dyn Write>>, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(now());
    h.set_cksum();
    tar.append(&h, data)?;
    Ok(())
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Why an archive was refused: one sentence, the fix in the hint.
fn refuse(file: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Archive, format!("cannot import {}: {why}", file.display())).with_hint("export it again with `cns export NAME -o FILE` and copy it whole")
}

/// The decompressing reader for an archive, by its magic bytes.
fn open_archive(path: &Path) -> Result<Box<dyn Read>> {
    let f = fs::File::open(path).map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot open {}: {e}", path.display())).with_hint("check the path"))?;
    let mut r = BufReader::new(f);
    let head = r.fill_buf()?.to_vec();
    if head.starts_with(&ZSTD_MAGIC) {
        return Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?));
    }
    if head.starts_with(&GZIP_MAGIC) {
        return Ok(Box::new(flate2::bufread::GzDecoder::new(r)));
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Box::new(r));
    }
    Err(refuse(path, "it is not a cns checkpoint archive (neither zstd, gzip nor tar)"))
}

/// A plain file name: no separators, no `..`, no leading dot, not empty.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/') && !s.contains('\0') && s.len() <= 255
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// An archive written by `cns export`.
    pub file: PathBuf,
    /// Name to give the checkpoint (default: its own).
    pub as_name: Option<String>,
    /// Refuse archives that unpack to more than this many bytes.
    pub max_bytes: u64,
}

/// What an import made.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub criu_version: String,
    pub kernel: String,
}

/// Unpacks an archive into a new dumped workload, trusting nothing in it.
pub fn import(rt: &Runtime, opts: &ImportOptions) -> Result<Imported> {
    if let Some(n) = &opts.as_name {
        validate_name(n)?;
    }
    let file = &opts.file;
    let reader = open_archive(file)?;
    let root = rt.images_root();
    mkdir_private(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let staging = root.join(format!(".import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    mkdir_private(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = unpack(file, reader, &staging, opts.max_bytes).and_then(|(manifest, log)| {
        let name = opts.as_name.clone().unwrap_or_else(|| manifest.name.clone());
        install(rt, file, &staging, &name, log.as_deref())?;
        Ok(Imported { name, criu_version: manifest.criu_version, kernel: manifest.kernel })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Makes the unpacked `staging` the checkpoint of a new record `name`.
fn install(rt: &Runtime, file: &Path, staging: &Path, name: &str, log: Option<&Path>) -> Result<()> {
    validate_name(name)?;
    cns_engine::ImageDir::new(staging).validate().map_err(|e| refuse(file, e))?;
    let meta = read_meta(staging).map_err(|e| refuse(file, e.one_line()))?;
    let locked = rt.store.create(name)?;
    let r = install_locked(rt, &locked, staging, meta, log);
    if r.is_err() {
        let _ = fs::remove_file(rt.store.paths.log_file(name));
        let _ = rt.store.remove(locked);
    }
    r
}

fn install_locked(rt: &Runtime, locked: &Locked, staging: &Path, mut meta: Meta, log: Option<&Path>) -> Result<()> {
    let name = locked.name.clone();
    let final_dir = rt.default_images(&name);
    if final_dir.exists() {
        bail_hint!(kind: ErrorKind::Exists, format!("import it under another name with --as, or remove {}", final_dir.display()), "a checkpoint directory {} already exists", final_dir.display());
    }
    let log_path = rt.store.paths.log_file(&name);
    meta.distrust(&rt.store.paths.stdio_mount())?;
    let w = &mut meta.workload;
    w.name = name.clone();
    w.log = log_path.clone();
    w.pid = None;
    w.mark_checkpoint_only(final_dir.clone());
    w.net.host_if = (w.net.mode == NetMode::Veth).then(|| crate::net::host_veth_name(&name));
    meta.write(staging)?;
    crate::files::create_private_file(&log_path, true)?;
    if let Some(l) = log {
        fs::copy(l, &log_path).with_context(|| format!("cannot write {}", log_path.display()))?;
        let _ = fs::remove_file(l);
    }
    fs::rename(staging, &final_dir).with_context(|| format!("cannot move the checkpoint to {}", final_dir.display()))?;
    if let Err(e) = locked.save(&meta.workload) {
        // The name must stay importable: take the checkpoint back out.
        let _ = fs::remove_dir_all(&final_dir);
        return Err(e);
    }
    Ok(())
}

/// Unpacks `reader` into `staging` under the rules of the module docs.
/// Returns the manifest and the unpacked log, if any.
fn unpack(file: &Path, reader: Box<dyn Read>, staging: &Path, max_total: u64) -> Result<(Manifest, Option<PathBuf>)> {
    let mut ar = tar::Archive::new(reader);
    let mut entries = ar.entries().map_err(|e| refuse(file, format!("unreadable archive: {e}")))?;
    // 1. The manifest, first.
    let manifest: Manifest = {
        let mut e = match entries.next() {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(refuse(file, format!("it is truncated or corrupt: {e}"))),
            None => return Err(refuse(file, "it is empty")),
        };
        let path = e.path_bytes().into_owned();
        if path != MANIFEST.as_bytes() || e.header().entry_type() != tar::EntryType::Regular || e.size() > 1 << 20 {
            return Err(refuse(file, format!("it does not start with {MANIFEST}: not a cns checkpoint archive")));
        }
        let mut text = Vec::new();
        e.read_to_end(&mut text).map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        serde_json::from_slice(&text).map_err(|err| refuse(file, format!("its manifest is corrupt: {err}")))?
    };
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(refuse(file, format!("format {} v{} is not {FORMAT} v{FORMAT_VERSION}", manifest.format, manifest.format_version)));
    }
    let total = manifest.files.iter().try_fold(0u64, |t, f| t.checked_add(f.size));
    let Some(total) = total else {
        return Err(refuse(file, "its manifest's sizes overflow"));
    };
    let logs: Vec<&FileEntry> = manifest.files.iter().filter(|f| f.path.starts_with("log/")).collect();
    if logs.len() > 1 || logs.first().is_some_and(|f| f.path != format!("log/{}.log", manifest.name)) {
        return Err(refuse(file, format!("its manifest lists logs other than log/{}.log", manifest.name)));
    }
    if total > max_total {
        bail_hint!(kind: ErrorKind::Archive, "raise --max-size if you trust the archive", "cannot import {}: it holds {} MiB, more than the limit of {} MiB", file.display(), total >> 20, max_total >> 20);
    }
    if let Ok(st) = nix::sys::statvfs::statvfs(staging) {
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        if total.saturating_add(16 << 20) > free {
            bail_hint!(kind: ErrorKind::System, "free space where the images go (or set images_dir in the config)", "cannot import {}: it needs {} MiB, {} MiB are free", file.display(), total >> 20, free >> 20);
        }
    }
    let listed: std::collections::BTreeMap<String, u64> = manifest.files.iter().map(|f| (f.path.clone(), f.size)).collect();
    for path in listed.keys() {
        if !allowed_path(path) {
            return Err(refuse(file, format!("its manifest lists {path:?}, which is not a plain image or log name")));
        }
    }
    // 2. Every other entry: a listed regular file at a plain name.
    let mut seen = std::collections::BTreeSet::new();
    let mut log = None;
    for e in entries {
        let mut e = e.map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        let raw = e.path_bytes().into_owned();
        let path = String::from_utf8(raw).map_err(|_| refuse(file, "an entry name is not UTF-8"))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(file, format!("entry {path:?} is a {:?}, only regular files are allowed", e.header().entry_type())));
        }
        let Some(&size) = listed.get(&path).filter(|_| allowed_path(&path)) else {
            return Err(refuse(file, format!("entry {path:?} is not a listed image or log file")));
        };
        if e.size() != size || !seen.insert(path.clone()) {
            return Err(refuse(file, format!("entry {path:?} does not match the manifest")));
        }
        let (dir, base) = path.split_once('/').unwrap_or(("", &path));
        let target = if dir == "log" { staging.join(format!(".log.{base}")) } else { staging.join(base) };
        let mut out = fs::OpenOptions::new().write(true).create_new(true).mode_private().open(&target).with_context(|| format!("cannot write {}", target.display()))?;
        let n = io::copy(&mut (&mut e).take(size), &mut out).map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        if n != size {
            return Err(refuse(file, format!("it is truncated: {path} has {n} of {size} bytes")));
        }
        if dir == "log" {
            log = Some(target);
        }
    }
    if seen.len() != listed.len() {
        let missing: Vec<&String> = listed.keys().filter(|p| !seen.contains(*p)).collect();
        return Err(refuse(file, format!("it is truncated: missing {missing:?}")));
    }
    Ok((manifest, log))
}

fn allowed_path(p: &str) -> bool {
    match p.split_once('/') {
        Some(("images", base)) | Some(("log", base)) => plain_name(base),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a deterministic stream of mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A small valid archive: manifest, two images, a log.
    fn sample() -> Vec<u8> {
        let files = vec![
            FileEntry { path: "images/inventory.img".into(), size: 12 },
            FileEntry { path: "images/pages-1.img".into(), size: 4096 },
            FileEntry { path: "log/w.log".into(), size: 5 },
        ];
        let m = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            name: "w".into(),
            cns_version: "0".into(),
            criu_version: "4.2.1".into(),
            kernel: "k".into(),
            dumped_at: 0,
            exported_at: 0,
            tcp_established: false,
            file_locks: false,
            ext_unix_sk: false,
            shell_job: false,
            command: vec!["sh".into()],
            net_mode: NetMode::Veth,
            files,
        };
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let sink: Box<dyn Write> = Box::new(tmp.reopen().expect("reopen"));
        let mut tar = tar::Builder::new(sink);
        let body = serde_json::to_vec(&m).expect("json");
        append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice()).expect("manifest");
        append(&mut tar, "images/inventory.img", 12, &mut [7u8; 12].as_slice()).expect("img");
        append(&mut tar, "images/pages-1.img", 4096, &mut vec![1u8; 4096].as_slice()).expect("pages");
        append(&mut tar, "log/w.log", 5, &mut b"hello".as_slice()).expect("log");
        tar.into_inner().expect("finish").flush().expect("flush");
        fs::read(tmp.path()).expect("read")
    }

    /// Every file under `dir`, recursively, with its size.
    fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut v = Vec::new();
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => v.extend(tree(&p)),
                Ok(m) => v.push((p, m.len())),
                Err(_) => {}
            }
        }
        v
    }

    #[test]
    fn mutated_and_truncated_archives_never_panic_escape_or_overgrow() {
        let good = sample();
        let parent = tempfile::tempdir().expect("tmp");
        let file = parent.path().join("a.cnsx");
        let limit = 8192;
        let mut rng = Rng(0x5eed_cafe_f00d_0001);
        let mut accepted = 0;
        for round in 0..3000 {
            let mut data = good.clone();
            match round % 3 {
                0 => data.truncate(rng.below(good.len())),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(data.len());
                        data[i] = rng.next() as u8;
                    }
                }
                _ => {
                    // Splice a run of bytes from elsewhere (headers into data, sizes into names).
                    let (a, b) = (rng.below(data.len()), rng.below(data.len()));
                    let n = rng.below(64).min(data.len() - a.max(b));
                    let chunk = data[a..a + n].to_vec();
                    data[b..b + n].copy_from_slice(&chunk);
                }
            }
            let staging = parent.path().join("staging");
            fs::create_dir(&staging).expect("staging");
            let r = unpack(&file, Box::new(std::io::Cursor::new(data)), &staging, limit);
            let outside: Vec<_> = tree(parent.path()).into_iter().filter(|(p, _)| !p.starts_with(&staging)).collect();
            assert!(outside.is_empty(), "round {round}: wrote outside staging: {outside:?}");
            let inside: u64 = tree(&staging).iter().map(|(_, n)| n).sum();
            assert!(inside <= limit, "round {round}: {inside} bytes unpacked, limit {limit}");
            if r.is_ok() {
                accepted += 1;
            }
            fs::remove_dir_all(&staging).expect("clean");
        }
        // The unmutated archive unpacks (the property is not vacuous).
        let staging = parent.path().join("staging");
        fs::create_dir(&staging).expect("staging");
        assert!(unpack(&file, Box::new(std::io::Cursor::new(good)), &staging, limit).is_ok());
        assert!(accepted < 3000, "no mutation was refused");
    }

    #[test]
    fn manifest_sizes_that_overflow_are_refused() {
        let parent = tempfile::tempdir().expect("tmp");
        let m = serde_json::json!({
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": "w", "cns_version": "0", "criu_version": "4.2.1",
            "kernel": "k", "dumped_at": 0, "exported_at": 0, "tcp_established": false, "file_locks": false,
            "ext_unix_sk": false, "shell_job": false, "command": [], "net_mode": "veth",
            "files": [{"path": "images/a.img", "size": u64::MAX}, {"path": "images/b.img", "size": 2}]
        });
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let sink: Box<dyn Write> = Box::new(tmp.reopen().expect("reopen"));
        let mut tar = tar::Builder::new(sink);
        let body = serde_json::to_vec(&m).expect("json");
        append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice()).expect("manifest");
        tar.into_inner().expect("finish").flush().expect("flush");
        let out = fs::read(tmp.path()).expect("read");
        let e = unpack(Path::new("x"), Box::new(std::io::Cursor::new(out)), parent.path(), 1 << 30).expect_err("overflow");
        assert!(e.to_string().contains("overflow"), "{e}");
    }

    #[test]
    fn only_plain_names_under_images_or_log() {
        assert!(allowed_path("images/pages-1.img"));
        assert!(allowed_path("log/web.log"));
        for bad in ["../x", "images/../x", "images/a/b", "/etc/passwd", "images/", "images/.hidden", "other/x", "images", "log/.."] {
            assert!(!allowed_path(bad), "{bad}");
        }
    }

    #[test]
    fn compression_names() {
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        assert!("xz".parse::<Compression>().is_err());
    }
}
