//! `check`: can this machine checkpoint? And pre-flight of a workload
//! (before a dump) or a checkpoint (before a restore).

use std::path::PathBuf;

use cns_engine::preflight::{self, Finding};
use serde::Serialize;

use crate::checkpoint::meta::{meta_findings, read_meta};
use crate::error::Result;
use crate::runtime::Runtime;
use crate::workload::State;

/// One line of the machine check.
#[derive(Debug, Clone, Serialize)]
pub struct SystemCheck {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn line(check: &str, ok: bool, detail: impl Into<String>) -> SystemCheck {
    SystemCheck { check: check.into(), ok, detail: detail.into() }
}

/// Whether this machine can run and checkpoint workloads.
pub fn system(rt: &Runtime) -> Vec<SystemCheck> {
    let mut v = Vec::new();
    v.push(line("root", nix::unistd::geteuid().is_root(), "namespaces and CRIU need root"));
    match rt.criu() {
        Ok(c) => {
            v.push(line("criu version", true, format!("{} at {}", c.version, c.path.display())));
            let out = std::process::Command::new(&c.path).arg("check").output();
            let good = out.as_ref().is_ok_and(|o| o.status.success());
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)).unwrap_or_default();
            v.push(line("criu check", good, if good { "Looks good.".to_string() } else { format!("CRIU cannot checkpoint on this kernel: {}", text.lines().last().unwrap_or("")) }));
        }
        Err(e) => v.push(line("criu", false, format!("{}; {}", e.one_line(), e.hint().unwrap_or_default()))),
    }
    for ns in ["pid", "mnt", "net", "uts", "ipc", "time"] {
        let p = format!("/proc/self/ns/{ns}");
        v.push(line(&format!("{ns} namespace"), std::path::Path::new(&p).exists(), "each workload gets its own"));
    }
    v.push(line("ns_last_pid", std::path::Path::new("/proc/sys/kernel/ns_last_pid").exists(), "CRIU restores PIDs through it"));
    let netlink = cns_netns::Netlink::new().and_then(|n| n.link_index("lo")).is_ok_and(|i| i.is_some());
    v.push(line("netlink", netlink, "cns configures veths over rtnetlink"));
    let veth = std::path::Path::new("/sys/module/veth").exists() || std::fs::read_to_string("/proc/config.gz").is_err();
    v.push(line("veth", veth, "workloads reach the host through a veth pair"));
    let cg2 = nix::sys::statfs::statfs("/sys/fs/cgroup").map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).unwrap_or(false);
    v.push(line("cgroup mode", true, if cg2 { "cgroup v2 (unified)" } else { "cgroup v1/hybrid (cns leaves cgroups to the host: --manage-cgroups=ignore)" }));
    v
}

/// Restore pre-flight of a checkpoint (a name or a directory).
pub fn check_image(rt: &Runtime, image: &str, memory_limit: Option<u64>) -> Vec<Finding> {
    let dir = if image.contains('/') { PathBuf::from(image) } else { rt.store.get(image).ok().and_then(|w| w.images).unwrap_or_else(|| rt.default_images(image)) };
    let links = cns_netns::Netlink::new().and_then(|n| n.link_names()).unwrap_or_default();
    let mut findings = preflight::check_image(&cns_engine::ImageDir::new(&dir), memory_limit, None, &links, &[]);
    if let Ok(meta) = read_meta(&dir) {
        let running = rt.store.get(&meta.workload.name).is_ok_and(|w| w.live_state() == State::Running);
        findings.extend(meta_findings(&meta, rt.criu().ok().as_ref(), !running));
    }
    findings
}

/// Dump pre-flight of a running workload.
pub fn check_workload(rt: &Runtime, name: &str) -> Result<Vec<Finding>> {
    let w = rt.store.get(name)?;
    let pid = w.running_pid()?;
    Ok(preflight::check_dump(pid, false, &rt.images_root()).findings)
}
