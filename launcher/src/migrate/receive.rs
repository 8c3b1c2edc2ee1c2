//! `cns receive`: the destination of a migration, started by the source's
//! `cns migrate` through ssh. It answers the pre-check (before the source
//! freezes anything), receives the images into a staging directory of its
//! own (each file's name checked, its SHA-256 compared on arrival), and
//! restores them detached. Anything short of a running workload leaves
//! nothing behind here, and the source resumes its own.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::checkpoint::restore::{self, RestoreOptions};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::migrate::wire::{self, Answer, FileEnd, FileHeader, Hello, NeededFile, RestoreRequest};
use crate::runtime::{NoEvents, Runtime};

/// ssh's stdout, shared with the page server's pump.
type Out = Arc<Mutex<Box<dyn Write + Send>>>;

fn say<T: serde::Serialize>(out: &Out, kind: u8, msg: &T) -> Result<()> {
    let mut w = out.lock().map_err(|_| Error::msg("the output lock is poisoned"))?;
    wire::send(&mut *w, kind, msg).context("the source went away")
}

/// Serves one migration on `input`/`output` (ssh's stdin and stdout).
pub fn receive(rt: &Runtime, input: &mut (dyn Read + Send), output: Box<dyn Write + Send>) -> Result<()> {
    rt.require_root()?;
    let output: Out = Arc::new(Mutex::new(output));
    let hello: Hello = wire::expect(input, wire::HELLO).context("no migration request arrived")?;
    let keeps_address = match precheck(rt, &hello) {
        Ok(k) => k,
        Err(e) => {
            let _ = say(&output, wire::ANSWER, &Answer::refuse(&e));
            return Err(e);
        }
    };
    say(&output, wire::ANSWER, &Answer { ok: true, keeps_address, ..Default::default() })?;
    let staging = rt.images_root().join(format!(".receive-{}-{:016x}", hello.name, crate::files::random_u64()));
    crate::files::mkdir_private(&rt.images_root()).with_context(|| format!("cannot create {}", rt.images_root().display()))?;
    std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let mut ps: Option<PageServer> = None;
    let received = receive_files(rt, input, &staging, &output, &mut ps);
    if let Some(p) = ps {
        p.stop();
    }
    let result = match received {
        Ok(req) if req.lazy => return receive_lazy(rt, &hello, &staging, &req, input, &output),
        Ok(req) => restore_received(rt, &hello, &staging, &req, None),
        Err(e) => Err(e),
    };
    finish(&staging, &output, &result);
    result.map(drop)
}

/// The restore's answer to the source; the staging dir goes if it is left.
fn finish(staging: &Path, output: &Out, result: &Result<Answer>) {
    let answer = match result {
        Ok(a) => a.clone(),
        Err(e) => Answer::refuse(e),
    };
    if staging.exists() {
        let _ = std::fs::remove_dir_all(staging);
    }
    let _ = say(output, wire::ANSWER, &answer);
}

/// Post-copy: the workload is restored at once, its lazy-pages daemon
/// pulling memory from the source's page server through the channel
/// (LAZY_ASK frames out, LAZY_PAGES frames in). When the daemon ends, the
/// source hears whether the workload runs on (LAZY_DONE). If the source
/// goes away first, the daemon's stream ends, the daemon fails and the
/// workload is killed (lazy.rs): it cannot run without its memory.
fn receive_lazy(rt: &Runtime, hello: &Hello, staging: &Path, req: &RestoreRequest, input: &mut (dyn Read + Send), output: &Out) -> Result<()> {
    let (daemon_end, ours) = UnixStream::pair().context("cannot make a socket pair")?;
    // The restore forks the workload's monitor, which closes its copy of
    // our end: no other copy may exist (no try_clone), or the daemon's
    // stream would outlive this process.
    let pages = crate::checkpoint::lazy::RemotePages { daemon_end: daemon_end.as_raw_fd(), caller_end: ours.as_raw_fd() };
    let state_dir = rt.store.paths.workload_dir(&hello.name);
    let name = hello.name.clone();
    let sock = &ours;
    std::thread::scope(|s| {
        // Memory from the source into the daemon's socket, until the
        // source closes the channel; then the daemon's stream ends too.
        let down = s.spawn(move || {
            while let Ok(Some((kind, b))) = wire::read_frame(input) {
                if kind != wire::LAZY_PAGES {
                    break;
                }
                let _ = (&mut &*sock).write_all(&b);
            }
            let _ = sock.shutdown(std::net::Shutdown::Both);
        });
        // The daemon's requests to the source, from the restore on (the
        // restore itself may need pages), until the daemon ends.
        let up = s.spawn(move || {
            let _ = wire::forward(&mut &*sock, output, wire::LAZY_ASK, None);
        });
        let result = restore_received(rt, hello, staging, req, Some(pages));
        drop(daemon_end);
        if result.is_err() {
            // No daemon is left to end the stream.
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        finish(staging, output, &result);
        let _ = up.join();
        if result.is_ok() {
            // Whether the workload runs on, with all of its memory.
            let end = lazy_outcome(rt, &name, &state_dir);
            if !end.ok && rt.store.exists(&name) {
                // The copy is dead; the source resumes its own, and a new
                // migration must find the name free here.
                let _ = crate::ops::rm::rm(rt, &crate::ops::rm::RmOptions { name: name.clone(), force: true, keep_images: false });
            }
            let _ = say(output, wire::LAZY_DONE, &end);
        }
        let _ = down.join();
        result.map(drop)
    })
}

/// After the daemon's end: every page in and the workload alive, or not.
fn lazy_outcome(rt: &Runtime, name: &str, state_dir: &Path) -> wire::LazyEnd {
    // The daemon's watcher (in the workload's monitor) clears the marker
    // once it has reaped it, after killing the tree if it failed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::checkpoint::lazy::pending(state_dir).is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let alive = rt.store.get(name).ok().and_then(|w| w.running_pid().ok()).is_some_and(|p| crate::process::stat::process_matches(p, None));
    if alive && crate::checkpoint::lazy::pending(state_dir).is_none() {
        wire::LazyEnd { ok: true, message: String::new() }
    } else {
        wire::LazyEnd { ok: false, message: format!("the workload's memory did not all arrive; {name} was killed here (see its log)") }
    }
}

/// Whether the restore will work here, asked before the source freezes.
/// Returns whether the workload keeps its address.
fn precheck(rt: &Runtime, h: &Hello) -> Result<bool> {
    if h.protocol != wire::PROTOCOL {
        return Err(Error::invalid(format!("the source speaks migration protocol {}, this cns {}", h.protocol, wire::PROTOCOL), "run the same cns version on both hosts"));
    }
    crate::workload::validate_name(&h.name)?;
    if rt.store.exists(&h.name) {
        return Err(Error::new(ErrorKind::Exists, format!("a workload named {} already exists on the destination", h.name)).with_hint(format!("remove it there (`cns rm {}`) or migrate another workload", h.name)));
    }
    let images = rt.images_root().join(&h.name);
    if images.exists() {
        return Err(Error::new(ErrorKind::Exists, format!("the destination already has a checkpoint at {}", images.display())).with_hint("remove that directory there first"));
    }
    if rt.config.require_signature {
        return Err(Error::new(ErrorKind::Archive, "the destination requires signed checkpoints; a migration stream is authenticated by ssh, not signed")
            .with_hint("set require_signature = false there, or move the workload with `cns export --sign` and `cns import`"));
    }
    if h.lazy {
        crate::checkpoint::lazy::check_host()?;
    }
    let criu = rt.criu()?;
    if let Some(src) = cns_engine::CriuVersion::parse_version_output(&format!("Version: {}", h.criu_version)) {
        if criu.version < src {
            return Err(Error::new(ErrorKind::Blocked, format!("the destination's CRIU {} is older than the source's {src}", criu.version)).with_hint("install the same CRIU on both hosts (scripts/install-criu)"));
        }
    }
    if let Some(c) = &h.cpuinfo {
        cpu_check(rt, &criu.path, c)?;
    }
    let free = nix::sys::statvfs::statvfs(&rt.store.paths.lib).map(|s| s.blocks_available().saturating_mul(s.fragment_size())).unwrap_or(u64::MAX);
    if free < h.memory_bytes + (64 << 20) {
        return Err(Error::new(ErrorKind::Blocked, format!("the destination has {} MiB free for images of about {} MiB", free >> 20, h.memory_bytes >> 20)).with_hint("free space under /var/lib/cns there"));
    }
    if let Some(r) = h.rootfs.as_ref().filter(|r| !r.is_dir()) {
        return Err(Error::new(ErrorKind::Blocked, format!("the workload's root directory {} is missing on the destination", r.display())).with_hint("copy the root file system there first (the same path)"));
    }
    for b in &h.binds {
        let src = b.split(':').next().unwrap_or_default();
        if std::fs::symlink_metadata(src).is_err() {
            return Err(Error::new(ErrorKind::Blocked, format!("the bind source {src} is missing on the destination")).with_hint("create it there first"));
        }
    }
    if h.rootfs.is_none() {
        missing_file(&h.files)?;
    }
    Ok(h.address.is_some_and(|a| rt.leases().holder(&a).is_none()))
}

/// `criu cpuinfo check` of the source's CPU description against this host.
fn cpu_check(rt: &Runtime, criu: &Path, cpuinfo: &str) -> Result<()> {
    use base64::Engine;
    let img = base64::engine::general_purpose::STANDARD
        .decode(cpuinfo)
        .ok()
        .filter(|b| b.len() <= 64 << 10)
        .ok_or_else(|| Error::new(ErrorKind::Archive, "the source sent a CPU description that is not an image"))?;
    let dir = rt.store.paths.lib.join(format!(".cpuinfo-{:016x}", crate::files::random_u64()));
    crate::files::mkdir_private(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let checked = crate::files::write_transient(&dir.join("cpuinfo.img"), &img, 0o600).and_then(|()| {
        std::process::Command::new(criu)
            .args(["cpuinfo", "check", "-o", "cpuinfo.log", "-D"])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run criu cpuinfo check")
    });
    let why = std::fs::read_to_string(dir.join("cpuinfo.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if checked?.success() {
        return Ok(());
    }
    let line = why.lines().rev().find(|l| l.contains("Error") || l.contains("error")).map(|l| l.trim().to_string()).unwrap_or_default();
    Err(Error::new(ErrorKind::Blocked, format!("this host's CPU lacks what the workload may use on the source's (criu cpuinfo check failed{})", if line.is_empty() { String::new() } else { format!(": {line}") }))
        .with_hint("migrate between hosts with the same CPU features"))
}

/// The first executable or library the image maps that this host lacks or
/// has at another size (CRIU would refuse to restore it).
fn missing_file(files: &[NeededFile]) -> Result<()> {
    for f in files {
        match std::fs::metadata(&f.path) {
            Ok(m) if m.len() == f.size => {}
            Ok(m) => {
                return Err(Error::new(ErrorKind::Blocked, format!("{} is {} bytes on the destination, {} on the source", f.path, m.len(), f.size))
                    .with_hint("install the same version of it on both hosts"));
            }
            Err(_) => return Err(Error::new(ErrorKind::Blocked, format!("{} is missing on the destination", f.path)).with_hint("install it there (the same version as on the source)")),
        }
    }
    Ok(())
}

/// Image names are single plain components (CRIU's image directory is flat).
fn check_name(n: &str) -> Result<()> {
    let ok = !n.is_empty() && n.len() <= 255 && !n.starts_with('.') && !n.contains('/') && !n.contains('\0');
    if ok { Ok(()) } else { Err(Error::new(ErrorKind::Archive, format!("the source sent a file named {n:?}, which is not an image name"))) }
}

/// A `criu page-server` receiving the dump's pages into the staging
/// directory over a socket whose other end this process feeds from the
/// channel (PAGES frames in, PAGES_BACK frames out).
struct PageServer {
    /// Reaped by the pump (waitpid), never by this handle.
    _child: std::process::Child,
    sock: UnixStream,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start(rt: &Runtime, staging: &Path, req: &wire::PageServerRequest, out: &Out) -> Result<PageServer> {
        let dir = match &req.dir {
            Some(d) => {
                check_name(d)?;
                let dir = staging.join(d);
                std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                dir
            }
            None => staging.to_path_buf(),
        };
        // The previous round, relative to this one's directory.
        let parent = match &req.parent {
            Some(p) => {
                check_name(p)?;
                Some(if req.dir.is_some() { format!("../{p}") } else { p.clone() })
            }
            None => None,
        };
        let criu = rt.criu()?;
        let extra: Vec<&str> = parent.as_deref().map(|p| vec!["--prev-images-dir", p]).unwrap_or_default();
        let (child, ours) = cns_engine::page_server::spawn(&criu.path, &dir, &extra).map_err(|e| Error::wrap(format!("cannot run {} page-server", criu.path.display()), e))?;
        let mut from = ours.try_clone().context("cannot clone a socket")?;
        let out = Arc::clone(out);
        let wait_for = child.id();
        let pump = std::thread::spawn(move || {
            if wire::forward(&mut from, &out, wire::PAGES_BACK, None).is_err() {
                return;
            }
            // Its socket closed: it has every page, or it failed.
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(wait_for as i32), None);
            let ok = matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0)));
            let end = wire::PageServerEnd { ok, message: if ok { String::new() } else { format!("criu page-server ended with {status:?} (see page-server.log)") } };
            if let Ok(mut w) = out.lock() {
                let _ = wire::send(&mut *w, wire::PAGES_DONE, &end);
            }
        });
        Ok(PageServer { _child: child, sock: ours, pump: Some(pump) })
    }

    /// Ends the page server (its socket closes, so it exits) and waits for
    /// the pump, which reaps it.
    fn stop(mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// Receives pages and files until the restore request.
fn receive_files(rt: &Runtime, input: &mut dyn Read, dir: &Path, out: &Out, ps: &mut Option<PageServer>) -> Result<RestoreRequest> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let Some((kind, payload)) = wire::read_frame(input).context("the connection to the source broke")? else {
            return Err(Error::new(ErrorKind::System, "the source closed the connection before the images were complete"));
        };
        match kind {
            wire::RESTORE => {
                // Every page is in once the page server has ended.
                if let Some(mut p) = ps.take() {
                    if let Some(pump) = p.pump.take() {
                        let _ = pump.join();
                    }
                }
                return serde_json::from_slice(&payload).map_err(|e| Error::new(ErrorKind::Archive, format!("a bad restore request: {e}")));
            }
            wire::PAGE_SERVER => {
                // Pre-copy: one page server per round, one after the other.
                if let Some(old) = ps.take() {
                    old.stop();
                }
                let req: wire::PageServerRequest = serde_json::from_slice::<Option<wire::PageServerRequest>>(&payload)
                    .map_err(|e| Error::new(ErrorKind::Archive, format!("a bad page-server request: {e}")))?
                    .unwrap_or_default();
                match PageServer::start(rt, dir, &req, out) {
                    Ok(p) => {
                        *ps = Some(p);
                        say(out, wire::ANSWER, &Answer { ok: true, ..Default::default() })?;
                    }
                    Err(e) => {
                        say(out, wire::ANSWER, &Answer::refuse(&e))?;
                        return Err(e);
                    }
                }
                continue;
            }
            wire::PAGES => {
                let Some(p) = ps.as_mut() else { return Err(Error::new(ErrorKind::Archive, "pages arrived without a page server")) };
                p.sock.write_all(&payload).context("the page server went away")?;
                continue;
            }
            wire::FILE => {}
            k => return Err(Error::new(ErrorKind::Archive, format!("unexpected frame '{}' from the source", k as char))),
        }
        let h: FileHeader = serde_json::from_slice(&payload).map_err(|e| Error::new(ErrorKind::Archive, format!("a bad file header: {e}")))?;
        check_name(&h.name)?;
        let path = dir.join(&h.name);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut hash = sha2::Sha256::new();
        let ranges = file_ranges(&h)?;
        for (offset, len) in ranges {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).with_context(|| format!("cannot write {}", path.display()))?;
            let mut got = 0u64;
            while got < len {
                match wire::read_frame(input).context("the connection to the source broke")? {
                    Some((wire::DATA, b)) if got + b.len() as u64 <= len => {
                        hash.update(&b);
                        f.write_all(&b).with_context(|| format!("cannot write {}", path.display()))?;
                        got += b.len() as u64;
                    }
                    Some(_) => return Err(Error::new(ErrorKind::Archive, format!("{} does not arrive as the {} bytes announced", h.name, h.size))),
                    None => return Err(Error::new(ErrorKind::System, format!("the connection ended inside {}", h.name))),
                }
            }
        }
        // A file sent in ranges keeps its size: the rest is a hole.
        f.set_len(h.size).with_context(|| format!("cannot write {}", path.display()))?;
        let end: FileEnd = wire::expect(input, wire::FILE_END).context("the connection to the source broke")?;
        let sum = crate::files::hex(&hash.finalize());
        if sum != end.sha256 {
            return Err(Error::new(ErrorKind::Archive, format!("{} arrived altered (SHA-256 {sum}, sent {})", h.name, end.sha256)));
        }
    }
}

/// The ranges a file arrives in: all of it, or the ranges announced, which
/// must lie in order inside the file.
fn file_ranges(h: &FileHeader) -> Result<Vec<(u64, u64)>> {
    let Some(ranges) = &h.ranges else { return Ok(vec![(0, h.size)]) };
    let mut end = 0u64;
    for &(o, l) in ranges {
        let e = o.checked_add(l).filter(|e| o >= end && *e <= h.size);
        end = e.ok_or_else(|| Error::new(ErrorKind::Archive, format!("{} announces a range outside the file or out of order", h.name)))?;
    }
    Ok(ranges.clone())
}

/// The received checkpoint becomes `images/NAME` and is restored detached.
fn restore_received(rt: &Runtime, h: &Hello, staging: &Path, req: &RestoreRequest, pages: Option<crate::checkpoint::lazy::RemotePages>) -> Result<Answer> {
    let meta = crate::checkpoint::meta::read_meta(staging)?;
    if meta.workload.name != h.name {
        return Err(Error::new(ErrorKind::Archive, format!("the images are of workload {}, not {}", meta.workload.name, h.name)));
    }
    let images: PathBuf = rt.images_root().join(&h.name);
    std::fs::rename(staging, &images).with_context(|| format!("cannot move the images to {}", images.display()))?;
    let opts = RestoreOptions {
        name: h.name.clone(),
        images: Some(images.clone()),
        detach: true,
        publish: h.publish.clone(),
        rootfs: h.rootfs.clone(),
        binds: h.binds.clone(),
        address: if req.keep_address { h.address } else { None },
        lazy: pages.is_some(),
        lazy_page_server: pages,
        ..Default::default()
    };
    match restore::restore(rt, &opts, &NoEvents) {
        Ok(r) => {
            let ip = rt.store.get(&r.name).ok().and_then(|w| w.net.addrs).map(|a| a.inner.to_string());
            Ok(Answer { ok: true, pid: Some(r.pid), ip, ..Default::default() })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&images);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_ranges_must_announce_them_in_order_and_inside_it() {
        let h = |ranges: Option<Vec<(u64, u64)>>| FileHeader { name: "pages-1.img".into(), size: 100, ranges };
        assert_eq!(file_ranges(&h(None)).expect("whole"), vec![(0, 100)]);
        assert_eq!(file_ranges(&h(Some(vec![(0, 10), (50, 50)]))).expect("ranges"), vec![(0, 10), (50, 50)]);
        for bad in [vec![(50, 10), (0, 10)], vec![(90, 20)], vec![(u64::MAX, 2)], vec![(0, 10), (5, 10)]] {
            assert!(file_ranges(&h(Some(bad.clone()))).is_err(), "{bad:?}");
        }
        assert!(check_name("pages-1.img").is_ok());
        for bad in ["", ".x", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
