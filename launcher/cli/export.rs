//! `cns export`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, ExportOptions};

use crate::cli::ExportArgs;

pub fn export(rt: &Runtime, a: ExportArgs, quiet: bool) -> anyhow::Result<i32> {
    let out = ops::export(rt, &ExportOptions { name: a.name, output: a.output, compression: a.compress.0, sign: a.sign })?;
    if !quiet {
        let signed = out.signer.map(|k| format!(", signed by key {k}")).unwrap_or_default();
        println!("exported {} to {} ({:.1} MiB{signed})", out.name, out.output.display(), out.bytes as f64 / (1 << 20) as f64);
    }
    Ok(0)
}
