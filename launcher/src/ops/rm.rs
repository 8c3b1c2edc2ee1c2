//! `rm`: stop a workload and remove its state.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Runtime;
use crate::workload::State;

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct RmOptions {
    pub name: String,
    /// Stop it first if it is running.
    pub force: bool,
    /// Keep its checkpoint images.
    pub keep_images: bool,
}

/// Removes the workload: kills it (with `force`), releases its address
/// and veth, removes its log, its images (unless kept) and its record.
pub fn rm(rt: &Runtime, opts: &RmOptions) -> Result<()> {
    rt.require_root()?;
    let l = rt.store.lock(&opts.name)?;
    let w = l.load()?;
    if w.live_state() == State::Running {
        if !opts.force {
            return Err(Error::new(ErrorKind::State, format!("workload {} is running", w.name))
                .with_hint(format!("stop it with `cns kill {0}` or use `cns rm -f {0}`", w.name)));
        }
        if let Some(pid) = w.pid {
            if !crate::process::handle::kill_and_wait(pid, w.pid_start, Duration::from_secs(10)) {
                // Its address, veth and record stay with it until it is gone.
                return Err(Error::new(ErrorKind::State, format!("workload {} did not stop within 10 s of SIGKILL; nothing was removed", w.name))
                    .with_hint(format!("see what holds pid {pid} (a task in D state?) and run `cns rm -f {}` again", w.name)));
            }
        }
    }
    crate::net::delete_host_end(&w.net);
    if w.net.addrs.is_some() {
        crate::net::remove_rules(rt, &w.name);
    }
    if let Some(a) = &w.net.addrs {
        let _ = rt.leases().release(&w.name, a);
    }
    let _ = std::fs::remove_file(&w.log);
    // Its root's own layers (its checkpoint keeps a copy of the changes).
    crate::confine::rootfs::remove(&rt.store.paths.lib, &w.name);
    if !w.confine.limits.is_empty() {
        crate::confine::cgroup::remove(&w.name);
    }
    if !opts.keep_images {
        if let Some(img) = &w.images {
            // Only a checkpoint cns made for this name under its own root.
            if img.starts_with(rt.images_root()) && img.file_name().is_some_and(|n| n == w.name.as_str()) {
                let _ = std::fs::remove_dir_all(img);
            }
        }
        // The CRIU log of its last failed dump, kept beside the images.
        let _ = std::fs::remove_file(rt.failed_dump_log(&w.name));
    }
    rt.store.remove(l)
}
