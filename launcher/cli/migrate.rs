//! `cns migrate` and the hidden `cns receive`.

use cns_runtime::Runtime;
use cns_runtime::migrate::{self, MigrateOptions};

use crate::cli::MigrateArgs;
use crate::cli::render::Term;

/// A peer that goes away mid-stream is an error to handle (resume the
/// workload here), never a signal that ends cns with the tree stopped.
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

pub fn migrate(rt: &Runtime, a: MigrateArgs, quiet: bool) -> anyhow::Result<i32> {
    ignore_sigpipe();
    let opts = MigrateOptions { name: a.name, dest: a.dest, ssh: a.ssh.split_whitespace().map(String::from).collect(), remote_cns: a.remote_cns, precopy: a.precopy, lazy: a.lazy };
    let r = migrate::migrate(rt, &opts, &Term::new(quiet || a.json.json))?;
    if a.json.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if !quiet {
        let at = r.dest_ip.as_deref().map(|ip| format!(" at {ip}")).unwrap_or_default();
        let pid = r.dest_pid.map(|p| format!(" (pid {p} there)")).unwrap_or_default();
        println!(
            "migrated {} to {} ({}) in {} ms, frozen {} ms, {:.1} MiB moved ({} image files); running there{at}{pid}",
            r.name,
            r.dest,
            r.mode,
            r.total_ms,
            r.frozen_ms,
            r.bytes as f64 / (1 << 20) as f64,
            r.files
        );
    }
    Ok(0)
}

/// Speaks the migration protocol on stdin/stdout; logs go to stderr.
pub fn receive(rt: &Runtime) -> anyhow::Result<i32> {
    ignore_sigpipe();
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin());
    migrate::receive(rt, &mut input, Box::new(std::io::stdout()))?;
    Ok(0)
}
