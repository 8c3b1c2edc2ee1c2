//! `cns exec`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, ExecOptions};

use crate::cli::ExecArgs;

pub fn exec(rt: &Runtime, a: ExecArgs) -> anyhow::Result<i32> {
    Ok(ops::exec(rt, &ExecOptions { name: a.name, command: a.command, env: a.env })?)
}
