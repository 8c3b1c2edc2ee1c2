use crate::Ctx;
use crate::cli::*;
pub fn inspect(_ctx: &Ctx, _a: InspectArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
pub fn export(_ctx: &Ctx, _a: ExportArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
pub fn import(_ctx: &Ctx, _a: ImportArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
pub fn completions(_a: CompletionsArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
pub fn man(_a: ManArgs) -> anyhow::Result<i32> { anyhow::bail!("todo") }
