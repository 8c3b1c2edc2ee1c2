//! Recovery from cns commands that died half-way (kill -9, OOM kill, a
//! crash): nothing they started may be left behind.
//!
//! `cns run` and `cns restore` write a marker (`pending` in the workload's
//! state dir) before they create anything, naming the command's PID, what
//! it allocated, and — as soon as it is known — the PID of the new root.
//! They remove it once the record is saved. Every later cns command first
//! sweeps: a marker whose owner is dead means the command never finished,
//! so its root is killed (that ends the whole pid namespace, and with it the
//! mount and network namespaces and the veth), its lease released, its log
//! removed, and a record it was creating deleted. Dump staging directories
//! (`.NAME.dump-PID`) of dead dumps are removed the same way. Markers are
//! indexed (`.pending/NAME` in the state root), so a sweep reads one small
//! directory however many workloads there are; once a minute it looks at
//! every workload dir instead.
//!
//! `criu swrk` is not killed with its command: killing CRIU while its
//! parasite code runs inside the tree can wedge the tree. It fails its next
//! notification instead (the socket is gone) and rolls back itself: a dump
//! resumes the tree (CRIU's post-dump notification always comes before it
//! kills the tree), a restore kills what it made. The marker names CRIU's
//! PID, and the sweep waits for it to be gone before cleaning up. The
//! detached monitor dies with its command until it has reported.

use std::fs;
use std::path::{Path, PathBuf};

use cns_netns::LinkAddrs;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::process::stat::{process_matches, process_start};
use crate::runtime::Runtime;
use crate::workload::State;

const MARKER: &str = "pending";
/// Under the state root: an empty file per workload whose state dir holds
/// a marker, so that the sweep reads one small directory, not one file per
/// workload (with a hundred workloads that was most of a millisecond of
/// every command).
const INDEX: &str = ".pending";
/// Under the state root: touched by the last full sweep (every workload
/// dir looked at), which runs at most once a minute.
const FULL_SWEEP: &str = ".swept";
/// How often the full sweep runs, and how old a directory without marker
/// or record must be to be someone's leftover.
const FULL_SWEEP_SECS: u64 = 60;

/// What an unfinished command leaves for the sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marker {
    pub owner: i32,
    pub owner_start: Option<u64>,
    pub root: Option<i32>,
    pub root_start: Option<u64>,
    /// The command was creating the record: delete it.
    pub new_record: bool,
    pub lease: Option<LinkAddrs>,
    pub host_if: Option<String>,
    /// A log the command created for a new record.
    pub log: Option<PathBuf>,
    /// A dump in progress: where its checkpoint goes.
    #[serde(default)]
    pub dump: Option<DumpMark>,
    /// The command's `criu swrk`: it outlives a killed command until its
    /// next notification fails, and nothing is cleaned up before it is gone.
    #[serde(default)]
    pub criu: Option<i32>,
    #[serde(default)]
    pub criu_start: Option<u64>,
    /// A migration left `root` stopped for the destination: a command that
    /// died before the destination said "running" leaves it to be resumed.
    #[serde(default)]
    pub resume_stopped: bool,
}

impl Marker {
    /// Whether the command, or the CRIU it started, still works.
    fn busy(&self) -> bool {
        process_matches(self.owner, self.owner_start) || self.criu.is_some_and(|p| process_matches(p, self.criu_start))
    }
}

/// How far a dump got. CRIU's post-dump notification comes once the images
/// are complete and before it kills the tree; cns commits the checkpoint
/// there (`committed`), so a dump killed afterwards loses nothing: the tree
/// either runs on (CRIU died first) or is in the committed checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DumpMark {
    pub images: PathBuf,
    /// The checkpoint this dump replaces, set aside until the dump ends.
    pub old: Option<PathBuf>,
    pub committed: bool,
}

impl Marker {
    pub fn new(new_record: bool) -> Marker {
        let owner = std::process::id() as i32;
        Marker { owner, owner_start: process_start(owner), new_record, ..Default::default() }
    }
}

/// Writes the marker into a workload's state dir (and its index entry
/// first, so that no marker is ever unindexed).
pub fn begin(dir: &Path, m: &Marker) -> Result<()> {
    index_entry(dir);
    // A marker outlives a killed command, not a crashed machine (which takes
    // every process it names with it): no fsync.
    crate::files::write_transient(&dir.join(MARKER), &serde_json::to_vec(m)?, 0o600)
}

/// The index entry of the workload dir `dir` (best effort: a marker the
/// index misses is found by the next full sweep).
fn index_entry(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let (Some(root), Some(name)) = (dir.parent(), dir.file_name()) else { return };
    let path = root.join(INDEX).join(name);
    let open = || fs::OpenOptions::new().write(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path);
    if open().is_err() && crate::files::mkdir_private(&root.join(INDEX)).is_ok() {
        let _ = open();
    }
}

fn remove_index_entry(dir: &Path) {
    if let (Some(root), Some(name)) = (dir.parent(), dir.file_name()) {
        let _ = fs::remove_file(root.join(INDEX).join(name));
    }
}

/// Updates the marker in place (best effort).
pub fn update(dir: &Path, f: impl FnOnce(&mut Marker)) {
    if let Some(mut m) = read(dir) {
        f(&mut m);
        let _ = begin(dir, &m);
    }
}

/// Records the command's CRIU in the marker (best effort).
pub fn set_criu(dir: &Path, pid: i32) {
    update(dir, |m| {
        m.criu = Some(pid);
        m.criu_start = process_start(pid);
    });
}

/// Records the new root's PID in the marker (best effort).
pub fn set_root(dir: &Path, pid: i32) {
    update(dir, |m| {
        m.root = Some(pid);
        m.root_start = process_start(pid);
    });
}

/// The command finished (either way, with its own rollback done).
pub fn end(dir: &Path) {
    let _ = fs::remove_file(dir.join(MARKER));
    remove_index_entry(dir);
}

fn read(dir: &Path) -> Option<Marker> {
    serde_json::from_slice(&fs::read(dir.join(MARKER)).ok()?).ok()
}

/// Cleans up after every command that died half-way. Cheap when there is
/// nothing to do: a readdir of the marker index and one of the images
/// root. Once a minute it looks at every workload dir instead (a
/// directory a command died creating before its marker, a marker whose
/// index entry was lost), and at the nf_tables rules of workloads gone.
pub fn sweep(rt: &Runtime) {
    let state = &rt.store.paths.state;
    let full = fs::metadata(state.join(FULL_SWEEP)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_none_or(|d| d.as_secs() >= FULL_SWEEP_SECS);
    let listed = if full { fs::read_dir(state) } else { fs::read_dir(state.join(INDEX)) };
    let names: Vec<String> = match listed {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect(),
        Err(_) => vec![],
    };
    let mut cleaned = false;
    for name in names {
        let dir = state.join(&name);
        let marker = read(&dir);
        let has_record = dir.join(crate::workload::store::RECORD).exists();
        if marker.is_none() && !full && (!dir.exists() || older_than(&state.join(INDEX).join(&name), FULL_SWEEP_SECS)) {
            // An index entry whose command ended between removing its
            // marker and its entry (begin writes the entry first: a fresh
            // one may be waiting for its marker).
            let _ = fs::remove_file(state.join(INDEX).join(&name));
        }
        if marker.is_none() && (has_record || !older_than(&dir, FULL_SWEEP_SECS) || !full) {
            // A record, or a directory a command is creating right now (it
            // writes its marker just after the mkdir); one without either
            // is left to the full sweep.
            continue;
        }
        if marker.as_ref().is_some_and(Marker::busy) {
            continue;
        }
        // A dead owner's lock can only be held by another sweep (or a
        // command that came after): wait for it, so that this command sees
        // the cleanup done. Without a marker, whoever holds the lock is
        // still working. Under the lock, look again: the owner may have
        // finished since the first look.
        let Some(_lock) = flock(rt, &name, marker.is_some()) else { continue };
        let marker = read(&dir);
        let has_record = dir.join(crate::workload::store::RECORD).exists();
        match &marker {
            None if has_record => continue,
            None if !older_than(&dir, 60) => continue,
            Some(m) if m.busy() => continue,
            _ => {}
        }
        cleaned = true;
        if let Some(m) = &marker {
            tracing::info!(workload = %name, owner = m.owner, "cleaning up after a cns command that died half-way");
            undo(rt, &name, m);
            match &m.dump {
                // A migration's images are not this host's checkpoint.
                Some(d) if m.resume_stopped => remove_migration_images(rt, &d.images),
                Some(d) => finish_dead_dump(&dir, d, m.owner),
                None => {}
            }
        }
        if !has_record || marker.as_ref().is_some_and(|m| m.new_record) {
            // A new workload's root layers go with it (cns's own dir, by name).
            crate::confine::rootfs::remove(&rt.store.paths.lib, &name);
            crate::confine::cgroup::remove(&name);
            let _ = fs::remove_dir_all(&dir);
            remove_index_entry(&dir);
        } else {
            end(&dir);
        }
    }
    if full {
        let _ = crate::files::write_transient(&state.join(FULL_SWEEP), b"", 0o600);
    }
    sweep_staging(rt);
    if cleaned || full {
        sweep_rules(rt, cleaned);
    }
}

/// nf_tables rules of workloads that no longer exist (their command died
/// between installing them and saving or removing the record) go, and
/// forwarding goes back to the host's value when nothing needs it. Only
/// names this store has known (a lock file is never removed) are touched:
/// another cns state dir on the host keeps its own. A name with a state
/// dir is alive or being made (a restore saves its record last); a dead
/// command's dir was removed by the loop above.
/// Forwarding is looked at only when something was cleaned up (here or by
/// the loop above): otherwise the last command that changed it settled it.
fn sweep_rules(rt: &Runtime, cleaned: bool) {
    let Ok(names) = cns_netns::nat::installed() else { return };
    let ours = |n: &String| crate::workload::validate_name(n).is_ok() && rt.store.paths.lock_file(n).exists() && !rt.store.paths.workload_dir(n).exists();
    let (gone, kept): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| ours(n));
    for n in &gone {
        tracing::info!(workload = %n, "removing the nf_tables rules of a workload that is gone");
        let _ = cns_netns::nat::remove(n);
    }
    if !cleaned && gone.is_empty() {
        return;
    }
    crate::net::settle_forwarding(rt, Some(kept));
}

/// The images of a migration that died (only cns's own migration dir).
fn remove_migration_images(rt: &Runtime, images: &Path) {
    if images.parent() == Some(rt.store.paths.lib.join("migrate").as_path()) && fs::symlink_metadata(images).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_dir_all(images);
    }
}

/// A dump whose command died: keep what it committed, put back what it
/// set aside, and make the record say where the workload is.
fn finish_dead_dump(dir: &Path, d: &DumpMark, owner: i32) {
    // Only the dump's own siblings of its checkpoint are touched; a marker
    // naming anything else (a workload could plant one) is ignored.
    let own = |kind: &str| sibling_of(&d.images, kind, owner);
    if d.old.as_ref().is_some_and(|o| *o != own("old")) || (d.images.exists() && !d.images.join(cns_engine::image::META_FILE).is_file()) {
        tracing::info!(images = %d.images.display(), "ignoring a dump marker that names paths that are not its own");
        return;
    }
    let staging = own("dump");
    if fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_dir_all(&staging);
    }
    if d.committed {
        if let Some(old) = &d.old {
            let _ = fs::remove_dir_all(old);
        }
        let rec = dir.join(crate::workload::store::RECORD);
        let Some(mut w) = fs::read(&rec).ok().and_then(|b| serde_json::from_slice::<crate::workload::Workload>(&b).ok()) else { return };
        // CRIU killed the tree after the checkpoint was complete, unless
        // it still runs (--leave-running).
        let running = w.live_state() == State::Running;
        w.mark_dumped(d.images.clone(), running);
        if let Ok(b) = serde_json::to_vec_pretty(&w) {
            let _ = crate::files::write_atomic(&rec, &b, 0o600);
        }
    } else if let Some(old) = d.old.as_ref().filter(|o| o.exists()) {
        if !d.images.exists() {
            let _ = fs::rename(old, &d.images);
        }
    }
}

/// Undoes what a dead command of workload `name` made. Only what such a
/// command can have made is acted on: a root that is PID 1 of a pid
/// namespace of its own (held by pidfd, checked against its start time),
/// the host veth and log named after `name`, a lease `name` holds. A marker
/// naming anything else (a host process, eth0, a file elsewhere) is ignored.
fn undo(rt: &Runtime, name: &str, m: &Marker) {
    if let (true, Some(root)) = (m.resume_stopped, m.root) {
        // A migration that died: its tree, stopped for the destination, goes on here.
        if crate::process::Process::open(root, m.root_start).is_some() && crate::process::stat::is_namespace_init(root) {
            crate::process::resume_stopped(root);
        }
    } else if let Some(root) = m.root {
        match crate::process::Process::open(root, m.root_start) {
            Some(p) if crate::process::stat::is_namespace_init(root) => {
                p.kill_and_wait(std::time::Duration::from_secs(5));
            }
            Some(_) => tracing::info!(workload = name, pid = root, "not killing a process that is no workload's root"),
            None => {}
        }
    }
    if let Some(h) = m.host_if.as_ref().filter(|h| **h == crate::net::host_veth_name(name)) {
        crate::net::delete_link(h);
    }
    if let Some(a) = &m.lease {
        let _ = rt.leases().release(name, a);
    }
    if let Some(l) = m.log.as_ref().filter(|l| **l == rt.store.paths.log_file(name)) {
        let _ = fs::remove_file(l);
    }
}

fn older_than(p: &Path, secs: u64) -> bool {
    fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|d| d.as_secs() > secs)
}

fn flock(rt: &Runtime, name: &str, wait: bool) -> Option<nix::fcntl::Flock<fs::File>> {
    let f = rt.store.lock_file(name).ok()?;
    let how = if wait { nix::fcntl::FlockArg::LockExclusive } else { nix::fcntl::FlockArg::LockExclusiveNonblock };
    nix::fcntl::Flock::lock(f, how).ok()
}

/// `.NAME.dump-PID` directories whose dump is gone, and `.NAME.old-PID`
/// previous checkpoints whose dump ended (its background removal was cut
/// short) or died after its outcome was settled. A CRIU killed mid-dump
/// also leaves its network lock (an nf_tables table in the workload's
/// netns that drops its traffic): lift it, or the workload, running again,
/// would stay cut off.
fn sweep_staging(rt: &Runtime) {
    let Ok(rd) = fs::read_dir(rt.images_root()) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = import_pid(&n) {
            // A half-done `cns import` whose command is gone.
            if !process_matches(pid, None) && e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir_all(e.path());
            }
            continue;
        }
        let Some((name, pid)) = staging_name_pid(&n) else { continue };
        if process_matches(pid, None) {
            continue;
        }
        if !name.is_empty() && read(&rt.store.paths.workload_dir(&name)).is_some() {
            // Its dump's CRIU still works (the sweep above left the marker).
            continue;
        }
        if let Some(root) = rt.store.get(&name).ok().and_then(|w| w.live_pid()) {
            unlock_network(&name, root);
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

/// Deletes CRIU network-lock tables left in the netns of `root`.
fn unlock_network(name: &str, root: i32) {
    match cns_netns::nft::criu_lock_tables(root) {
        Ok(tables) => {
            for t in tables {
                tracing::info!(workload = name, table = %t.name, "lifting the network lock of a dump that died");
                if let Err(e) = cns_netns::nft::delete_table(Some(root), &t) {
                    tracing::info!(workload = name, error = %e, "cannot lift CRIU's network lock");
                }
            }
        }
        Err(e) => tracing::debug!(workload = name, error = %e, "cannot list nf_tables tables"),
    }
}

/// `.BASE.KIND-PID` next to `images`: where the dump of process `pid`
/// stages (`dump`) or sets the previous checkpoint aside (`old`).
pub fn sibling_of(images: &Path, kind: &str, pid: i32) -> PathBuf {
    let parent = images.parent().unwrap_or(Path::new("/"));
    let base = images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent.join(format!(".{base}.{kind}-{pid}"))
}

/// The PID in an import staging dir name `.import-PID`.
pub fn import_pid(file_name: &str) -> Option<i32> {
    file_name.strip_prefix(".import-")?.parse().ok()
}

/// NAME and PID of a dump's staging dir `.NAME.dump-PID` or of a previous
/// checkpoint set aside, `.NAME.old-PID`.
fn staging_name_pid(file_name: &str) -> Option<(String, i32)> {
    let rest = file_name.strip_prefix('.')?;
    let (name, pid) = rest.rsplit_once(".dump-").or_else(|| rest.rsplit_once(".old-"))?;
    Some((name.to_string(), pid.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert_eq!(staging_name_pid(".web.dump-123"), Some(("web".to_string(), 123)));
        assert_eq!(staging_name_pid(".a.dump-b.dump-7"), Some(("a.dump-b".to_string(), 7)));
        assert_eq!(staging_name_pid("web"), None);
        assert_eq!(staging_name_pid(".web.dump-x"), None);
        assert_eq!(staging_name_pid("web.dump-1"), None);
        assert_eq!(staging_name_pid(".web.old-42"), Some(("web".to_string(), 42)));
        assert_eq!(staging_name_pid(".web.dump-42"), Some(("web".to_string(), 42)));
        assert_eq!(staging_name_pid(".web.old-x"), None);
        assert_eq!(staging_name_pid("web.old-1"), None);
    }
}
