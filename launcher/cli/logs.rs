//! `cns logs`.

use cns_runtime::Runtime;

use crate::cli::LogsArgs;

pub fn logs(rt: &Runtime, a: LogsArgs) -> anyhow::Result<i32> {
    cns_runtime::ops::logs(rt, &a.name, a.follow, &mut std::io::stdout())?;
    Ok(0)
}
