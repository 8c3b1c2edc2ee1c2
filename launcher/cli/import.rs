//! `cns import`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, ImportOptions};

use crate::cli::ImportArgs;

pub fn import(rt: &Runtime, a: ImportArgs, quiet: bool) -> anyhow::Result<i32> {
    let opts = ImportOptions { file: a.file, as_name: a.as_name, max_bytes: a.max_size.saturating_mul(1 << 20), trust: a.trust };
    let out = ops::import(rt, &opts)?;
    if !quiet {
        let signed = out.signer.map(|k| format!(", signed by trusted key {k}")).unwrap_or_else(|| ", unsigned".into());
        println!("imported {0} (dumped by CRIU {1} on {2}{signed}); restore it with `cns restore {0}`", out.name, out.criu_version, out.kernel);
    }
    Ok(0)
}
