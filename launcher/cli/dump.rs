//! `cns dump` (and `cns dump --pid`, adoption of a host tree).

use cns_runtime::Runtime;
use cns_runtime::checkpoint::{adopt, dump};
use cns_runtime::ops::{DumpOptions, DumpOutcome};

use crate::cli::DumpArgs;
use crate::cli::render::{Term, ms};

pub fn dump(rt: &Runtime, a: DumpArgs, quiet: bool) -> anyhow::Result<i32> {
    cns_runtime::workload::validate_name(&a.name)?;
    let opts = DumpOptions {
        name: a.name.clone(),
        images: a.images.images,
        leave_running: a.leave_running,
        tcp_skip_in_flight: a.tcp_skip_in_flight,
        flags: (&a.criu).into(),
        no_preflight: a.preflight.no_preflight,
        action_scripts: a.hooks.action_scripts,
    };
    if a.cmdline.print_criu_cmdline {
        rt.require_root()?;
        let plan = match a.pid {
            Some(pid) => adopt::plan(rt, &opts, pid)?,
            None => dump::plan_for(rt, &opts)?,
        };
        println!("{}", plan.command_line());
        return Ok(0);
    }
    let term = Term::new(quiet);
    let out = match a.pid {
        Some(pid) => adopt::dump_host_tree(rt, pid, &opts, &term)?,
        None => dump::dump(rt, &opts, &term)?,
    };
    print_stats(&out, a.json.json, quiet);
    Ok(0)
}

fn print_stats(out: &DumpOutcome, json: bool, quiet: bool) {
    let (name, images) = (&out.name, out.images.display());
    if json {
        println!("{}", serde_json::json!({"name": name, "images": out.images, "stats": out.stats}));
        return;
    }
    if quiet {
        return;
    }
    match &out.stats {
        Some(s) => println!(
            "dumped {name} to {images}: freezing {}, frozen {}, memory dump {}, memory write {}, {} pages written, image {:.1} MiB",
            ms(s.freezing_time_us),
            ms(s.frozen_time_us),
            ms(s.memdump_time_us),
            ms(s.memwrite_time_us),
            s.pages_written,
            s.image_bytes as f64 / (1 << 20) as f64
        ),
        None => println!("dumped {name} to {images}"),
    }
}
