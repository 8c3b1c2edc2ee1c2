//! The migration protocol between `cns migrate` (the source) and `cns
//! receive` (the destination, started by the source through ssh), over
//! ssh's stdin and stdout. Documented in docs/migration.md.
//!
//! Every message is a frame: one byte of kind, a big-endian u32 length,
//! then that many bytes (JSON for the control messages, raw bytes for file
//! data). A frame is at most [`MAX_FRAME`] bytes.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol's version, in the hello.
pub const PROTOCOL: u32 = 1;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 4 << 20;
/// File data travels in frames of this size.
pub const CHUNK: usize = 1 << 20;

pub const HELLO: u8 = b'H';
pub const ANSWER: u8 = b'A';
pub const FILE: u8 = b'F';
pub const DATA: u8 = b'D';
pub const FILE_END: u8 = b'E';
pub const RESTORE: u8 = b'S';
/// Source -> destination: start a page server for the coming dump.
pub const PAGE_SERVER: u8 = b'G';
/// Page-server traffic: CRIU's dump to the page server (`P`) and back (`p`).
pub const PAGES: u8 = b'P';
pub const PAGES_BACK: u8 = b'p';
/// Destination -> source: the page server has ended (JSON: PageServerEnd).
pub const PAGES_DONE: u8 = b'Q';
/// Post-copy (`--lazy`): the destination's lazy-pages daemon asks the
/// source's page server for memory (`L`) and gets it back (`l`).
pub const LAZY_ASK: u8 = b'L';
pub const LAZY_PAGES: u8 = b'l';
/// Destination -> source: the lazy-pages daemon has ended (JSON: LazyEnd).
pub const LAZY_DONE: u8 = b'Z';

pub fn write_frame(w: &mut dyn Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut dyn Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes (at most {MAX_FRAME})")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

pub fn send<T: Serialize>(w: &mut dyn Write, kind: u8, msg: &T) -> io::Result<()> {
    let b = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, kind, &b)?;
    w.flush()
}

/// Reads a frame that must be of `kind`, as JSON.
pub fn expect<T: for<'de> Deserialize<'de>>(r: &mut dyn Read, kind: u8) -> io::Result<T> {
    match read_frame(r)? {
        Some((k, b)) if k == kind => serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Some((k, _)) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("expected a '{}' frame, got '{}'", kind as char, k as char))),
        None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the other side closed the connection")),
    }
}

/// Carries a page-server socket's bytes into frames of `kind` on `out`
/// (each flushed: the other side's CRIU waits for them), until `from`
/// ends. Returns the bytes carried; `sent` (when given) follows them live.
/// An error is the channel's: `out` could not be written.
pub fn forward<W: Write>(from: &mut dyn Read, out: &std::sync::Mutex<W>, kind: u8, sent: Option<&std::sync::atomic::AtomicU64>) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(total),
            Ok(n) => n,
        };
        let mut w = out.lock().map_err(|_| io::Error::other("the channel's lock is poisoned"))?;
        write_frame(&mut *w, kind, &buf[..n])?;
        w.flush()?;
        total += n as u64;
        if let Some(s) = sent {
            s.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A file the checkpoint will need on the destination (an executable or a
/// mapped library), as the source sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeededFile {
    pub path: String,
    pub size: u64,
}

/// Source -> destination, before anything is frozen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub name: String,
    pub criu_version: String,
    /// Resident memory of the tree: about what the images will take.
    pub memory_bytes: u64,
    pub files: Vec<NeededFile>,
    /// The workload's address, kept on the destination when it is free.
    pub address: Option<cns_netns::LinkAddrs>,
    /// Ports published again on the destination (`[HOSTIP:]HOSTPORT:PORT`).
    pub publish: Vec<String>,
    /// Its root directory (`--rootfs`), which must exist on the destination.
    pub rootfs: Option<PathBuf>,
    /// Its bind mounts (`SRC:DST`), whose sources must exist there.
    pub binds: Vec<String>,
    /// Post-copy: the destination must be able to restore lazily.
    #[serde(default)]
    pub lazy: bool,
    /// The source's `criu cpuinfo dump` (cpuinfo.img, base64): the
    /// destination's `criu cpuinfo check` says whether its CPU has what the
    /// workload may use.
    #[serde(default)]
    pub cpuinfo: Option<String>,
}

/// Destination -> source: the pre-check's answer, and the restore's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub message: String,
    pub hint: String,
    /// Pre-check: the destination can give the workload its address.
    pub keeps_address: bool,
    /// Restore: the restored root's PID and address on the destination.
    pub pid: Option<i32>,
    pub ip: Option<String>,
}

impl Answer {
    pub fn refuse(e: &crate::Error) -> Answer {
        Answer { ok: false, message: e.one_line(), hint: e.hint().unwrap_or_default(), ..Default::default() }
    }
}

/// One image file follows in DATA frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileHeader {
    pub name: String,
    pub size: u64,
    /// Only these byte ranges (offset, length) follow, in order; the rest
    /// of the file is a hole (the pages a lazy restore gets on demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<(u64, u64)>>,
}

/// After a file's data: its SHA-256, checked on arrival.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEnd {
    pub sha256: String,
}

/// The destination's page server ended; `ok` when it exited cleanly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageServerEnd {
    pub ok: bool,
    pub message: String,
}

/// The destination's lazy-pages daemon has ended: `ok` when every page is
/// in and the workload runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LazyEnd {
    pub ok: bool,
    pub message: String,
}

/// Source -> destination: start a page server (PAGE_SERVER). Pre-copy
/// rounds each go into a directory of their own (`dir`, a plain name in the
/// staging directory); `parent` names the previous round, whose pages the
/// new ones are relative to. Both absent: the final dump, without parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PageServerRequest {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
}

/// Every file sent: restore now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub keep_address: bool,
    /// Post-copy: restore at once, the memory pulled from the source.
    #[serde(default)]
    pub lazy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut b = Vec::new();
        write_frame(&mut b, DATA, b"abc").expect("write");
        send(&mut b, RESTORE, &RestoreRequest { keep_address: true, lazy: false }).expect("send");
        let mut r = &b[..];
        assert_eq!(read_frame(&mut r).expect("read"), Some((DATA, b"abc".to_vec())));
        let req: RestoreRequest = expect(&mut r, RESTORE).expect("restore");
        assert!(req.keep_address);
        assert_eq!(read_frame(&mut r).expect("eof"), None);
        let mut big = vec![DATA];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
        // A stream cut inside a frame is an error, not a clean end.
        assert!(read_frame(&mut &b[..4]).is_err());
    }
}
