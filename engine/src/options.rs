//! One description of a CRIU dump or restore, rendered two ways: the RPC
//! request cns sends to `criu swrk`, and the equivalent plain `criu`
//! command line (`--print-criu-cmdline`). Both come from the same fields,
//! so what cns prints is what it does.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::proto::{CriuCgMode, CriuNetworkLockMethod, CriuOpts, InheritFd};
use crate::rpc::LOG_LEVEL;

/// Which CRIU operation the options are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Dump,
    /// A dump of the memory only, the tree left running (pre-copy rounds).
    PreDump,
    Restore,
}

impl Operation {
    /// CRIU's subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Dump => "dump",
            Operation::PreDump => "pre-dump",
            Operation::Restore => "restore",
        }
    }
}

/// The switches of CRIU's "advanced usage" that cns turns on, by CRIU's
/// names. Shared by dump and restore (a restore needs what the dump had).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CriuFlags {
    /// `--tcp-established`
    #[serde(default)]
    pub tcp_established: bool,
    /// `--file-locks`
    #[serde(default)]
    pub file_locks: bool,
    /// `--ext-unix-sk`
    #[serde(default)]
    pub ext_unix_sk: bool,
    /// `--shell-job`
    #[serde(default)]
    pub shell_job: bool,
    /// `--link-remap`
    #[serde(default)]
    pub link_remap: bool,
    /// `--evasive-devices`
    #[serde(default)]
    pub evasive_devices: bool,
}

impl CriuFlags {
    /// Every flag set in either.
    pub fn union(self, o: CriuFlags) -> CriuFlags {
        CriuFlags {
            tcp_established: self.tcp_established || o.tcp_established,
            file_locks: self.file_locks || o.file_locks,
            ext_unix_sk: self.ext_unix_sk || o.ext_unix_sk,
            shell_job: self.shell_job || o.shell_job,
            link_remap: self.link_remap || o.link_remap,
            evasive_devices: self.evasive_devices || o.evasive_devices,
        }
    }

    fn args(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.tcp_established, "--tcp-established"),
            (self.file_locks, "--file-locks"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.link_remap, "--link-remap"),
            (self.evasive_devices, "--evasive-devices"),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
    }
}

/// A dump or restore, fully described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuOptions {
    pub op: Operation,
    /// The image directory (shown on the command line; the RPC passes an fd).
    pub images: PathBuf,
    /// Log file name, relative to the work directory.
    pub log_file: String,
    /// Dump: host PID of the tree's root.
    pub pid: Option<i32>,
    /// Dump: keep the tree running.
    pub leave_running: bool,
    /// Dump: keep the tree, stopped (SIGSTOP), with its network locked: a
    /// migration resumes it if the destination fails, kills it if not.
    pub leave_stopped: bool,
    /// Dump: skip connections still waiting in a listen queue.
    pub tcp_skip_in_flight: bool,
    pub flags: CriuFlags,
    /// `--external` entries.
    pub external: Vec<String>,
    /// Restore: the restored root becomes a child of the caller (CRIU's
    /// `rst_sibling`; on the command line, `--restore-detached`).
    pub sibling: bool,
    /// Restore: the root directory (`--root`).
    pub root: Option<String>,
    /// Ask for notify callbacks (the command line's action scripts).
    pub notify: bool,
    /// Dump: the largest deleted file CRIU carries in the image (`--ghost-limit`; CRIU's default 1 MiB).
    pub ghost_limit: Option<u32>,
    /// Restore: memory is served on demand by a lazy-pages daemon (`--lazy-pages`).
    pub lazy_pages: bool,
    /// Dump: send the pages to a page server over this already connected
    /// socket (an fd handed to swrk at its own number) instead of writing
    /// them into the image directory.
    pub page_server_fd: Option<i32>,
    /// Dump: the previous round's images, relative to `images` (pages
    /// unchanged since then are not sent again).
    pub parent_img: Option<String>,
    /// Lock the tree's network while CRIU works (`--network-lock nftables`;
    /// off: `--network-lock skip`). The lock holds TCP connections still
    /// while their state is read or written; its removal waits for an RCU
    /// grace period (about 7 ms here). A restore's CRIU uses the method the
    /// dump recorded in the inventory, whatever the request says.
    pub lock_network: bool,
    /// Dump: track the pages written from now on (soft-dirty), for a next round.
    pub track_mem: bool,
}

impl CriuOptions {
    /// A dump of the tree rooted at `pid` into `images`.
    pub fn dump(pid: i32, images: impl Into<PathBuf>) -> CriuOptions {
        CriuOptions {
            op: Operation::Dump,
            images: images.into(),
            log_file: crate::image::DUMP_LOG.into(),
            pid: Some(pid),
            leave_running: false,
            leave_stopped: false,
            tcp_skip_in_flight: false,
            flags: CriuFlags::default(),
            external: Vec::new(),
            sibling: false,
            root: None,
            notify: true,
            ghost_limit: None,
            lazy_pages: false,
            page_server_fd: None,
            parent_img: None,
            track_mem: false,
            lock_network: true,
        }
    }

    /// A restore from `images`, root `/`, the restored root a child of the caller.
    pub fn restore(images: impl Into<PathBuf>, log_file: impl Into<String>) -> CriuOptions {
        CriuOptions {
            op: Operation::Restore,
            images: images.into(),
            log_file: log_file.into(),
            pid: None,
            leave_running: false,
            leave_stopped: false,
            tcp_skip_in_flight: false,
            flags: CriuFlags::default(),
            external: Vec::new(),
            sibling: true,
            root: Some("/".into()),
            notify: true,
            ghost_limit: None,
            lazy_pages: false,
            page_server_fd: None,
            parent_img: None,
            track_mem: false,
            lock_network: true,
        }
    }

    /// The RPC options, with the image and work directories as fds open in
    /// the caller, and `inherit` fds at their own numbers.
    pub fn to_rpc(&self, images_dir: Option<BorrowedFd<'_>>, work_dir: Option<BorrowedFd<'_>>, inherit: &[(String, BorrowedFd<'_>)]) -> CriuOpts {
        let restore = self.op == Operation::Restore;
        CriuOpts {
            images_dir_fd: images_dir.map_or(-1, |f| f.as_raw_fd()),
            pid: self.pid,
            leave_running: (!restore).then_some(self.leave_running),
            leave_stopped: (!restore && self.leave_stopped).then_some(true),
            tcp_established: Some(self.flags.tcp_established),
            tcp_skip_in_flight: (!restore).then_some(self.tcp_skip_in_flight),
            ext_unix_sk: Some(self.flags.ext_unix_sk),
            file_locks: Some(self.flags.file_locks),
            shell_job: Some(self.flags.shell_job),
            link_remap: Some(self.flags.link_remap),
            evasive_devices: Some(self.flags.evasive_devices),
            ghost_limit: self.ghost_limit,
            lazy_pages: self.lazy_pages.then_some(true),
            ps: self.page_server_fd.filter(|_| !restore).map(|fd| crate::proto::CriuPageServerInfo { fd: Some(fd), ..Default::default() }),
            parent_img: self.parent_img.clone().filter(|_| !restore),
            track_mem: (!restore && self.track_mem).then_some(true),
            log_level: Some(LOG_LEVEL),
            log_file: Some(self.log_file.clone()),
            work_dir_fd: work_dir.map(|f| f.as_raw_fd()),
            notify_scripts: Some(self.notify),
            root: self.root.clone(),
            rst_sibling: restore.then_some(self.sibling),
            inherit_fd: inherit.iter().map(|(key, fd)| InheritFd { key: key.clone(), fd: fd.as_raw_fd() }).collect(),
            external: self.external.clone(),
            network_lock: Some(if self.lock_network { CriuNetworkLockMethod::Nftables } else { CriuNetworkLockMethod::Skip } as i32),
            manage_cgroups_mode: Some(CriuCgMode::Ignore as i32),
            ..Default::default()
        }
    }

    /// The equivalent plain command line. A restore's pidfile is written by
    /// cns itself over RPC (swrk has no pidfile field); `pidfile` adds
    /// CRIU's own `--pidfile` so the line works on its own.
    pub fn command_line(&self, criu: &Path, pidfile: Option<&Path>) -> Vec<String> {
        let mut v = vec![criu.display().to_string(), self.op.name().into()];
        if let Some(pid) = self.pid {
            v.extend(["-t".into(), pid.to_string()]);
        }
        v.extend(["-D".into(), self.images.display().to_string()]);
        v.extend(["-o".into(), self.log_file.clone(), format!("-v{LOG_LEVEL}")]);
        if let Some(root) = &self.root {
            v.extend(["--root".into(), root.clone()]);
        }
        if self.op == Operation::Restore && self.sibling {
            v.push("--restore-detached".into());
        }
        v.extend(["--network-lock", if self.lock_network { "nftables" } else { "skip" }, "--manage-cgroups=ignore"].map(String::from));
        if let Some(pf) = pidfile {
            v.extend(["--pidfile".into(), pf.display().to_string()]);
        }
        for e in &self.external {
            v.extend(["--external".into(), e.clone()]);
        }
        v.extend(self.flags.args().map(String::from));
        if self.lazy_pages {
            v.push("--lazy-pages".into());
        }
        if let Some(g) = self.ghost_limit {
            v.extend(["--ghost-limit".into(), g.to_string()]);
        }
        if self.op != Operation::Restore {
            if let Some(p) = &self.parent_img {
                v.extend(["--prev-images-dir".into(), p.clone()]);
            }
            if self.track_mem {
                v.push("--track-mem".into());
            }
            if self.leave_running {
                v.push("--leave-running".into());
            }
            if self.leave_stopped {
                v.push("--leave-stopped".into());
            }
            if let Some(fd) = self.page_server_fd {
                v.extend(["--page-server".into(), "--ps-socket".into(), fd.to_string()]);
            }
            if self.tcp_skip_in_flight {
                v.push("--tcp-skip-in-flight".into());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_and_command_line_agree() {
        let mut o = CriuOptions::dump(42, "/img");
        o.flags.tcp_established = true;
        o.flags.link_remap = true;
        o.leave_running = true;
        o.tcp_skip_in_flight = true;
        o.external.push("mnt[/x]:k".into());
        let rpc = o.to_rpc(None, None, &[]);
        let line = o.command_line(Path::new("criu"), None).join(" ");
        assert_eq!(rpc.pid, Some(42));
        assert_eq!(rpc.tcp_established, Some(true));
        assert_eq!(rpc.link_remap, Some(true));
        assert_eq!(rpc.leave_running, Some(true));
        assert_eq!(rpc.tcp_skip_in_flight, Some(true));
        assert_eq!(rpc.external, vec!["mnt[/x]:k".to_string()]);
        assert_eq!(line, "criu dump -t 42 -D /img -o dump.log -v4 --network-lock nftables --manage-cgroups=ignore --external mnt[/x]:k --tcp-established --link-remap --leave-running --tcp-skip-in-flight");
        let r = CriuOptions::restore("/img", "restore.log");
        let rpc = r.to_rpc(None, None, &[]);
        assert_eq!(rpc.root.as_deref(), Some("/"));
        assert_eq!(rpc.rst_sibling, Some(true));
        assert_eq!(rpc.leave_running, None);
        let line = r.command_line(Path::new("criu"), Some(Path::new("/p"))).join(" ");
        assert_eq!(line, "criu restore -D /img -o restore.log -v4 --root / --restore-detached --network-lock nftables --manage-cgroups=ignore --pidfile /p");
        // Unlocked: the same switch in both forms.
        let mut u = CriuOptions::restore("/img", "restore.log");
        u.lock_network = false;
        assert_eq!(u.to_rpc(None, None, &[]).network_lock, Some(CriuNetworkLockMethod::Skip as i32));
        assert!(u.command_line(Path::new("criu"), None).join(" ").contains("--network-lock skip "));
        assert_eq!(rpc.network_lock, Some(CriuNetworkLockMethod::Nftables as i32));
    }
}
