//! The image directory: CRIU's images plus cns's own metadata, and readers
//! for the few CRIU images cns looks into (stats, pstree, files, inventory).
//!
//! CRIU image files start with two little-endian u32 magics (common or
//! service magic, then the image type) followed by entries, each a u32 length
//! and a protobuf message.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto;

/// CRIU's magic for ordinary images.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// CRIU's magic for service images (stats, irmap cache).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// `inventory.img` type magic.
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;

/// Name of cns's metadata file inside an image directory.
pub const META_FILE: &str = "cns.json";
/// CRIU log of the dump, inside the image directory.
pub const DUMP_LOG: &str = "dump.log";

/// Errors reading an image directory.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image directory {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} holds no checkpoint (no inventory.img)")]
    Empty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a CRIU image ({what})")]
    Corrupt { path: PathBuf, what: String },
}

/// An image directory on disk.
#[derive(Debug, Clone)]
pub struct ImageDir {
    pub path: PathBuf,
}

/// CRIU's dump statistics (stats-dump.img), times in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DumpStats {
    pub freezing_time_us: u64,
    pub frozen_time_us: u64,
    pub memdump_time_us: u64,
    pub memwrite_time_us: u64,
    pub pages_scanned: u64,
    pub pages_written: u64,
    pub image_bytes: u64,
}

/// CRIU's restore statistics (stats-restore.img), times in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RestoreStats {
    pub forking_time_us: u64,
    pub restore_time_us: u64,
    pub pages_restored: u64,
    pub pages_compared: u64,
}

/// One process of the dumped tree (pstree.img), pids as seen inside the pid ns.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TreeEntry {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub threads: usize,
}

/// A regular file the image refers to (files.img).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ImageFile {
    /// CRIU's file id (remaps refer to it).
    pub id: u32,
    pub path: String,
    /// The open flags (O_PATH, O_NOFOLLOW, ...).
    pub flags: u32,
    /// The mount the file was reached through (-1: unknown).
    pub mnt_id: i32,
    /// An external file (`--external file[...]`), not looked up by path.
    pub ext: bool,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub build_id: Vec<u32>,
}

/// A mount of the dumped mount namespace (mountpoints-*.img).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ImageMount {
    pub mnt_id: u32,
    /// CRIU's fstype (1 proc, 2 sysfs, 3 devtmpfs, 5 tmpfs, 6 devpts, 14 mqueue, ...).
    pub fstype: u32,
    pub root_dev: u32,
    /// The mount's root within its filesystem (a bind mount's source path).
    pub root: String,
    pub mountpoint: String,
    /// Declared external (`--external mnt[...]`): CRIU maps it, never looks it up.
    pub external: bool,
}

/// CRIU's remap kinds.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub enum RemapKind {
    /// Unlinked but still linked elsewhere (`--link-remap`): a link CRIU made.
    Linked,
    /// Unlinked: the content travels in the image.
    Ghost,
    /// A /proc path CRIU resolves itself.
    Procfs,
    Other(u32),
}

/// A file CRIU does not look up by its own path at restore (remap-fpath.img).
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct Remap {
    pub orig_id: u32,
    pub remap_id: u32,
    pub kind: RemapKind,
}

/// The largest metadata image (anything but pages) cns reads into memory:
/// an image directory may come from an archive, and a crafted one must not
/// make cns allocate without bound.
pub const MAX_META_IMAGE: u64 = 64 << 20;

/// Reads a metadata image, refusing one larger than [`MAX_META_IMAGE`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let f = fs::File::open(path).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })?;
    let mut data = Vec::new();
    f.take(MAX_META_IMAGE + 1).read_to_end(&mut data).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })?;
    if data.len() as u64 > MAX_META_IMAGE {
        return Err(ImageError::Corrupt { path: path.to_path_buf(), what: format!("larger than {} MiB, the most a metadata image may be", MAX_META_IMAGE >> 20) });
    }
    Ok(data)
}

/// Splits a CRIU image into its protobuf entries (pure; unit-tested).
pub fn split_entries(data: &[u8]) -> Result<(u32, u32, Vec<&[u8]>), String> {
    if data.len() < 8 {
        return Err(format!("{} bytes, shorter than the 8-byte header", data.len()));
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let (first, second) = (word(0), word(4));
    // inventory.img, the head image, carries only its own magic.
    let (first, second, mut off) = if first == INVENTORY_MAGIC {
        (IMG_COMMON_MAGIC, INVENTORY_MAGIC, 4)
    } else if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
        (first, second, 8)
    } else {
        return Err(format!("bad magic {first:#x}"));
    };
    let mut entries = Vec::new();
    while off < data.len() {
        if off + 4 > data.len() {
            return Err(format!("truncated entry header at byte {off}"));
        }
        let len = word(off) as usize;
        off += 4;
        let end = off.checked_add(len).filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(format!("entry at byte {off} claims {len} bytes, file ends first"));
        };
        entries.push(&data[off..end]);
        off = end;
    }
    Ok((first, second, entries))
}

impl ImageDir {
    pub fn new(path: impl Into<PathBuf>) -> ImageDir {
        ImageDir { path: path.into() }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Checks the directory exists and holds a checkpoint whose inventory parses.
    pub fn validate(&self) -> Result<(), ImageError> {
        let meta = fs::metadata(&self.path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::Missing(self.path.clone()),
            _ => ImageError::Io { path: self.path.clone(), source: e },
        })?;
        if !meta.is_dir() {
            return Err(ImageError::NotADirectory(self.path.clone()));
        }
        let inv = self.file("inventory.img");
        if !inv.exists() {
            return Err(ImageError::Empty(self.path.clone()));
        }
        self.inventory()?;
        self.tree()?;
        // Truncated page data is the other common corruption: pagemap says how
        // many pages there must be.
        self.check_pages()?;
        Ok(())
    }

    fn read_entries<M: Message + Default>(&self, name: &str) -> Result<Vec<M>, ImageError> {
        let path = self.file(name);
        let data = read_bounded(&path)?;
        let (_, _, raw) = split_entries(&data).map_err(|what| ImageError::Corrupt { path: path.clone(), what })?;
        raw.into_iter()
            .map(|e| M::decode(e).map_err(|err| ImageError::Corrupt { path: path.clone(), what: err.to_string() }))
            .collect()
    }

    /// inventory.img.
    pub fn inventory(&self) -> Result<proto::InventoryEntry, ImageError> {
        let path = self.file("inventory.img");
        let data = read_bounded(&path)?;
        let (_, magic, raw) = split_entries(&data).map_err(|what| ImageError::Corrupt { path: path.clone(), what })?;
        if magic != INVENTORY_MAGIC {
            return Err(ImageError::Corrupt { path, what: format!("type magic {magic:#x} is not the inventory's") });
        }
        let first = raw.first().ok_or_else(|| ImageError::Corrupt { path: path.clone(), what: "no entry".into() })?;
        proto::InventoryEntry::decode(*first).map_err(|e| ImageError::Corrupt { path, what: e.to_string() })
    }

    /// The dumped process tree (pstree.img).
    pub fn tree(&self) -> Result<Vec<TreeEntry>, ImageError> {
        let entries: Vec<proto::PstreeEntry> = self.read_entries("pstree.img")?;
        if entries.is_empty() {
            return Err(ImageError::Corrupt { path: self.file("pstree.img"), what: "no process".into() });
        }
        Ok(entries
            .into_iter()
            .map(|e| TreeEntry { pid: e.pid, ppid: e.ppid, pgid: e.pgid, sid: e.sid, threads: e.threads.len() })
            .collect())
    }

    /// Regular files the image references (files.img).
    pub fn files(&self) -> Result<Vec<ImageFile>, ImageError> {
        let entries: Vec<proto::FileEntry> = self.read_entries("files.img")?;
        Ok(entries
            .into_iter()
            .filter_map(|e| e.reg)
            .map(|r| ImageFile {
                id: r.id,
                path: r.name,
                flags: r.flags,
                mnt_id: r.mnt_id.unwrap_or(-1),
                ext: r.ext.unwrap_or(false),
                size: r.size,
                mode: r.mode,
                build_id: r.build_id,
            })
            .collect())
    }

    /// Files CRIU remaps (remap-fpath.img; none when it is absent).
    pub fn remaps(&self) -> Result<Vec<Remap>, ImageError> {
        if !self.file("remap-fpath.img").exists() {
            return Ok(Vec::new());
        }
        let entries: Vec<proto::RemapFilePathEntry> = self.read_entries("remap-fpath.img")?;
        Ok(entries
            .into_iter()
            .map(|e| Remap {
                orig_id: e.orig_id,
                remap_id: e.remap_id,
                kind: match e.remap_type.unwrap_or(0) {
                    0 => RemapKind::Linked,
                    1 => RemapKind::Ghost,
                    2 => RemapKind::Procfs,
                    n => RemapKind::Other(n),
                },
            })
            .collect())
    }

    /// Every mount of every dumped mount namespace (mountpoints-*.img).
    pub fn mounts(&self) -> Result<Vec<ImageMount>, ImageError> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.path).map_err(|source| ImageError::Io { path: self.path.clone(), source })?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("mountpoints-") && name.ends_with(".img")) {
                continue;
            }
            let entries: Vec<proto::MntEntry> = self.read_entries(&name)?;
            out.extend(entries.into_iter().map(|m| ImageMount {
                mnt_id: m.mnt_id,
                fstype: m.fstype,
                root_dev: m.root_dev,
                root: m.root,
                mountpoint: m.mountpoint,
                external: m.ext_mount.unwrap_or(false) || m.ext_key.is_some_and(|k| !k.is_empty()),
            }));
        }
        Ok(out)
    }

    /// Counts of fd kinds in files.img (type number → count), for inspect.
    pub fn file_kinds(&self) -> Result<std::collections::BTreeMap<&'static str, usize>, ImageError> {
        let entries: Vec<proto::FileEntry> = self.read_entries("files.img")?;
        let mut m = std::collections::BTreeMap::new();
        for e in entries {
            let kind = match e.r#type {
                1 => "regular",
                2 => "pipe",
                3 => "fifo",
                4 => "inet-socket",
                5 => "unix-socket",
                6 => "eventfd",
                7 => "eventpoll",
                8 => "inotify",
                9 => "signalfd",
                10 => "packet-socket",
                11 => "tun",
                12 => "timerfd",
                14 => "netlink-socket",
                15 => "ns-file",
                17 => "tty",
                _ => "other",
            };
            *m.entry(kind).or_insert(0) += 1;
        }
        Ok(m)
    }

    /// Bytes of memory pages in the image (all pages-*.img).
    pub fn page_bytes(&self) -> Result<u64, ImageError> {
        let mut total: u64 = 0;
        for entry in fs::read_dir(&self.path).map_err(|source| ImageError::Io { path: self.path.clone(), source })? {
            let entry = entry.map_err(|source| ImageError::Io { path: self.path.clone(), source })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("pages-") && name.ends_with(".img") {
                total = entry.metadata().map_or(total, |m| total.saturating_add(m.len()));
            }
        }
        Ok(total)
    }

    /// Total size of the CRIU images (not logs or cns metadata).
    pub fn image_bytes(&self) -> Result<u64, ImageError> {
        let mut total = 0;
        for entry in fs::read_dir(&self.path).map_err(|source| ImageError::Io { path: self.path.clone(), source })? {
            let entry = entry.map_err(|source| ImageError::Io { path: self.path.clone(), source })?;
            if entry.file_name().to_string_lossy().ends_with(".img") {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Every pagemap of the image: its pages file and its entries.
    fn pagemaps(&self) -> Result<Vec<Pagemap>, ImageError> {
        let rd = fs::read_dir(&self.path).map_err(|source| ImageError::Io { path: self.path.clone(), source })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("pagemap-").and_then(|s| s.strip_suffix(".img")) else { continue };
            let path = entry.path();
            let data = read_bounded(&path)?;
            let (_, _, raw) = split_entries(&data).map_err(|what| ImageError::Corrupt { path: path.clone(), what })?;
            // First entry is pagemap_head {pages_id = 1}; the rest pagemap_entry
            // {vaddr = 1, compat_nr_pages = 2, flags = 4, nr_pages = 5}.
            let mut pages_id = None;
            let mut entries = Vec::new();
            for (i, e) in raw.iter().enumerate() {
                let fields = decode_varint_fields(e);
                if i == 0 {
                    pages_id = fields.iter().find(|(f, _)| *f == 1).map(|(_, v)| *v);
                } else {
                    let nr = fields
                        .iter()
                        .find(|(f, _)| *f == 5)
                        .or_else(|| fields.iter().find(|(f, _)| *f == 2))
                        .map_or(0, |(_, v)| *v);
                    let flags = fields.iter().find(|(f, _)| *f == 4).map_or(0, |(_, v)| *v);
                    entries.push((nr, flags));
                }
            }
            let pages = match pages_id {
                Some(pid) => format!("pages-{pid}.img"),
                None => format!("pages-{id}.img"),
            };
            out.push(Pagemap { path, pages, entries });
        }
        Ok(out)
    }

    /// Checks every pagemap's page count against its pages file.
    fn check_pages(&self) -> Result<(), ImageError> {
        for m in self.pagemaps()? {
            let mut pages = 0u64;
            for &(nr, flags) in &m.entries {
                if in_pages_file(flags) {
                    pages = pages.checked_add(nr).ok_or_else(|| ImageError::Corrupt { path: m.path.clone(), what: "page counts overflow".into() })?;
                }
            }
            let pages_path = self.file(&m.pages);
            let have = fs::metadata(&pages_path).map(|m| m.len()).unwrap_or(0);
            let want = pages.checked_mul(page_size()).ok_or_else(|| ImageError::Corrupt { path: m.path.clone(), what: format!("{pages} pages overflow") })?;
            if have < want {
                let name = m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                return Err(ImageError::Corrupt {
                    path: pages_path,
                    what: format!("holds {have} bytes but {name} lists {want}: truncated"),
                });
            }
        }
        Ok(())
    }

    /// The byte ranges of each pages file that a lazy restore reads itself
    /// (pages CRIU cannot serve on demand: stacks, shared memory, ...); the
    /// rest of the file is left to the lazy-pages daemon. Pages files with
    /// no such range are listed with none.
    pub fn eager_ranges(&self) -> Result<std::collections::BTreeMap<String, Vec<(u64, u64)>>, ImageError> {
        let ps = page_size();
        let mut out: std::collections::BTreeMap<String, Vec<(u64, u64)>> = std::collections::BTreeMap::new();
        for m in self.pagemaps()? {
            let ranges = out.entry(m.pages.clone()).or_default();
            let mut offset = 0u64;
            for &(nr, flags) in &m.entries {
                if !in_pages_file(flags) {
                    continue;
                }
                let len = nr.checked_mul(ps).ok_or_else(|| ImageError::Corrupt { path: m.path.clone(), what: format!("{nr} pages overflow") })?;
                if flags & PE_LAZY == 0 {
                    match ranges.last_mut() {
                        Some((o, l)) if *o + *l == offset => *l += len,
                        _ => ranges.push((offset, len)),
                    }
                }
                offset = offset.checked_add(len).ok_or_else(|| ImageError::Corrupt { path: m.path.clone(), what: "page offsets overflow".into() })?;
            }
        }
        Ok(out)
    }

    /// Reads stats-dump.img.
    pub fn dump_stats(&self) -> Result<DumpStats, ImageError> {
        let entries: Vec<proto::StatsEntry> = self.read_entries("stats-dump")?;
        let d = entries.into_iter().find_map(|e| e.dump).unwrap_or_default();
        Ok(DumpStats {
            freezing_time_us: d.freezing_time.into(),
            frozen_time_us: d.frozen_time.into(),
            memdump_time_us: d.memdump_time.into(),
            memwrite_time_us: d.memwrite_time.into(),
            pages_scanned: d.pages_scanned,
            pages_written: d.pages_written,
            image_bytes: self.image_bytes()?,
        })
    }

    /// Reads stats-restore.img.
    pub fn restore_stats(&self) -> Result<RestoreStats, ImageError> {
        let entries: Vec<proto::StatsEntry> = self.read_entries("stats-restore")?;
        let r = entries.into_iter().find_map(|e| e.restore).unwrap_or_default();
        Ok(RestoreStats {
            forking_time_us: r.forking_time.into(),
            restore_time_us: r.restore_time.into(),
            pages_restored: r.pages_restored.unwrap_or(0),
            pages_compared: r.pages_compared,
        })
    }
}

/// A pagemap image: its pages file and (pages, flags) per entry.
struct Pagemap {
    path: PathBuf,
    pages: String,
    entries: Vec<(u64, u64)>,
}

/// pagemap_entry flags (CRIU's pagemap.h).
const PE_LAZY: u64 = 1 << 1;
const PE_PRESENT: u64 = 1 << 2;

/// Whether an entry's pages are in the pages file (not in a parent image,
/// not a hole). Old images have no flags: present.
fn in_pages_file(flags: u64) -> bool {
    flags & PE_PRESENT != 0 || flags == 0
}

/// The system page size.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as u64)
}

/// Decodes the varint fields of a flat protobuf message (field number, value);
/// other wire types are skipped. Enough for pagemap entries.
fn decode_varint_fields(mut b: &[u8]) -> Vec<(u32, u64)> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let (field, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => match varint(&mut b) {
                Some(v) => out.push((field, v)),
                None => break,
            },
            1 => b = b.get(8..).unwrap_or_default(),
            5 => b = b.get(4..).unwrap_or_default(),
            2 => {
                let Some(len) = varint(&mut b) else { break };
                b = b.get(len as usize..).unwrap_or_default();
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: u32, ty: u32, entries: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&magic.to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        for e in entries {
            v.extend_from_slice(&(e.len() as u32).to_le_bytes());
            v.extend_from_slice(e);
        }
        v
    }

    #[test]
    fn splits_entries() {
        let data = image(IMG_COMMON_MAGIC, 0x5027_3030, &[b"ab", b"", b"xyz"]);
        let (m, t, e) = split_entries(&data).expect("split");
        assert_eq!((m, t), (IMG_COMMON_MAGIC, 0x5027_3030));
        assert_eq!(e, vec![&b"ab"[..], &b""[..], &b"xyz"[..]]);
        // inventory.img: one magic, then entries
        let mut inv = INVENTORY_MAGIC.to_le_bytes().to_vec();
        inv.extend_from_slice(&2u32.to_le_bytes());
        inv.extend_from_slice(b"hi");
        let (_, t, e) = split_entries(&inv).expect("inventory");
        assert_eq!((t, e), (INVENTORY_MAGIC, vec![&b"hi"[..]]));
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        assert!(split_entries(&image(0x1234, 1, &[])).is_err());
        let mut data = image(IMG_SERVICE_MAGIC, 1, &[b"abcdef"]);
        data.truncate(data.len() - 2);
        assert!(split_entries(&data).expect_err("truncated").contains("ends first"));
        assert!(split_entries(&[1, 2, 3]).is_err());
    }

    #[test]
    fn decodes_pagemap_fields() {
        // vaddr=1 (field 1), nr_pages=3 (field 2), flags=4 (field 4)
        let msg = [0x08, 0x01, 0x10, 0x03, 0x20, 0x04];
        assert_eq!(decode_varint_fields(&msg), vec![(1, 1), (2, 3), (4, 4)]);
    }

    #[test]
    fn stats_round_trip_through_prost() {
        let s = proto::StatsEntry {
            dump: Some(proto::DumpStatsEntry { freezing_time: 7, pages_written: 9, ..Default::default() }),
            restore: None,
        };
        let buf = s.encode_to_vec();
        let data = image(IMG_SERVICE_MAGIC, 0x5709_3306, &[&buf]);
        let (_, _, e) = split_entries(&data).expect("split");
        let back = proto::StatsEntry::decode(e[0]).expect("decode");
        assert_eq!(back.dump.map(|d| (d.freezing_time, d.pages_written)), Some((7, 9)));
    }

    #[test]
    fn lazy_restores_read_only_the_pages_not_marked_lazy() {
        // pagemap_entry {vaddr = 1, flags = 4, nr_pages = 5}; PE_LAZY 2, PE_PRESENT 4.
        let entry = |nr: u8, flags: u8| vec![0x08, 0x01, 0x20, flags, 0x28, nr];
        let dir = tempfile::tempdir().expect("tmp");
        let head = [0x08, 0x07]; // pages_id = 7
        let (lazy, eager, parent) = (entry(2, 6), entry(1, 4), entry(5, 1));
        let entries: Vec<&[u8]> = vec![&head, &lazy, &eager, &parent, &eager, &lazy, &eager];
        std::fs::write(dir.path().join("pagemap-42.img"), image(IMG_COMMON_MAGIC, 0x5620_5531, &entries)).expect("pagemap");
        let ranges = ImageDir::new(dir.path()).eager_ranges().expect("ranges");
        let ps = page_size();
        // Offsets count only the pages in the file: the parent's are not.
        // The two eager pages after the first lazy run are adjacent: one range.
        assert_eq!(ranges.get("pages-7.img"), Some(&vec![(2 * ps, 2 * ps), (6 * ps, ps)]));
    }

    #[test]
    fn mutated_images_never_panic_and_overflowing_page_counts_are_corrupt() {
        // A pagemap whose entry claims u64::MAX pages: refused, not wrapped.
        let dir = tempfile::tempdir().expect("tmp");
        let head = [0x08, 0x01]; // pages_id = 1
        let mut huge = vec![0x08, 0x01, 0x28];
        let mut v = u64::MAX;
        while v >= 0x80 {
            huge.push((v as u8) | 0x80);
            v >>= 7;
        }
        huge.push(v as u8);
        huge.extend_from_slice(&[0x20, 0x04]);
        std::fs::write(dir.path().join("pagemap-1.img"), image(IMG_COMMON_MAGIC, 0x5620_5531, &[&head, &huge, &huge])).expect("pagemap");
        std::fs::write(dir.path().join("pages-1.img"), [0u8; 16]).expect("pages");
        let e = ImageDir::new(dir.path()).check_pages().expect_err("overflow");
        assert!(e.to_string().contains("overflow"), "{e}");
        // Random mutations of a valid pagemap: errors, never panics.
        let good = image(IMG_COMMON_MAGIC, 0x5620_5531, &[&head, &[0x08, 0x01, 0x28, 0x02, 0x20, 0x04]]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut data = good.clone();
            if round % 2 == 0 {
                data.truncate((x as usize) % good.len());
            } else {
                let i = (x as usize) % data.len();
                data[i] = (x >> 32) as u8;
            }
            let _ = split_entries(&data);
            std::fs::write(dir.path().join("pagemap-1.img"), &data).expect("write");
            let _ = ImageDir::new(dir.path()).check_pages();
        }
    }

    #[test]
    fn metadata_images_are_read_within_a_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("big.img");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(MAX_META_IMAGE + 1).expect("sparse");
        let e = read_bounded(&p).expect_err("too big");
        assert!(e.to_string().contains("MiB"), "{e}");
        f.set_len(16).expect("small");
        assert_eq!(read_bounded(&p).expect("small").len(), 16);
    }
}
