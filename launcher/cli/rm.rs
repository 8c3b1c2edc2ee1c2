//! `cns rm NAME...`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, RmOptions};

use crate::cli::RmArgs;

pub fn rm(rt: &Runtime, a: RmArgs) -> anyhow::Result<i32> {
    crate::cli::kill::each(&a.names, |n| {
        ops::rm(rt, &RmOptions { name: n.to_string(), force: a.force, keep_images: a.keep_images }).map_err(anyhow::Error::from)
    })
}
