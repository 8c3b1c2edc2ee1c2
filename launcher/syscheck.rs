//! `cns check`: can this machine checkpoint? And pre-flight of a workload
//! (`cns check NAME`) or an image (`cns check --image NAME|DIR`).

use std::path::PathBuf;

use cns_engine::preflight::{self, Finding, Severity};
use serde::Serialize;

use crate::Ctx;
use crate::cli::CheckArgs;

#[derive(Debug, Serialize)]
struct Line {
    check: String,
    ok: bool,
    detail: String,
}

fn line(check: &str, ok: bool, detail: impl Into<String>) -> Line {
    Line { check: check.into(), ok, detail: detail.into() }
}

fn system(ctx: &Ctx) -> Vec<Line> {
    let mut v = Vec::new();
    v.push(line("root", nix::unistd::geteuid().is_root(), "namespaces and CRIU need root"));
    match ctx.criu() {
        Ok(c) => {
            v.push(line("criu version", true, format!("{} at {}", c.version, c.path.display())));
            let out = std::process::Command::new(&c.path).arg("check").output();
            let good = out.as_ref().is_ok_and(|o| o.status.success());
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)).unwrap_or_default();
            v.push(line("criu check", good, if good { "Looks good.".to_string() } else { format!("CRIU cannot checkpoint on this kernel: {}", text.lines().last().unwrap_or("")) }));
        }
        Err(e) => {
            let (m, h) = crate::error::render(&e);
            v.push(line("criu", false, format!("{m}; {}", h.unwrap_or_default())))
        }
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

fn print_findings(findings: &[Finding], json: bool) -> i32 {
    let blocked = findings.iter().any(|f| f.severity == Severity::Blocker);
    if json {
        println!("{}", serde_json::to_string_pretty(findings).unwrap_or_default());
    } else {
        for f in findings {
            let sev = match f.severity {
                Severity::Ok => "ok",
                Severity::Warning => "warning",
                Severity::Blocker => "blocker",
            };
            let fix = if f.fix.is_empty() { String::new() } else { format!(" — fix: {}", f.fix) };
            println!("{sev:<8} {}: {} ({}){fix}", f.code, f.message, f.object);
        }
        if findings.is_empty() {
            println!("ok       nothing blocks a dump");
        }
    }
    if blocked { 1 } else { 0 }
}

pub fn check(ctx: &Ctx, args: CheckArgs) -> anyhow::Result<i32> {
    if let Some(img) = &args.image {
        let dir = if img.contains('/') { PathBuf::from(img) } else { ctx.store.get(img).ok().and_then(|w| w.images).unwrap_or_else(|| ctx.images_root().join(img)) };
        let links = cns_netns::Netlink::new().and_then(|n| n.link_names()).unwrap_or_default();
        let mut findings = preflight::check_image(&cns_engine::ImageDir::new(&dir), args.memory_limit.map(|m| m << 20), None, &links);
        if let Ok(meta) = crate::checkpoint::read_meta(&dir) {
            let running = ctx.store.get(&meta.workload.name).is_ok_and(|w| w.live_state() == crate::store::State::Running);
            findings.extend(crate::checkpoint::meta_findings(&meta, ctx.criu().ok().as_ref(), !running));
        }
        return Ok(print_findings(&findings, args.json));
    }
    if let Some(name) = &args.name {
        let w = ctx.store.get(name)?;
        let pid = crate::lifecycle::running_pid(&w)?;
        let needs = preflight::check_dump(pid, false, &ctx.images_root());
        return Ok(print_findings(&needs.findings, args.json));
    }
    let lines = system(ctx);
    let ok = lines.iter().all(|l| l.ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for l in &lines {
            println!("{:<8} {:<14} {}", if l.ok { "ok" } else { "missing" }, l.check, l.detail);
        }
    }
    Ok(if ok { 0 } else { 1 })
}
