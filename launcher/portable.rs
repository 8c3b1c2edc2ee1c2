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

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{ExportArgs, ImportArgs};
use crate::store::{self, State};
use crate::{Ctx, bail_hint};

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
    net_mode: String,
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

pub fn export(ctx: &Ctx, args: ExportArgs) -> anyhow::Result<i32> {
    let w = ctx.store.get(&args.name)?;
    let Some(images) = w.images.clone().filter(|p| p.join(cns_engine::image::META_FILE).exists()) else {
        bail_hint!(format!("dump it first: `cns dump --leave-running {0}` keeps it running", args.name), "workload {} has no checkpoint to export", args.name);
    };
    let img = cns_engine::ImageDir::new(&images);
    img.validate().map_err(|e| crate::error::hinted(format!("cannot export {}: {e}", args.name), "dump it again"))?;
    let meta = crate::checkpoint::read_meta(&images)?;
    let mut files = Vec::new();
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let mut names: Vec<String> = fs::read_dir(&images)?.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names {
        // Logs of CRIU runs stay behind; everything else is the checkpoint.
        if n.ends_with(".log") {
            continue;
        }
        entries.push((format!("images/{n}"), images.join(&n)));
    }
    if w.log.exists() {
        entries.push((format!("log/{}.log", w.name), w.log.clone()));
    }
    for (path, src) in &entries {
        files.push(FileEntry { path: path.clone(), size: fs::metadata(src)?.len() });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: w.name.clone(),
        cns_version: env!("CARGO_PKG_VERSION").into(),
        criu_version: meta.criu_version.clone(),
        kernel: meta.kernel.clone(),
        dumped_at: meta.dumped_at,
        exported_at: store::now(),
        tcp_established: meta.tcp_established,
        file_locks: meta.file_locks,
        ext_unix_sk: meta.ext_unix_sk,
        shell_job: meta.shell_job,
        command: meta.workload.command.clone(),
        net_mode: meta.workload.net.mode.clone(),
        files,
    };
    let out = &args.output;
    let tmp = out.with_file_name(format!(".{}.tmp.{}", out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let file = fs::OpenOptions::new().write(true).create_new(true).mode_private().open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let sink: Box<dyn Write> = match args.compress {
            Compression::None => Box::new(io::BufWriter::new(file)),
            Compression::Gzip => Box::new(flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::fast())),
            Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(io::BufWriter::new(file), 3)?.auto_finish()),
        };
        let mut tar = tar::Builder::new(sink);
        let body = serde_json::to_vec_pretty(&manifest)?;
        append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice())?;
        // The sizes of the manifest: a running workload's log keeps growing.
        for ((path, src), entry) in entries.iter().zip(&manifest.files) {
            let mut f = fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
            append(&mut tar, path, entry.size, &mut (&mut f).take(entry.size))?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    if !ctx.quiet {
        let size = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        println!("exported {} to {} ({:.1} MiB)", w.name, out.display(), size as f64 / (1 << 20) as f64);
    }
    Ok(0)
}

fn append(tar: &mut tar::Builder<Box<dyn Write>>, path: &str, size: u64, data: &mut dyn Read) -> anyhow::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(store::now());
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
fn refuse(file: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    crate::error::hinted(format!("cannot import {}: {why}", file.display()), "export it again with `cns export NAME -o FILE` and copy it whole")
}

/// The decompressing reader for an archive, by its magic bytes.
fn open_archive(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let f = fs::File::open(path).map_err(|e| crate::error::hinted(format!("cannot open {}: {e}", path.display()), "check the path"))?;
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

pub fn import(ctx: &Ctx, args: ImportArgs) -> anyhow::Result<i32> {
    if let Some(n) = &args.as_name {
        store::validate_name(n)?;
    }
    let file = &args.file;
    let reader = open_archive(file)?;
    let root = ctx.images_root();
    store::mkdir_private(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let staging = root.join(format!(".import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    store::mkdir_private(&staging)?;
    let res = unpack(file, reader, &staging, args.max_size.saturating_mul(1 << 20));
    let (manifest, log) = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let name = args.as_name.clone().unwrap_or_else(|| manifest.name.clone());
    let done = (|| -> anyhow::Result<()> {
        store::validate_name(&name)?;
        let img = cns_engine::ImageDir::new(&staging);
        img.validate().map_err(|e| refuse(file, e))?;
        let mut meta = crate::checkpoint::read_meta(&staging).map_err(|e| refuse(file, crate::error::render(&e).0))?;
        let locked = ctx.store.create(&name)?;
        let r = (|| -> anyhow::Result<()> {
            let final_dir = root.join(&name);
            if final_dir.exists() {
                bail_hint!(format!("import it under another name with --as, or remove {}", final_dir.display()), "a checkpoint directory {} already exists", final_dir.display());
            }
            let log_path = ctx.store.paths.log_file(&name);
            meta.workload.name = name.clone();
            meta.workload.log = log_path.clone();
            meta.workload.state = State::Dumped;
            meta.workload.pid = None;
            meta.workload.pid_start = None;
            meta.workload.shim_pid = None;
            meta.workload.shim_start = None;
            meta.workload.images = Some(final_dir.clone());
            meta.workload.namespaces = Default::default();
            meta.workload.net.host_if = (meta.workload.net.mode == "veth").then(|| cns_netns::host_veth_name(&name));
            store::write_atomic(&staging.join(cns_engine::image::META_FILE), &serde_json::to_vec_pretty(&meta)?, 0o600)?;
            store::create_private_file(&log_path, true)?;
            if let Some(l) = &log {
                fs::copy(l, &log_path).with_context(|| format!("cannot write {}", log_path.display()))?;
                let _ = fs::remove_file(l);
            }
            fs::rename(&staging, &final_dir).with_context(|| format!("cannot move the checkpoint to {}", final_dir.display()))?;
            locked.save(&meta.workload)?;
            Ok(())
        })();
        if r.is_err() {
            let _ = fs::remove_file(ctx.store.paths.log_file(&name));
            let _ = ctx.store.remove(locked);
        }
        r
    })();
    if let Err(e) = done {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if !ctx.quiet {
        println!("imported {name} (dumped by CRIU {} on {}); restore it with `cns restore {name}`", manifest.criu_version, manifest.kernel);
    }
    Ok(0)
}

/// Unpacks `reader` into `staging` under the rules of the module docs.
/// Returns the manifest and the unpacked log, if any.
fn unpack(file: &Path, reader: Box<dyn Read>, staging: &Path, max_total: u64) -> anyhow::Result<(Manifest, Option<PathBuf>)> {
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
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    if total > max_total {
        bail_hint!("raise --max-size if you trust the archive", "cannot import {}: it holds {} MiB, more than the limit of {} MiB", file.display(), total >> 20, max_total >> 20);
    }
    if let Ok(st) = nix::sys::statvfs::statvfs(staging) {
        let free = st.blocks_available() * st.fragment_size();
        if total + (16 << 20) > free {
            bail_hint!("free space where the images go (or set images_dir in the config)", "cannot import {}: it needs {} MiB, {} MiB are free", file.display(), total >> 20, free >> 20);
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
