//! `cns rm`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, RmOptions};

use crate::cli::RmArgs;

pub fn rm(rt: &Runtime, a: RmArgs) -> anyhow::Result<i32> {
    ops::rm(rt, &RmOptions { name: a.name, force: a.force, keep_images: a.keep_images })?;
    Ok(0)
}
