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
    run_inside(&root, &EnterSpec { name: &opts.name, command: &opts.command, env: &env })
}
