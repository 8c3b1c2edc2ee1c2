//! `cns inspect`, `cns completions`, and man page generation.

use clap::CommandFactory;

use crate::store::State;
use crate::{Ctx, bail_hint};
use crate::cli::{Cli, CompletionsArgs, InspectArgs, ManArgs};

/// `cns inspect NAME|DIR`: a workload (live facts when it runs, and its
/// last checkpoint) or a checkpoint directory. The JSON field names are
/// stable (docs/json.md); the text form shows the same facts.
pub fn inspect(ctx: &Ctx, args: InspectArgs) -> anyhow::Result<i32> {
    let mut v = serde_json::Map::new();
    let images = if args.name.contains('/') {
        Some(std::path::PathBuf::from(&args.name))
    } else {
        let w = ctx.store.get(&args.name)?;
        let state = w.live_state();
        v.insert("name".into(), w.name.clone().into());
        v.insert("state".into(), serde_json::to_value(state)?);
        v.insert("command".into(), serde_json::to_value(&w.command)?);
        v.insert("created".into(), w.created.into());
        v.insert("pid".into(), serde_json::to_value(w.live_pid())?);
        v.insert("exit_code".into(), serde_json::to_value(w.exit_code)?);
        v.insert("namespaces".into(), serde_json::to_value(&w.namespaces)?);
        v.insert("network".into(), serde_json::json!({
            "mode": w.net.mode,
            "ip": w.net.addrs.map(|a| a.inner.to_string()),
            "host_ip": w.net.addrs.map(|a| a.host.to_string()),
            "prefix": w.net.addrs.map(|a| a.prefix),
            "host_if": w.net.host_if,
            "publish": w.net.publish,
        }));
        v.insert("log".into(), serde_json::to_value(&w.log)?);
        v.insert("restored_from".into(), serde_json::to_value(&w.restored_from)?);
        v.insert("adopted".into(), w.adopted.into());
        if let (State::Running, Some(pid)) = (state, w.live_pid()) {
            v.insert("processes".into(), serde_json::to_value(live_tree(pid))?);
        }
        w.images.clone()
    };
    if let Some(dir) = images.filter(|d| d.join(cns_engine::image::META_FILE).exists()) {
        let img = cns_engine::ImageDir::new(&dir);
        let meta = crate::checkpoint::read_meta(&dir)?;
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
            "flags": {"tcp_established": meta.tcp_established, "file_locks": meta.file_locks, "ext_unix_sk": meta.ext_unix_sk, "shell_job": meta.shell_job},
            "dump_stats": meta.stats,
            "last_restore": meta.last_restore,
        }));
    } else if args.name.contains('/') {
        bail_hint!("point it at a directory written by `cns dump`", "{} is not a cns checkpoint", args.name);
    }
    let v = serde_json::Value::Object(v);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_text(&v, "");
    }
    Ok(0)
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

/// The text form: nested keys indented, lists one item a line.
fn print_text(v: &serde_json::Value, indent: &str) {
    let Some(map) = v.as_object() else { return };
    for (k, val) in map {
        match val {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) => {
                println!("{indent}{k}:");
                print_text(val, &format!("{indent}  "));
            }
            serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                println!("{indent}{k}:");
                for i in items {
                    let line: Vec<String> = i.as_object().map(|o| o.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect()).unwrap_or_default();
                    println!("{indent}  - {}", line.join(" "));
                }
            }
            _ => println!("{indent}{k}: {}", scalar(val)),
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let shell = match args.shell.as_str() {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        _ => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "cns", &mut std::io::stdout());
    Ok(0)
}

/// Writes cns.1 and cns-<sub>.1 from the clap definitions.
pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(args.dir.join("cns.1"), &buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cns-{}", sub.get_name());
        let sub = sub.clone().name(clap::builder::Str::from(name.clone().leak() as &str));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        std::fs::write(args.dir.join(format!("{name}.1")), &buf)?;
    }
    Ok(0)
}
