//! `cns dump` and `cns restore`.
use crate::Ctx;
use crate::cli::{DumpArgs, RestoreArgs};
pub fn dump(_ctx: &Ctx, _a: DumpArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
pub fn restore(_ctx: &Ctx, _a: RestoreArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
