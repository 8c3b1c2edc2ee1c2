//! `cns kill`.

use cns_runtime::Runtime;
use cns_runtime::ops;

use crate::cli::KillArgs;

pub fn kill(rt: &Runtime, a: KillArgs) -> anyhow::Result<i32> {
    let sig = ops::parse_signal(&a.signal)?;
    ops::kill(rt, &a.name, sig)?;
    Ok(0)
}
