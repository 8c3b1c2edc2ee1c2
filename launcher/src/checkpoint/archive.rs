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

use crate::files::hex;
use crate::bail_hint;
use crate::checkpoint::meta::{Meta, read_meta};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::files::{mkdir_private, now};
use crate::runtime::Runtime;
use crate::workload::{Locked, NetMode, validate_name};

const MANIFEST: &str = "cns-checkpoint.json";
/// The manifest's minisign signature, right after it (signed archives).
const MANIFEST_SIG: &str = "cns-checkpoint.json.minisig";
const FORMAT: &str = "cns-checkpoint";
/// 2: every file carries its SHA-256; an optional signature follows the manifest.
const FORMAT_VERSION: u32 = 2;
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
    /// SHA-256 of the first `size` bytes, lower-case hex.
    sha256: String,
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
    /// Sign the manifest with this minisign secret key.
    pub sign: Option<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub name: String,
    pub output: PathBuf,
    pub bytes: u64,
    /// The key id that signed it.
    pub signer: Option<String>,
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
    let key = opts.sign.as_deref().map(read_secret_key).transpose()?;
    let mut files = Vec::new();
    for (path, src) in &entries {
        let size = fs::metadata(src)?.len();
        files.push(FileEntry { path: path.clone(), size, sha256: sha256_of(src, size)? });
    }
    let manifest = manifest_of(&meta, &w.name, files);
    let body = serde_json::to_vec_pretty(&manifest)?;
    let signature = key.as_ref().map(|k| k.sign(&body, &format!("cns checkpoint {} exported {}", w.name, now())));
    let out = &opts.output;
    let tmp = out.with_file_name(format!(".{}.tmp.{:016x}", out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), crate::files::random_u64()));
    if let Err(e) = write_archive(&tmp, opts.compression, (&body, signature.as_deref()), &manifest, &entries) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Exported { name: w.name.clone(), output: out.clone(), bytes, signer: key.map(|k| k.public().id()) })
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

fn write_archive(tmp: &Path, compression: Compression, (body, signature): (&[u8], Option<&str>), manifest: &Manifest, entries: &[(String, PathBuf)]) -> Result<()> {
    let file = fs::OpenOptions::new().write(true).create_new(true).mode_private().open(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let sink: Box<dyn Write> = match compression {
        Compression::None => Box::new(io::BufWriter::new(file)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::fast())),
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(io::BufWriter::new(file), 3)?.auto_finish()),
    };
    let mut tar = tar::Builder::new(sink);
    append(&mut tar, MANIFEST, body.len() as u64, &mut &body[..])?;
    if let Some(sig) = signature {
        append(&mut tar, MANIFEST_SIG, sig.len() as u64, &mut sig.as_bytes())?;
    }
    // The sizes of the manifest: a running workload's log keeps growing.
    for ((path, src), entry) in entries.iter().zip(&manifest.files) {
        let mut f = fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
        append(&mut tar, path, entry.size, &mut (&mut f).take(entry.size))?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// SHA-256 of the first `size` bytes of `path`.
fn sha256_of(path: &Path, size: u64) -> Result<String> {
    use sha2::Digest;
    let mut f = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    io::copy(&mut (&mut f).take(size), &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

fn read_secret_key(p: &Path) -> Result<super::signing::SecretKey> {
    let text = fs::read_to_string(p).map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot read the secret key {}: {e}", p.display())).with_hint("make one with `cns key generate PATH`"))?;
    super::signing::SecretKey::parse(&text).map_err(|e| Error::invalid(format!("{} is not a usable secret key: {}", p.display(), e.one_line()), "make one with `cns key generate PATH`"))
}

/// Which signatures an import accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// Keys whose signatures are accepted.
    pub keys: Vec<super::signing::PublicKey>,
    /// Refuse unsigned archives.
    pub require_signature: bool,
}

impl TrustPolicy {
    /// The host's policy: `/etc/cns/trusted.d/*.pub`, the extra keys given,
    /// and the config's `require_signature`.
    pub fn of_host(rt: &Runtime, extra: &[PathBuf]) -> Result<TrustPolicy> {
        let mut files: Vec<PathBuf> = fs::read_dir(rt.config_dir().join("trusted.d"))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pub")).collect())
            .unwrap_or_default();
        files.sort();
        files.extend(extra.iter().cloned());
        let mut keys = Vec::new();
        for f in &files {
            let text = fs::read_to_string(f).map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot read the public key {}: {e}", f.display())).with_hint("give --trust the .pub file of a key"))?;
            keys.push(super::signing::PublicKey::parse(&text).map_err(|e| Error::invalid(format!("{} is not a minisign public key: {}", f.display(), e.one_line()), "give --trust the .pub file of a key"))?);
        }
        Ok(TrustPolicy { keys, require_signature: rt.config.require_signature })
    }

    /// Judges the manifest's signature (if any): who signed, or why refused.
    fn judge(&self, file: &Path, manifest: &[u8], sig: Option<&str>) -> Result<Option<String>> {
        use super::signing::{Rejected, verify};
        let Some(sig) = sig else {
            if self.require_signature {
                return Err(Error::new(ErrorKind::Archive, format!("cannot import {}: it is not signed, and this host requires signed checkpoints", file.display()))
                    .with_hint("export it with `cns export NAME -o FILE --sign KEY`, or set require_signature = false in /etc/cns/config.toml"));
            }
            return Ok(None);
        };
        match verify(sig, manifest, &self.keys) {
            Ok(s) => Ok(Some(s.key_id)),
            Err(Rejected::UntrustedKey(id)) => Err(Error::new(ErrorKind::Archive, format!("cannot import {}: it is signed by key {id}, which this host does not trust", file.display()))
                .with_hint(format!("if you trust its author, put their public key in /etc/cns/trusted.d/ or pass --trust KEY.pub (key id {id})"))),
            Err(Rejected::BadSignature(id)) => Err(Error::new(ErrorKind::Archive, format!("cannot import {}: its manifest was altered after key {id} signed it", file.display()))
                .with_hint("get the archive again from its author; do not restore it")),
            Err(Rejected::Malformed(why)) => Err(refuse(file, format!("its signature is unreadable: {why}"))),
        }
    }
}

/// Wraps the staging file so the SHA-256 is computed as the bytes stream in.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
    /// Public keys trusted for this import, besides /etc/cns/trusted.d.
    pub trust: Vec<PathBuf>,
}

/// What an import made.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub criu_version: String,
    pub kernel: String,
    /// The key id that signed it.
    pub signer: Option<String>,
}

/// Unpacks an archive into a new dumped workload, trusting nothing in it.
pub fn import(rt: &Runtime, opts: &ImportOptions) -> Result<Imported> {
    if let Some(n) = &opts.as_name {
        validate_name(n)?;
    }
    let file = &opts.file;
    let trust = TrustPolicy::of_host(rt, &opts.trust)?;
    let reader = open_archive(file)?;
    let root = rt.images_root();
    mkdir_private(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let staging = root.join(format!(".import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    mkdir_private(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = unpack(file, reader, &staging, opts.max_bytes, &trust).and_then(|u| {
        let name = opts.as_name.clone().unwrap_or_else(|| u.manifest.name.clone());
        install(rt, file, &staging, &name, u.log.as_deref())?;
        Ok(Imported { name, criu_version: u.manifest.criu_version, kernel: u.manifest.kernel, signer: u.signer })
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

/// What an archive says of itself, and whether this host trusts its
/// signer: for `cns inspect FILE`. Reads only the manifest and signature.
pub fn inspect_archive(rt: &Runtime, file: &Path) -> Result<serde_json::Value> {
    use super::signing::{Rejected, signer_id, verify};
    let mut ar = tar::Archive::new(open_archive(file)?);
    let mut entries = ar.entries().map_err(|e| refuse(file, format!("unreadable archive: {e}")))?;
    let mut read = |want: &str, limit: u64| -> Result<Option<Vec<u8>>> {
        match entries.next() {
            Some(Ok(mut e)) if e.path_bytes().as_ref() == want.as_bytes() && e.size() <= limit => {
                let mut b = Vec::new();
                e.read_to_end(&mut b).map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
                Ok(Some(b))
            }
            Some(Err(e)) => Err(refuse(file, format!("it is truncated or corrupt: {e}"))),
            _ => Ok(None),
        }
    };
    let body = read(MANIFEST, 1 << 20)?.ok_or_else(|| refuse(file, format!("it does not start with {MANIFEST}: not a cns checkpoint archive")))?;
    let m: Manifest = serde_json::from_slice(&body).map_err(|err| refuse(file, format!("its manifest is corrupt: {err}")))?;
    let sig = read(MANIFEST_SIG, 4096)?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let trust = TrustPolicy::of_host(rt, &[])?;
    let (signer, status, trusted) = match &sig {
        None => (None, "unsigned".to_string(), false),
        Some(t) => match verify(t, &body, &trust.keys) {
            Ok(s) => (Some(s.key_id), "valid, by a trusted key".to_string(), true),
            Err(Rejected::UntrustedKey(id)) => (Some(id), "signed by a key this host does not trust".to_string(), false),
            Err(Rejected::BadSignature(id)) => (Some(id), "INVALID: the manifest was altered".to_string(), false),
            Err(Rejected::Malformed(w)) => (signer_id(t), format!("unreadable: {w}"), false),
        },
    };
    Ok(serde_json::json!({
        "archive": file,
        "name": m.name,
        "format_version": m.format_version,
        "criu_version": m.criu_version,
        "kernel": m.kernel,
        "dumped_at": m.dumped_at,
        "exported_at": m.exported_at,
        "command": m.command,
        "files": m.files.len(),
        "bytes": m.files.iter().fold(0u64, |t, f| t.saturating_add(f.size)),
        "signature": {"signed_by": signer, "status": status, "trusted": trusted, "unsigned_refused_here": trust.require_signature},
    }))
}

/// Unpacks `reader` into `staging` under the rules of the module docs.
/// Returns the manifest and the unpacked log, if any.
/// What an archive unpacked to.
#[derive(Debug)]
struct Unpacked {
    manifest: Manifest,
    log: Option<PathBuf>,
    /// The key id that signed the manifest (trusted by the policy).
    signer: Option<String>,
}

fn unpack(file: &Path, reader: Box<dyn Read>, staging: &Path, max_total: u64, trust: &TrustPolicy) -> Result<Unpacked> {
    let mut ar = tar::Archive::new(reader);
    let mut entries = ar.entries().map_err(|e| refuse(file, format!("unreadable archive: {e}")))?;
    let (manifest, body) = read_manifest(file, &mut entries, staging, max_total)?;
    // 2. Its signature, if any, judged before anything else is written.
    let mut pending = entries.next();
    let mut sig_text = None;
    if matches!(&pending, Some(Ok(e)) if e.path_bytes().as_ref() == MANIFEST_SIG.as_bytes()) {
        if let Some(Ok(mut e)) = pending.take() {
            if e.header().entry_type() != tar::EntryType::Regular || e.size() > 4096 {
                return Err(refuse(file, "its signature entry is not a small regular file"));
            }
            let mut t = String::new();
            e.read_to_string(&mut t).map_err(|err| refuse(file, format!("its signature is truncated or corrupt: {err}")))?;
            sig_text = Some(t);
        }
        pending = entries.next();
    }
    let signer = trust.judge(file, &body, sig_text.as_deref())?;
    let log = unpack_files(file, pending.into_iter().chain(entries), &manifest, staging)?;
    Ok(Unpacked { manifest, log, signer })
}

/// The manifest, first entry of the archive, checked against the limits
/// and free space; returned with its exact bytes (what a signature covers).
fn read_manifest<R: Read>(file: &Path, entries: &mut tar::Entries<'_, R>, staging: &Path, max_total: u64) -> Result<(Manifest, Vec<u8>)> {
    let mut body = Vec::new();
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
        e.read_to_end(&mut body).map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        serde_json::from_slice(&body).map_err(|err| refuse(file, format!("its manifest is corrupt: {err}")))?
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
    if let Some(f) = manifest.files.iter().find(|f| !allowed_path(&f.path)) {
        return Err(refuse(file, format!("its manifest lists {:?}, which is not a plain image or log name", f.path)));
    }
    Ok((manifest, body))
}

/// Every other entry: a listed regular file at a plain name, its SHA-256
/// computed as it streams into `staging`. Returns the unpacked log.
fn unpack_files<'a, R: Read + 'a>(file: &Path, entries: impl Iterator<Item = io::Result<tar::Entry<'a, R>>>, manifest: &Manifest, staging: &Path) -> Result<Option<PathBuf>> {
    let listed: std::collections::BTreeMap<String, (u64, String)> = manifest.files.iter().map(|f| (f.path.clone(), (f.size, f.sha256.clone()))).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut log = None;
    for e in entries {
        let mut e = e.map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        let raw = e.path_bytes().into_owned();
        let path = String::from_utf8(raw).map_err(|_| refuse(file, "an entry name is not UTF-8"))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(file, format!("entry {path:?} is a {:?}, only regular files are allowed", e.header().entry_type())));
        }
        let Some((size, sha)) = listed.get(&path).filter(|_| allowed_path(&path)).cloned() else {
            return Err(refuse(file, format!("entry {path:?} is not a listed image or log file")));
        };
        if e.size() != size || !seen.insert(path.clone()) {
            return Err(refuse(file, format!("entry {path:?} does not match the manifest")));
        }
        let (dir, base) = path.split_once('/').unwrap_or(("", &path));
        let target = if dir == "log" { staging.join(format!(".log.{base}")) } else { staging.join(base) };
        let out = fs::OpenOptions::new().write(true).create_new(true).mode_private().open(&target).with_context(|| format!("cannot write {}", target.display()))?;
        let mut out = Hashing { inner: out, hash: <sha2::Sha256 as sha2::Digest>::new() };
        let n = io::copy(&mut (&mut e).take(size), &mut out).map_err(|err| refuse(file, format!("it is truncated or corrupt: {err}")))?;
        if n != size {
            return Err(refuse(file, format!("it is truncated: {path} has {n} of {size} bytes")));
        }
        if hex(&sha2::Digest::finalize(out.hash)) != sha {
            return Err(Error::new(ErrorKind::Archive, format!("cannot import {}: {path} was altered (its SHA-256 differs from the manifest's)", file.display()))
                .with_hint("get the archive again from its author; do not restore it"));
        }
        if dir == "log" {
            log = Some(target);
        }
    }
    if seen.len() != listed.len() {
        let missing: Vec<&String> = listed.keys().filter(|p| !seen.contains(*p)).collect();
        return Err(refuse(file, format!("it is truncated: missing {missing:?}")));
    }
    Ok(log)
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
        let sha = |b: &[u8]| hex(&<sha2::Sha256 as sha2::Digest>::digest(b));
        let files = vec![
            FileEntry { path: "images/inventory.img".into(), size: 12, sha256: sha(&[7u8; 12]) },
            FileEntry { path: "images/pages-1.img".into(), size: 4096, sha256: sha(&[1u8; 4096]) },
            FileEntry { path: "log/w.log".into(), size: 5, sha256: sha(b"hello") },
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
            let r = unpack(&file, Box::new(std::io::Cursor::new(data)), &staging, limit, &TrustPolicy::default());
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
        assert!(unpack(&file, Box::new(std::io::Cursor::new(good)), &staging, limit, &TrustPolicy::default()).is_ok());
        assert!(accepted < 3000, "no mutation was refused");
    }

    #[test]
    fn manifest_sizes_that_overflow_are_refused() {
        let parent = tempfile::tempdir().expect("tmp");
        let m = serde_json::json!({
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": "w", "cns_version": "0", "criu_version": "4.2.1",
            "kernel": "k", "dumped_at": 0, "exported_at": 0, "tcp_established": false, "file_locks": false,
            "ext_unix_sk": false, "shell_job": false, "command": [], "net_mode": "veth",
            "files": [{"path": "images/a.img", "size": u64::MAX, "sha256": ""}, {"path": "images/b.img", "size": 2, "sha256": ""}]
        });
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let sink: Box<dyn Write> = Box::new(tmp.reopen().expect("reopen"));
        let mut tar = tar::Builder::new(sink);
        let body = serde_json::to_vec(&m).expect("json");
        append(&mut tar, MANIFEST, body.len() as u64, &mut body.as_slice()).expect("manifest");
        tar.into_inner().expect("finish").flush().expect("flush");
        let out = fs::read(tmp.path()).expect("read");
        let e = unpack(Path::new("x"), Box::new(std::io::Cursor::new(out)), parent.path(), 1 << 30, &TrustPolicy::default()).expect_err("overflow");
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
