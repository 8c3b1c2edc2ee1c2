//! When a dump is committed. A dump writes into a staging directory next
//! to its destination; at CRIU's post-dump notification (the images are
//! complete, the tree not yet killed) [`Staging::commit`] moves it into
//! place, setting the previous checkpoint aside, and marks the dump
//! committed for the recovery sweep. From there on a cns killed mid-dump
//! loses nothing. If CRIU fails after the commit, [`Staging::abandon`]
//! puts the previous checkpoint back.

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::meta::Meta;
use crate::error::{Context, Error, Result};
use crate::recovery;

/// A dump's staging directory and where its checkpoint goes.
#[derive(Debug)]
pub struct Staging {
    /// `.NAME.dump-PID` next to `images`.
    pub dir: PathBuf,
    /// The checkpoint's final place.
    pub images: PathBuf,
    /// Where the previous checkpoint waits until the dump ends.
    old: PathBuf,
    /// The workload's state dir (its recovery marker).
    state_dir: PathBuf,
    committed: bool,
    /// `cns.json` being written durably while CRIU dumps ([`Staging::prewrite`]).
    meta_written: Option<std::thread::JoinHandle<Result<()>>>,
}

fn sibling(images: &Path, kind: &str) -> PathBuf {
    recovery::sibling_of(images, kind, std::process::id() as i32)
}

impl Staging {
    /// Creates a fresh, private staging directory next to `images` (whose
    /// parent must exist and not be a symlink).
    pub fn create(images: &Path, state_dir: &Path) -> Result<Staging> {
        let dir = sibling(images, "dump");
        // A leftover of an earlier dump by a process with this PID.
        let _ = fs::remove_dir_all(&dir);
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging { dir, images: images.to_path_buf(), old: sibling(images, "old"), state_dir: state_dir.to_path_buf(), committed: false, meta_written: None })
    }

    pub fn committed(&self) -> bool {
        self.committed
    }

    /// Starts writing `meta` into the staging directory, durably (file and
    /// directory fsync-ed), in a thread of its own: it runs while CRIU
    /// dumps, and [`Staging::commit`] only waits for it, so its fsyncs
    /// (1.5 ms here) are not spent while the tree is frozen.
    pub fn prewrite(&mut self, meta: &Meta) {
        let (meta, dir) = (meta.clone(), self.dir.clone());
        self.meta_written = Some(std::thread::spawn(move || meta.write(&dir)));
    }

    /// Whether the pre-written metadata is on disk (waits for it).
    fn prewritten(&mut self) -> bool {
        matches!(self.meta_written.take().map(|h| h.join()), Some(Ok(Ok(()))))
    }

    /// Writes `meta` (unless [`Staging::prewrite`] did) and moves the
    /// complete dump into place.
    pub fn commit(&mut self, meta: &Meta) -> Result<()> {
        if !self.prewritten() {
            meta.write(&self.dir)?;
        }
        let _ = fs::remove_dir_all(&self.old);
        let had_old = self.images.exists();
        if had_old {
            fs::rename(&self.images, &self.old).with_context(|| format!("cannot set the old checkpoint {} aside", self.images.display()))?;
            let old = self.old.clone();
            recovery::update(&self.state_dir, |m| {
                if let Some(d) = m.dump.as_mut() {
                    d.old = Some(old);
                }
            });
        }
        if let Err(e) = fs::rename(&self.dir, &self.images) {
            if had_old {
                let _ = fs::rename(&self.old, &self.images);
            }
            return Err(Error::wrap(format!("cannot move the checkpoint to {}", self.images.display()), e));
        }
        recovery::update(&self.state_dir, |m| {
            if let Some(d) = m.dump.as_mut() {
                d.committed = true;
            }
        });
        self.committed = true;
        Ok(())
    }

    /// The dump failed: keep CRIU's log at `failed_log`, put the previous
    /// checkpoint back, remove what this dump wrote.
    pub fn abandon(mut self, failed_log: &Path) {
        // A metadata write still going ends before its directory goes.
        let _ = self.prewritten();
        let log = cns_engine::image::DUMP_LOG;
        if self.committed {
            // CRIU failed after the images were complete; it resumed the tree.
            let _ = fs::rename(self.images.join(log), failed_log);
            let _ = fs::remove_dir_all(&self.images);
            if self.old.exists() {
                let _ = fs::rename(&self.old, &self.images);
            }
        } else {
            let _ = fs::rename(self.dir.join(log), failed_log);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The dump succeeded: the previous checkpoint goes. A large one goes
    /// in the background: unlinking a big image takes the file system a
    /// while (16 ms for a 17 MB pages file here), and nobody needs to wait
    /// for it; a small one is removed faster than a helper starts (~2 ms).
    /// If a background removal is cut short, the recovery sweep finishes it
    /// (`.NAME.old-PID` of a dead PID with no marker).
    pub fn finish(self) {
        let _ = fs::remove_dir_all(&self.dir);
        if self.old.exists() {
            if cns_engine::ImageDir::new(&self.old).image_bytes().unwrap_or(0) > BACKGROUND_REMOVAL {
                discard_in_background(&self.old);
            } else {
                let _ = fs::remove_dir_all(&self.old);
            }
        }
    }
}

/// Above this many bytes, an old checkpoint is removed in the background.
const BACKGROUND_REMOVAL: u64 = 8 << 20;

/// Removes the directory `path` from a detached `rm -rf`, falling back to
/// removing it here. The shell in between exits at once, so the removal is
/// nobody's child (no zombie in a long-lived caller).
fn discard_in_background(path: &Path) {
    use std::process::{Command, Stdio};
    let spawned = Command::new("/bin/sh")
        .args(["-c", "rm -rf -- \"$1\" &", "cns-discard"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !spawned.is_ok_and(|s| s.success()) {
        let _ = fs::remove_dir_all(path);
    }
}
