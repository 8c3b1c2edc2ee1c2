//! `inspect`: everything about a workload or a checkpoint directory, as
//! one JSON value (field names are stable: docs/json.md).

use crate::bail_hint;
use crate::checkpoint::read_meta;
use crate::error::{ErrorKind, Result};
use crate::runtime::Runtime;
use crate::workload::State;

/// `cns inspect NAME|DIR`: a workload (live facts when it runs, and its
/// last checkpoint) or a checkpoint directory. The JSON field names are
/// stable (docs/json.md); the text form shows the same facts.
pub fn inspect(rt: &Runtime, target: &str) -> Result<serde_json::Value> {
    if std::fs::metadata(target).is_ok_and(|m| m.is_file()) {
        // An archive written by `cns export`.
        return crate::checkpoint::archive::inspect_archive(rt, std::path::Path::new(target));
    }
    let mut v = serde_json::Map::new();
    let images = if target.contains('/') {
        Some(std::path::PathBuf::from(target))
    } else {
        let w = rt.store.get(target)?;
        let state = w.live_state();
        v.insert("name".into(), w.name.clone().into());
        v.insert("state".into(), serde_json::to_value(state)?);
        v.insert("command".into(), serde_json::to_value(&w.command)?);
        v.insert("created".into(), w.created.into());
        v.insert("pid".into(), serde_json::to_value(w.live_pid())?);
        v.insert("exit_code".into(), serde_json::to_value(w.exit_code)?);
        v.insert("namespaces".into(), serde_json::to_value(&w.namespaces)?);
        v.insert("network".into(), serde_json::json!({
            "mode": w.net.mode.to_string(),
            "ip": w.net.addrs.map(|a| a.inner.to_string()),
            "host_ip": w.net.addrs.map(|a| a.host.to_string()),
            "prefix": w.net.addrs.map(|a| a.prefix),
            "host_if": w.net.host_if,
            "publish": w.net.publish.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "publish_connection_limit": crate::net::publish::MAX_CONNECTIONS,
        }));
        v.insert("log".into(), serde_json::to_value(&w.log)?);
        v.insert("restored_from".into(), serde_json::to_value(&w.restored_from)?);
        v.insert("confinement".into(), serde_json::to_value(&w.confine)?);
        if !w.confine.limits.is_empty() {
            v.insert("resources".into(), serde_json::to_value(crate::confine::cgroup::usage(&w.name, &w.confine.limits))?);
        }
        v.insert("adopted".into(), w.adopted.into());
        if let (State::Running, Some(pid)) = (state, w.live_pid()) {
            v.insert("processes".into(), serde_json::to_value(live_tree(pid))?);
        }
        w.images.clone()
    };
    if let Some(dir) = images.filter(|d| d.join(cns_engine::image::META_FILE).exists()) {
        let img = cns_engine::ImageDir::new(&dir);
        let meta = read_meta(&dir)?;
        let kinds = img.file_kinds().ok();
        v.insert("checkpoint".into(), serde_json::json!({
            "dir": dir,
            "name": meta.workload.name,
            "dumped_at": meta.dumped_at,
            "criu_version": meta.criu_version,
            "kernel": meta.kernel,
            "cns_version": meta.cns_version,
            "image_bytes": img.image_bytes().ok(),
            "page_bytes": img.page_bytes().ok(),
            "processes": img.tree().ok(),
            "open_files": kinds,
            "flags": {"tcp_established": meta.flags.tcp_established, "file_locks": meta.flags.file_locks, "ext_unix_sk": meta.flags.ext_unix_sk, "shell_job": meta.flags.shell_job},
            // Earlier checkpoints carry them in cns.json too; CRIU's stats-dump has them all.
            "dump_stats": meta.stats.clone().or_else(|| img.dump_stats().ok()),
            // CRIU's stats-restore of the latest restore (earlier cns
            // versions also copied it into cns.json).
            "last_restore": img.restore_stats().ok().or(meta.last_restore),
        }));
    } else if target.contains('/') {
        bail_hint!(kind: ErrorKind::NotFound, "point it at a directory written by `cns dump`", "{target} is not a cns checkpoint");
    }
    Ok(serde_json::Value::Object(v))
}

/// One process of a running tree.
#[derive(Debug, serde::Serialize)]
struct LiveProcess {
    /// PID on the host.
    pid: i32,
    /// PID inside the workload's pid namespace.
    ns_pid: Option<i32>,
    ppid: i32,
    comm: String,
    fds: usize,
    sockets: usize,
}

fn live_tree(root: i32) -> Vec<LiveProcess> {
    cns_engine::preflight::tree_pids(root)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |f: &str| status.lines().find_map(|l| l.strip_prefix(f)).map(|s| s.trim().to_string());
            let ns_pid = field("NSpid:").and_then(|s| s.split_whitespace().last().and_then(|p| p.parse().ok()));
            let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|rd| rd.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|p| p.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            Some(LiveProcess {
                pid,
                ns_pid,
                ppid: field("PPid:").and_then(|p| p.parse().ok()).unwrap_or(0),
                comm: field("Name:").unwrap_or_default(),
                fds: links.len(),
                sockets: links.iter().filter(|l| l.starts_with("socket:")).count(),
            })
        })
        .collect()
}
