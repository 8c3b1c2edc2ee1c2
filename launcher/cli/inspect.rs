//! `cns inspect`.

use cns_runtime::Runtime;

use crate::cli::InspectArgs;

pub fn inspect(rt: &Runtime, a: InspectArgs) -> anyhow::Result<i32> {
    let v = cns_runtime::ops::inspect(rt, &a.name)?;
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        crate::cli::render::print_text(&v, "");
    }
    Ok(0)
}
