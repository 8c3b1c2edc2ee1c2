//! `cns migrate NAME DEST`: the source side. In order:
//!
//! 1. ask the destination (`cns receive` through ssh) whether the restore
//!    will work there: CRIU, name, disk, files, root and bind sources,
//!    signature policy, address. A refusal stops nothing here.
//! 2. dump with the tree left *stopped* (CRIU's --leave-stopped; its
//!    network stays locked), into a directory of this migration's own;
//! 3. stream the images (each file's SHA-256 checked on arrival) and ask
//!    for the restore;
//! 4. the destination says the workload runs: the stopped tree is killed
//!    and the workload removed here. Anything else, at any step: the tree
//!    is resumed here (network unlocked, SIGCONT), its record untouched.

use std::io::{BufReader, BufWriter, Read};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::checkpoint::dump::{self, DumpOptions};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::migrate::wire::{self, Answer, FileEnd, FileHeader, Hello, NeededFile, RestoreRequest};
use crate::runtime::{Events, Runtime};
use crate::workload::NetMode;

/// How long the destination may take to answer the pre-check, and to
/// report the restore once every image is there.
const PRECHECK_LIMIT: Duration = Duration::from_secs(60);
const RESTORE_LIMIT: Duration = Duration::from_secs(600);

/// What to move where.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub name: String,
    /// `[user@]host[:port]`.
    pub dest: String,
    /// The ssh command and its options (default `ssh`).
    pub ssh: Vec<String>,
    /// The cns to run on the destination (default `cns`, from its PATH).
    pub remote_cns: String,
    /// Iterative pre-dumps before the final one (needs soft-dirty tracking).
    pub precopy: bool,
    /// Post-copy: the workload resumes on the destination at once and its
    /// memory follows on demand.
    pub lazy: bool,
}

/// How it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateReport {
    pub name: String,
    pub dest: String,
    pub total_ms: u64,
    /// From the freeze to the destination's "running": the downtime.
    pub frozen_ms: u64,
    /// Everything sent: the page stream and the other image files.
    pub bytes: u64,
    /// "stop-and-copy" or "post-copy".
    pub mode: &'static str,
    pub files: usize,
    pub dest_pid: Option<i32>,
    pub dest_ip: Option<String>,
}

/// A parsed `[user@]host[:port]`. Nothing in it can be taken by ssh as an
/// option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn parse_dest(s: &str) -> Result<Dest> {
    let bad = || Error::invalid(format!("invalid destination {s:?}"), "give [user@]host[:port], e.g. root@10.0.0.2 or backup-host:2222");
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, s),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty() && !host.starts_with('-') && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    let user_ok = user.is_none_or(|u| !u.is_empty() && !u.starts_with('-') && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    if !host_ok || !user_ok {
        return Err(bad());
    }
    Ok(Dest { user: user.map(str::to_string), host: host.to_string(), port })
}

/// The ssh transport: `ssh [opts] [-p PORT] -- [user@]host CNS receive`.
struct Transport {
    child: Child,
    /// Shared with the page-server pump while CRIU dumps.
    out: Arc<Mutex<BufWriter<std::process::ChildStdin>>>,
    /// Lent to the page-server pump while CRIU dumps.
    inp: Option<BufReader<std::process::ChildStdout>>,
    /// What ssh (and the remote cns) said on stderr, kept for errors.
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Transport {
    fn open(opts: &MigrateOptions, d: &Dest) -> Result<Transport> {
        let (prog, args) = opts.ssh.split_first().ok_or_else(|| Error::invalid("--ssh is empty", "give the ssh command, e.g. --ssh 'ssh -i KEY'"))?;
        let mut cmd = Command::new(prog);
        // No prompt can wait for a person; a dead link is noticed within 15 s.
        cmd.args(args).args(["-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
        if let Some(p) = d.port {
            cmd.arg("-p").arg(p.to_string());
        }
        let target = match &d.user {
            Some(u) => format!("{u}@{}", d.host),
            None => d.host.clone(),
        };
        cmd.arg("--").arg(target).arg(&opts.remote_cns).arg("receive");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::wrap(format!("cannot run {prog}"), e).with_hint("install OpenSSH's client, or give --ssh"))?;
        let (Some(i), Some(o), Some(mut e)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else { return Err(Error::msg("ssh has no pipes")) };
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = keep.lock() {
                    if s.len() < 64 << 10 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        Ok(Transport { child, out: Arc::new(Mutex::new(BufWriter::with_capacity(wire::CHUNK + 16, i))), inp: Some(BufReader::new(o)), stderr, reader: Some(reader) })
    }

    /// ssh's own last words, for an error message.
    fn why(&mut self) -> String {
        // ssh's last words arrive as it exits.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.child.try_wait().ok().flatten().is_some() {
            // Exited: its stderr is closed, the reader has all of it.
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
        let text = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        // The remote cns's own error line, without its prefix (and its hint line skipped).
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("hint:")).collect();
        lines.last().map(|l| l.trim_start_matches("cns: ").to_string()).unwrap_or_else(|| "the connection closed".into())
    }

    /// Sends one control message (flushed).
    fn send<T: serde::Serialize>(&mut self, kind: u8, msg: &T) -> Result<()> {
        let r = match self.out.lock() {
            Ok(mut w) => wire::send(&mut *w, kind, msg),
            Err(_) => Err(std::io::Error::other("poisoned")),
        };
        r.map_err(|_| self.broken("the connection to the destination broke"))
    }

    /// Sends one data frame (not flushed).
    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        let r = match self.out.lock() {
            Ok(mut w) => wire::write_frame(&mut *w, wire::DATA, bytes),
            Err(_) => Err(std::io::Error::other("poisoned")),
        };
        r.map_err(|_| self.broken("the connection to the destination broke"))
    }

    /// Waits until the destination has said something, at most `limit`:
    /// the source never waits forever, least of all with its tree stopped.
    fn answer(&mut self, limit: Duration, what: &str) -> Result<Answer> {
        use std::io::BufRead;
        use std::os::fd::AsFd;
        let deadline = Instant::now() + limit;
        let Some(inp) = self.inp.as_mut() else { return Err(Error::msg("the connection is lent to the page server")) };
        while inp.buffer().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(ErrorKind::System, format!("{what}: no answer within {} s", limit.as_secs())).with_hint("see the destination's load and its `cns receive`; the workload runs on here"));
            }
            let fd = inp.get_ref().as_fd();
            let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap_or(nix::poll::PollTimeout::MAX);
            let ready = match nix::poll::poll(&mut p, ms) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => !inp.fill_buf().map(|b| b.is_empty()).unwrap_or(true),
                Err(_) => false,
            };
            if !ready {
                return Err(self.broken(what));
            }
        }
        let r = wire::expect(inp, wire::ANSWER);
        r.map_err(|_| self.broken(what))
    }

    fn broken(&mut self, what: &str) -> Error {
        Error::new(ErrorKind::System, format!("{what}: {}", self.why()))
            .with_hint("the workload runs on here; check the link and that `ssh DEST cns receive` works there (keys, cns on its PATH or --remote-cns)")
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The regular files the tree maps (executables, libraries), with sizes:
/// the destination checks it has the same ones.
fn needed_files(pids: &[i32]) -> Vec<NeededFile> {
    let mut seen = std::collections::BTreeSet::new();
    for pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for l in maps.lines() {
            let Some(p) = l.split_whitespace().nth(5).filter(|p| p.starts_with('/')) else { continue };
            if l.ends_with("(deleted)") || p.starts_with("/dev/") || p.starts_with("/memfd:") {
                continue;
            }
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/root{p}")) {
                if m.is_file() {
                    seen.insert(NeededFile { path: p.to_string(), size: m.len() });
                }
            }
        }
    }
    seen.into_iter().collect()
}

/// Resident memory of the tree, in bytes.
fn resident(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()))
        .sum::<u64>()
        * 1024
}

/// Moves the workload. See the module comment for the order and what a
/// failure leaves.
pub fn migrate(rt: &Runtime, opts: &MigrateOptions, events: &dyn Events) -> Result<MigrateReport> {
    rt.require_root()?;
    let dest = parse_dest(&opts.dest)?;
    if opts.precopy && opts.lazy {
        return Err(Error::invalid("--precopy and --lazy are two ways to move memory; choose one", "drop one of them"));
    }
    if opts.precopy {
        precopy_supported(rt)?;
    }
    if opts.lazy {
        // This host's page server needs the same pipes as the restore there.
        crate::checkpoint::lazy::check_host().map_err(|e| Error::new(e.kind(), format!("post-copy migration: {}", e.one_line())).with_hint(e.hint().unwrap_or_default()))?;
    }
    let start = Instant::now();
    let l = rt.store.try_lock(&opts.name)?;
    let w = l.load()?;
    let pid = w.running_pid()?;
    if w.adopted || w.net.mode == NetMode::Host {
        return Err(Error::invalid("an adopted host tree lives in the host's own namespaces and cannot move", "dump it and restore it on this host"));
    }
    if crate::checkpoint::lazy::pending(&l.dir).is_some() {
        return Err(Error::new(ErrorKind::State, format!("workload {} is still receiving its memory from a lazy restore", w.name)).with_hint("wait until its memory is in, then migrate"));
    }
    let mut hello = hello_for(rt, &w, pid)?;
    hello.lazy = opts.lazy;
    events.stage("migrating", &format!("asking {} whether it can restore {}", opts.dest, w.name));
    let mut t = Transport::open(opts, &dest)?;
    t.send(wire::HELLO, &hello).map_err(|_| t.broken("cannot reach the destination"))?;
    let answer = t.answer(PRECHECK_LIMIT, "the destination did not answer")?;
    if !answer.ok {
        return Err(Error::new(ErrorKind::Blocked, format!("{} refuses {}: {}", opts.dest, w.name, answer.message)).with_hint(answer.hint));
    }
    // 2. The dump: the tree stays, stopped, until the destination says.
    let work = rt.store.paths.lib.join("migrate");
    crate::files::mkdir_private(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let images = work.join(format!("{}-{:016x}", w.name, crate::files::random_u64()));
    let frozen = Instant::now();
    let moved = if opts.lazy {
        post_copy(rt, &l, &w, pid, &mut t, &images, answer.keeps_address, events)
    } else {
        stop_and_copy(rt, &l, &w, pid, &mut t, &images, answer.keeps_address, opts, events)
    };
    let _ = std::fs::remove_dir_all(&images);
    let moved = match moved {
        Ok(m) => m,
        Err(e) => {
            crate::process::resume_stopped(pid);
            crate::recovery::end(&l.dir);
            return Err(e);
        }
    };
    let name = w.name.clone();
    drop(l);
    // The workload runs there: the stopped tree goes, and its record here.
    crate::process::handle::kill_and_wait(pid, w.pid_start, Duration::from_secs(10));
    crate::recovery::end(&rt.store.paths.workload_dir(&name));
    crate::ops::rm::rm(rt, &crate::ops::rm::RmOptions { name: name.clone(), force: true, keep_images: false })
        .with_context(|| format!("{name} runs on {} now, but removing it here failed", opts.dest))?;
    Ok(MigrateReport {
        name,
        dest: opts.dest.clone(),
        total_ms: start.elapsed().as_millis() as u64,
        frozen_ms: moved.running_at.duration_since(frozen).as_millis() as u64,
        bytes: moved.bytes,
        mode: if opts.lazy { "post-copy" } else { "stop-and-copy" },
        files: moved.files,
        dest_pid: moved.answer.pid,
        dest_ip: moved.answer.ip,
    })
}

/// What a transfer did: bytes and files sent, the destination's "running"
/// and when it came.
struct Moved {
    bytes: u64,
    files: usize,
    answer: Answer,
    running_at: Instant,
}

/// Stop-and-copy: the pages stream to the destination as CRIU dumps them,
/// then the other images, then the restore.
#[allow(clippy::too_many_arguments)]
fn stop_and_copy(rt: &Runtime, l: &crate::workload::Locked, w: &crate::workload::Workload, pid: i32, t: &mut Transport, images: &Path, keeps_address: bool, opts: &MigrateOptions, events: &dyn Events) -> Result<Moved> {
    // Pre-copy rounds live beside the final dump's directory (which the
    // dump creates itself), and go with it.
    let rounds = images.with_extension("rounds");
    let pre = if opts.precopy { precopy_rounds(rt, pid, t, &rounds, events) } else { Ok((0, None)) };
    let result = pre.and_then(|(pre_bytes, last)| {
        let parent = last.map(|r| Parent { here: format!("../{}/{r}", rounds.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()), there: r });
        Ok((pre_bytes, dump_streaming(rt, l, w, pid, t, images, parent.as_ref(), opts, events)?))
    });
    let _ = std::fs::remove_dir_all(&rounds);
    let (pre_bytes, page_bytes) = result?;
    let (bytes, files) = send_files(t, images, None, events)?;
    let answer = request_restore(t, keeps_address, false, events)?;
    Ok(Moved { bytes: bytes + page_bytes + pre_bytes, files, answer, running_at: Instant::now() })
}

/// Post-copy: the dump goes to this host's disk (the tree stays stopped);
/// the images go over without the memory a lazy restore can fetch later
/// (those parts of the pages files travel as holes); the destination
/// restores at once and its lazy-pages daemon pulls the memory from a page
/// server here, through the channel. Only when the destination says every
/// page is in and the workload runs on is the move complete; until then a
/// failure kills the copy there and resumes the tree here, as it was when
/// frozen.
#[allow(clippy::too_many_arguments)]
fn post_copy(rt: &Runtime, l: &crate::workload::Locked, w: &crate::workload::Workload, pid: i32, t: &mut Transport, images: &Path, keeps_address: bool, events: &dyn Events) -> Result<Moved> {
    let plan = migration_plan(rt, w, pid, images)?;
    dump::dump_to(rt, l, w, plan, false, events)?;
    let eager = cns_engine::ImageDir::new(images).eager_ranges().map_err(|e| Error::new(ErrorKind::Archive, format!("cannot read the dump's page maps: {e}")))?;
    let (bytes, files) = send_files(t, images, Some(&eager), events)?;
    // After the files (its log goes into the images directory too).
    let server = LazyServer::start(rt, images)?;
    t.send(wire::RESTORE, &RestoreRequest { keep_address: keeps_address, lazy: true })?;
    events.stage("migrating", "the destination is restoring (its memory follows on demand)");
    server.serve(t, bytes, files, events)
}

/// What the destination needs to know before anything is frozen.
fn hello_for(rt: &Runtime, w: &crate::workload::Workload, pid: i32) -> Result<Hello> {
    let pids = cns_engine::preflight::tree_pids(pid);
    Ok(Hello {
        protocol: wire::PROTOCOL,
        name: w.name.clone(),
        criu_version: rt.criu()?.version.to_string(),
        memory_bytes: resident(&pids),
        files: needed_files(&pids),
        address: w.net.addrs,
        publish: w.net.publish.iter().map(|p| p.to_string()).collect(),
        rootfs: w.confine.rootfs.clone(),
        binds: w.confine.binds().map(|(s, d)| format!("{}:{}", s.display(), d.display())).collect(),
        lazy: false,
        cpuinfo: Some(cpuinfo(rt)?),
    })
}

/// This host's CPU as CRIU describes it (`criu cpuinfo dump`), base64.
fn cpuinfo(rt: &Runtime) -> Result<String> {
    use base64::Engine;
    let criu = rt.criu()?;
    let dir = rt.store.paths.lib.join("migrate").join(format!(".cpuinfo-{:016x}", crate::files::random_u64()));
    crate::files::mkdir_private(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = Command::new(&criu.path).args(["cpuinfo", "dump", "-o", "cpuinfo.log", "-D"]).arg(&dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let img = std::fs::read(dir.join("cpuinfo.img"));
    let _ = std::fs::remove_dir_all(&dir);
    match (out, img) {
        (Ok(st), Ok(img)) if st.success() => Ok(base64::engine::general_purpose::STANDARD.encode(img)),
        _ => Err(Error::new(ErrorKind::Criu, "criu cpuinfo dump failed: cannot describe this host's CPU to the destination").with_hint("check that `criu cpuinfo dump -D DIR` works here")),
    }
}

/// A migration's dump into `images`: the tree is left stopped (resumed
/// here if the destination fails, killed once it runs there).
fn migration_plan(rt: &Runtime, w: &crate::workload::Workload, pid: i32, images: &Path) -> Result<dump::DumpPlan> {
    let plan_opts = DumpOptions { name: w.name.clone(), images: Some(images.to_path_buf()), ..Default::default() };
    let mut plan = dump::plan(rt, &plan_opts, w, pid)?;
    plan.options.leave_stopped = true;
    plan.migrating = true;
    Ok(plan)
}

/// The last pre-copy round, as the final dump names it here (relative to
/// its images directory) and as the destination names it (in its staging
/// directory).
struct Parent {
    here: String,
    there: String,
}

/// The dump, the tree left stopped, its pages streamed to a page server
/// on the destination through the channel (no copy of the memory is
/// written here); the other images go into `images`. dump_to leaves its
/// recovery marker (resume the tree, drop these images) for the caller.
#[allow(clippy::too_many_arguments)]
fn dump_streaming(rt: &Runtime, l: &crate::workload::Locked, w: &crate::workload::Workload, pid: i32, t: &mut Transport, images: &Path, parent: Option<&Parent>, opts: &MigrateOptions, events: &dyn Events) -> Result<u64> {
    let mut plan = migration_plan(rt, w, pid, images)?;
    // After pre-copy rounds: only the pages written since the last one.
    plan.options.parent_img = parent.map(|p| p.here.clone());
    plan.options.track_mem = parent.is_some();
    t.send(wire::PAGE_SERVER, &wire::PageServerRequest { dir: None, parent: parent.map(|p| p.there.clone()) })?;
    let ps = t.answer(PRECHECK_LIMIT, "the destination did not start its page server")?;
    if !ps.ok {
        return Err(Error::new(ErrorKind::Criu, format!("the destination could not start a page server: {}", ps.message)).with_hint(ps.hint));
    }
    let (criu_end, ours) = std::os::unix::net::UnixStream::pair().context("cannot make a socket pair")?;
    plan.options.page_server_fd = Some(criu_end.as_raw_fd());
    plan.inherit = vec![criu_end.as_raw_fd()];
    let pump = PagePump::start(t, ours)?;
    let sent = Arc::clone(&pump.sent);
    // Progress while CRIU sends the memory: bytes and rate, four times a
    // second, until the dump returns (the ticker ends at once then).
    let (stop, ticks) = std::sync::mpsc::channel::<()>();
    let dumped = std::thread::scope(|s| {
        s.spawn(move || {
            let start = Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(Duration::from_millis(250)) {
                let b = sent.load(std::sync::atomic::Ordering::Relaxed);
                let rate = b as f64 / (1u64 << 20) as f64 / start.elapsed().as_secs_f64().max(0.001);
                events.stage("migrating", &format!("{} MiB of memory sent ({rate:.0} MiB/s)", b >> 20));
            }
        });
        let r = dump::dump_to(rt, l, w, plan, false, events);
        drop(stop);
        r
    });
    drop(criu_end);
    match dumped {
        Ok(_) => pump.finish(t),
        // CRIU's pages go through the channel: a dump that fails here is
        // most often the link failing under it.
        Err(e) => Err(Error::new(e.kind(), format!("the migration's dump failed: {}", e.one_line()))
            .with_hint(format!("the workload runs on here; the link to {}: {}", opts.dest, t.why()))),
    }
}

/// CRIU's page-server connection, carried over the channel while CRIU
/// dumps: what CRIU writes goes out as PAGES frames, PAGES_BACK frames come
/// back into its socket, until the destination says its page server ended.
struct PagePump {
    /// Page-server bytes sent (the memory, mostly).
    sent: Arc<std::sync::atomic::AtomicU64>,
    up: std::thread::JoinHandle<()>,
    down: std::sync::mpsc::Receiver<(BufReader<std::process::ChildStdout>, std::result::Result<wire::PageServerEnd, String>)>,
}

impl PagePump {
    fn start(t: &mut Transport, ours: std::os::unix::net::UnixStream) -> Result<PagePump> {
        let mut from_criu = ours.try_clone().context("cannot clone a socket")?;
        let mut to_criu = ours;
        let out = Arc::clone(&t.out);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let up = std::thread::spawn(move || {
            if wire::forward(&mut from_criu, &out, wire::PAGES, Some(&counter)).is_err() {
                // The channel is gone: CRIU must not wait on this socket.
                let _ = from_criu.shutdown(std::net::Shutdown::Both);
            }
        });
        let mut inp = t.inp.take().ok_or_else(|| Error::msg("the connection is already lent"))?;
        let (tx, down) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let end = loop {
                match wire::read_frame(&mut inp) {
                    Ok(Some((wire::PAGES_BACK, b))) => {
                        if std::io::Write::write_all(&mut to_criu, &b).is_err() {
                            break Err("CRIU's end of the page-server connection closed".to_string());
                        }
                    }
                    Ok(Some((wire::PAGES_DONE, b))) => break serde_json::from_slice(&b).map_err(|e| e.to_string()),
                    Ok(Some((k, _))) => break Err(format!("unexpected frame '{}' during the dump", k as char)),
                    Ok(None) => break Err("the connection closed during the dump".to_string()),
                    Err(e) => break Err(e.to_string()),
                }
            };
            // The page server has ended (or the channel broke): CRIU has
            // every answer it will get, and any further wait on this socket
            // ends with an end of file instead of lasting forever with the
            // tree frozen.
            let _ = to_criu.shutdown(std::net::Shutdown::Both);
            let _ = tx.send((inp, end));
        });
        Ok(PagePump { sent, up, down })
    }

    /// After the dump: the destination's page server has every page.
    /// Returns the page-server bytes sent.
    fn finish(self, t: &mut Transport) -> Result<u64> {
        let _ = self.up.join();
        let sent = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        let (inp, end) = self.down.recv_timeout(PRECHECK_LIMIT).map_err(|_| t.broken("the destination's page server did not finish"))?;
        t.inp = Some(inp);
        match end {
            Ok(e) if e.ok => Ok(sent),
            Ok(e) => Err(Error::new(ErrorKind::Criu, format!("the destination's page server failed: {}", e.message)).with_hint("the workload runs on here")),
            Err(m) => Err(Error::new(ErrorKind::System, format!("the page-server connection broke: {m}")).with_hint("the workload runs on here")),
        }
    }
}

/// Streams every image file (a pages file listed in `eager` only in its
/// ranges: the rest is fetched on demand). Returns the bytes and files sent.
fn send_files(t: &mut Transport, images: &Path, eager: Option<&std::collections::BTreeMap<String, Vec<(u64, u64)>>>, events: &dyn Events) -> Result<(u64, usize)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(images).with_context(|| format!("cannot read {}", images.display()))?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    names.sort();
    let mut sent = 0u64;
    let mut buf = vec![0u8; wire::CHUNK];
    for p in &names {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let ranges = eager.and_then(|e| e.get(&name)).cloned();
        t.send(wire::FILE, &FileHeader { name: name.clone(), size, ranges: ranges.clone() })?;
        let mut hash = sha2::Sha256::new();
        for (offset, len) in ranges.unwrap_or_else(|| vec![(0, size)]) {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).with_context(|| format!("cannot read {}", p.display()))?;
            let mut left = len;
            while left > 0 {
                let n = f.read(&mut buf[..wire::CHUNK.min(left as usize)]).with_context(|| format!("cannot read {}", p.display()))?;
                if n == 0 {
                    return Err(Error::new(ErrorKind::System, format!("{} shrank while being sent", p.display())));
                }
                hash.update(&buf[..n]);
                t.data(&buf[..n])?;
                left -= n as u64;
                sent += n as u64;
            }
        }
        let sha256 = crate::files::hex(&hash.finalize());
        t.send(wire::FILE_END, &FileEnd { sha256 })?;
        events.stage("migrating", &format!("sent {} KiB of images besides the memory", sent >> 10));
    }
    Ok((sent, names.len()))
}

/// Asks for the restore; the answer must be "running".
fn request_restore(t: &mut Transport, keep_address: bool, lazy: bool, events: &dyn Events) -> Result<Answer> {
    t.send(wire::RESTORE, &RestoreRequest { keep_address, lazy })?;
    events.stage("migrating", "the destination is restoring");
    let done = t.answer(RESTORE_LIMIT, "the destination did not report the restore")?;
    events.done();
    restored(done)
}

fn restored(done: Answer) -> Result<Answer> {
    if !done.ok {
        return Err(Error::new(ErrorKind::Criu, format!("the destination could not restore: {}", done.message)).with_hint(if done.hint.is_empty() { "the workload runs on here; see the destination's cns logs".into() } else { done.hint.clone() }));
    }
    Ok(done)
}

/// A `criu page-server --lazy-pages` serving the dump's memory from this
/// host's images to the destination's lazy-pages daemon, over a socket
/// this process carries through the channel.
struct LazyServer {
    child: Child,
    sock: std::os::unix::net::UnixStream,
}

impl LazyServer {
    fn start(rt: &Runtime, images: &Path) -> Result<LazyServer> {
        let criu = rt.criu()?;
        let (child, sock) = cns_engine::page_server::spawn(&criu.path, images, &["--lazy-pages"]).map_err(|e| Error::wrap(format!("cannot run {} page-server", criu.path.display()), e))?;
        Ok(LazyServer { child, sock })
    }

    /// Carries the page server's stream until the destination says how its
    /// lazy restore ended. Returns when the destination runs the workload
    /// with all of its memory.
    fn serve(mut self, t: &mut Transport, bytes: u64, files: usize, events: &dyn Events) -> Result<Moved> {
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut from_server = self.sock.try_clone().context("cannot clone a socket")?;
        let mut to_server = self.sock.try_clone().context("cannot clone a socket")?;
        let out = Arc::clone(&t.out);
        let counter = Arc::clone(&sent);
        let up = std::thread::spawn(move || {
            let _ = wire::forward(&mut from_server, &out, wire::LAZY_PAGES, Some(&counter));
        });
        let mut inp = t.inp.take().ok_or_else(|| Error::msg("the connection is already lent"))?;
        let (tx, rx) = std::sync::mpsc::channel::<Result<(u8, Vec<u8>), String>>();
        let saw_close = Arc::clone(&closed);
        let down = std::thread::spawn(move || {
            let mut asks = AskWatch::default();
            loop {
                match wire::read_frame(&mut inp) {
                    Ok(Some((wire::LAZY_ASK, b))) => {
                        if asks.feed(&b) {
                            saw_close.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        let _ = std::io::Write::write_all(&mut to_server, &b);
                    }
                    Ok(Some(f)) => {
                        if tx.send(Ok(f)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
            let _ = to_server.shutdown(std::net::Shutdown::Both);
        });
        let outcome = self.wait(t, &rx, &sent, &closed, events);
        // Whatever happened, nothing waits on the server any more.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = up.join();
        drop(rx);
        // The reader ends with the channel, which the caller closes.
        drop(down);
        let (answer, running_at) = outcome?;
        Ok(Moved { bytes: bytes + sent.load(std::sync::atomic::Ordering::Relaxed), files, answer, running_at })
    }

    /// The destination's "running", then its LAZY_DONE.
    fn wait(&mut self, t: &mut Transport, rx: &std::sync::mpsc::Receiver<Result<(u8, Vec<u8>), String>>, sent: &std::sync::atomic::AtomicU64, closed: &std::sync::atomic::AtomicBool, events: &dyn Events) -> Result<(Answer, Instant)> {
        let frame = |limit: Duration| rx.recv_timeout(limit).map_err(|_| "no answer".to_string()).and_then(|r| r);
        let answer = match frame(RESTORE_LIMIT) {
            Ok((wire::ANSWER, b)) => serde_json::from_slice::<Answer>(&b).map_err(|e| Error::new(ErrorKind::Archive, format!("a bad answer from the destination: {e}")))?,
            Ok((k, _)) => return Err(Error::new(ErrorKind::Archive, format!("unexpected frame '{}' from the destination", k as char))),
            Err(m) => return Err(t.broken(&format!("the destination did not report the restore ({m})"))),
        };
        let answer = restored(answer)?;
        let running_at = Instant::now();
        // The workload runs there; its memory is still here. Progress until
        // the destination says every page is in, or the stream stalls.
        let mut last = (0u64, Instant::now());
        loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Ok((wire::LAZY_DONE, b))) => {
                    events.done();
                    let end: wire::LazyEnd = serde_json::from_slice(&b).map_err(|e| Error::new(ErrorKind::Archive, format!("a bad end from the destination: {e}")))?;
                    if end.ok {
                        return Ok((answer, running_at));
                    }
                    return Err(Error::new(ErrorKind::Criu, format!("the destination could not pull all the memory: {}", end.message))
                        .with_hint("the workload resumes here as it was when frozen; what it did there is lost"));
                }
                Ok(Ok((k, _))) => return Err(Error::new(ErrorKind::Archive, format!("unexpected frame '{}' from the destination", k as char))),
                Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if closed.load(std::sync::atomic::Ordering::SeqCst) {
                        // The daemon had asked for everything and said so:
                        // the workload runs there with all its memory.
                        events.stage("migrating", "the link closed after the last page: check the workload on the destination");
                        events.done();
                        return Ok((answer, running_at));
                    }
                    return Err(t.broken("the link broke while the destination pulled the memory (the copy there dies without it; the workload resumes here as it was when frozen)"));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let b = sent.load(std::sync::atomic::Ordering::Relaxed);
                    if b != last.0 {
                        last = (b, Instant::now());
                    } else if last.1.elapsed() > PRECHECK_LIMIT {
                        return Err(Error::new(ErrorKind::System, format!("the destination pulled no memory for {} s", PRECHECK_LIMIT.as_secs())).with_hint("the copy there is killed; the workload resumes here as it was when frozen"));
                    }
                    events.stage("migrating", &format!("running there; {} MiB of memory pulled", b >> 20));
                }
            }
        }
    }
}

/// Watches the lazy-pages daemon's requests for its closing one: CRIU's
/// page-server requests are fixed records of 32 bytes, the command in the
/// first four (little-endian; PS_IOV_CLOSE 0x1023, PS_IOV_FORCE_CLOSE
/// 0x1024 in the low 16 bits). The daemon sends it once it has stopped
/// asking, so a link that breaks after it cannot have starved the copy.
#[derive(Default)]
struct AskWatch {
    partial: Vec<u8>,
}

impl AskWatch {
    const RECORD: usize = 32;

    /// Feeds bytes; true once a closing request has passed.
    fn feed(&mut self, b: &[u8]) -> bool {
        self.partial.extend_from_slice(b);
        let mut closing = false;
        let whole = self.partial.len() / Self::RECORD * Self::RECORD;
        for r in self.partial[..whole].chunks_exact(Self::RECORD) {
            let cmd = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) & 0xffff;
            closing |= cmd == 0x1023 || cmd == 0x1024;
        }
        self.partial.drain(..whole);
        closing
    }
}

/// Pre-copy needs the kernel's soft-dirty tracking: CRIU's FEATURE_CHECK
/// (mem_track) says whether it is there. Never start a pre-dump without it
/// (CRIU's pre-dump dies on a BUG and leaves its parasite in the tree).
fn precopy_supported(rt: &Runtime) -> Result<()> {
    let criu = rt.criu()?;
    let tracks = cns_engine::rpc::Swrk::start(&criu.path, &[], None)
        .and_then(|s| s.tracks_memory())
        .map_err(|e| Error::new(ErrorKind::Criu, format!("cannot ask CRIU whether this kernel tracks dirty memory: {e}")))?;
    if !tracks {
        return Err(Error::new(ErrorKind::Blocked, "--precopy needs the kernel's soft-dirty memory tracking, which this kernel lacks (CRIU: mem_track)")
            .with_hint("migrate without --precopy (stop-and-copy), or with --lazy; or use a kernel built with CONFIG_MEM_SOFT_DIRTY"));
    }
    Ok(())
}

/// At most this many pre-copy rounds.
const MAX_ROUNDS: u32 = 8;

/// Whether another pre-copy round is worth it after one that wrote
/// `written` pages (the one before wrote `before`): not past MAX_ROUNDS,
/// not when under 64 pages are left, and only while each round writes less
/// than 70 % of the one before (the dirty set still shrinks; a workload
/// that writes as fast as the link moves never converges).
pub fn another_round(round: u32, before: Option<u64>, written: u64) -> bool {
    round < MAX_ROUNDS && written >= 64 && before.is_none_or(|b| written * 10 < b * 7)
}

/// Pre-copy: rounds of pre-dumps while the tree runs, each streaming the
/// pages written since the round before to a page server of its own on
/// the destination (directory `round-N` there, its parent the round
/// before), until the dirty set stops shrinking. Returns the bytes sent
/// and the last round's name, the final dump's parent.
fn precopy_rounds(rt: &Runtime, pid: i32, t: &mut Transport, rounds: &Path, events: &dyn Events) -> Result<(u64, Option<String>)> {
    let criu = rt.criu()?;
    crate::files::mkdir_private(rounds).with_context(|| format!("cannot create {}", rounds.display()))?;
    let (mut total, mut before, mut parent) = (0u64, None, None::<String>);
    for round in 1..=MAX_ROUNDS {
        let name = format!("round-{round}");
        let dir = rounds.join(&name);
        crate::files::mkdir_private(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        t.send(wire::PAGE_SERVER, &wire::PageServerRequest { dir: Some(name.clone()), parent: parent.clone() })?;
        let ps = t.answer(PRECHECK_LIMIT, "the destination did not start its page server")?;
        if !ps.ok {
            return Err(Error::new(ErrorKind::Criu, format!("the destination could not start a page server: {}", ps.message)).with_hint(ps.hint));
        }
        let (criu_end, ours) = std::os::unix::net::UnixStream::pair().context("cannot make a socket pair")?;
        let mut o = cns_engine::CriuOptions::dump(pid, &dir);
        o.op = cns_engine::Operation::PreDump;
        o.log_file = "pre-dump.log".into();
        o.leave_running = true;
        o.track_mem = true;
        o.parent_img = parent.as_ref().map(|p| format!("../{p}"));
        o.page_server_fd = Some(criu_end.as_raw_fd());
        let pump = PagePump::start(t, ours)?;
        let d = crate::checkpoint::failure::open_dir(&dir)?;
        let run = cns_engine::rpc::Swrk::start(&criu.path, &[criu_end.as_raw_fd()], None).and_then(|s| s.pre_dump(&o, cns_engine::rpc::Dirs { images: Some(std::os::fd::AsFd::as_fd(&d)), work: Some(std::os::fd::AsFd::as_fd(&d)) }));
        drop(criu_end);
        let sent = pump.finish(t)?;
        run.map_err(|e| Error::new(ErrorKind::Criu, format!("pre-copy round {round} failed: {e}")).with_hint(format!("the workload runs on here; see {}", dir.join("pre-dump.log").display())))?;
        let written = cns_engine::ImageDir::new(&dir).dump_stats().map(|s| s.pages_written).unwrap_or(0);
        total += sent;
        events.stage("migrating", &format!("pre-copy round {round}: {written} pages ({} MiB) sent while the workload runs", sent >> 20));
        parent = Some(name);
        if !another_round(round, before, written) {
            break;
        }
        before = Some(written);
    }
    Ok((total, parent))
}
