//! `cns restore`.

use cns_runtime::Runtime;
use cns_runtime::checkpoint::restore;
use cns_runtime::ops::{self, RestoreOptions};

use crate::cli::RestoreArgs;
use crate::cli::render::{Term, ms};

pub fn restore(rt: &Runtime, a: RestoreArgs, quiet: bool) -> anyhow::Result<i32> {
    let opts = RestoreOptions {
        name: a.name,
        as_name: a.as_name,
        images: a.images.images,
        flags: (&a.criu).into(),
        keep_ip: a.keep_ip,
        new_ip: a.new_ip,
        no_preflight: a.preflight.no_preflight,
        memory_limit: a.memory_limit.map(|m| m << 20),
        detach: a.start.detach,
        pidfile: a.start.pidfile,
        publish: a.publish.publish,
        action_scripts: a.hooks.action_scripts,
        lazy: a.lazy,
        lazy_page_server: None,
        rootfs: a.rootfs,
        binds: a.binds,
        no_outbound: a.no_outbound,
        address: None,
    };
    if a.cmdline.print_criu_cmdline {
        rt.require_root()?;
        println!("{}", restore::plan(rt, &opts)?.command_line());
        return Ok(0);
    }
    let r = restore::restore(rt, &opts, &Term::new(quiet))?;
    if a.json.json {
        println!("{}", serde_json::json!({"name": r.name, "pid": r.pid, "stats": r.stats}));
    } else if !quiet {
        match &r.stats {
            Some(s) => println!("restored {} (pid {}): forking {}, restore {}, {} pages restored", r.name, r.pid, ms(s.forking_time_us), ms(s.restore_time_us), s.pages_restored),
            None => println!("restored {} (pid {})", r.name, r.pid),
        }
    }
    if opts.detach {
        return Ok(0);
    }
    Ok(ops::wait_foreground(rt, &r.name, r.pid, &r.log, r.log_offset, &mut std::io::stdout()))
}
