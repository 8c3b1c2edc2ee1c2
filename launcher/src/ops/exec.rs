//! `exec`: a command inside a running workload.

use crate::error::{Error, ErrorKind, Result};
use crate::process::Process;
use crate::process::enter::{EnterSpec, run_inside};
use crate::runtime::Runtime;

/// What to run where.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub name: String,
    pub command: Vec<String>,
    /// `K=V` pairs.
    pub env: Vec<String>,
}

/// Runs the command inside the workload and returns its exit status.
pub fn exec(rt: &Runtime, opts: &ExecOptions) -> Result<i32> {
    let w = rt.store.get(&opts.name)?;
    let pid = w.running_pid()?;
    let env = crate::ops::run::parse_env(&opts.env)?;
    rt.require_root()?;
    let root = Process::open(pid, w.pid_start).ok_or_else(|| Error::new(ErrorKind::State, format!("workload {} is not running", opts.name)))?;
    // The confinement the workload's own command runs under.
    let cap_drop = crate::process::security::parse_cap_drop(&w.cap_drop)?;
    let seccomp = match &w.seccomp {
        Some(p) => Some(crate::process::security::compile_seccomp(p).map_err(|e| {
            Error::wrap(format!("workload {} runs under the seccomp filter {}, which cannot be read now", opts.name, p.display()), e)
                .with_hint("put the filter file back: exec never runs without the workload's filter")
        })?),
        None => None,
    };
    // The workload's command is init's child (an adopted tree's root too).
    let command = crate::process::stat::first_child(pid);
    let no_new_privs = seccomp.is_some() || command.is_some_and(crate::process::stat::has_no_new_privs);
    let spec = EnterSpec { name: &opts.name, command: &opts.command, env: &env, cap_drop: &cap_drop, seccomp: seccomp.as_ref(), user: w.confine.user.as_ref(), cgroups: if w.confine.limits.is_empty() { vec![] } else { crate::confine::cgroup::dirs(&w.name) }, no_new_privs, cwd_of: command };
    run_inside(&root, &spec)
}
