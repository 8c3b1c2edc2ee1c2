use crate::Ctx;
use crate::cli::CheckArgs;
pub fn check(_ctx: &Ctx, _a: CheckArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
