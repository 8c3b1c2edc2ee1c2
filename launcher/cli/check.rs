//! `cns check`.

use cns_runtime::Runtime;
use cns_runtime::ops::check;

use crate::cli::CheckArgs;
use crate::cli::render;

pub fn check(rt: &Runtime, a: CheckArgs) -> anyhow::Result<i32> {
    if let Some(img) = &a.image {
        return Ok(render::findings(&check::check_image(rt, img, a.memory_limit.map(|m| m << 20)), a.json.json));
    }
    if let Some(name) = &a.name {
        return Ok(render::findings(&check::check_workload(rt, name)?, a.json.json));
    }
    let lines = check::system(rt);
    let ok = lines.iter().all(|l| l.ok);
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for l in &lines {
            println!("{:<8} {:<14} {}", if l.ok { "ok" } else { "missing" }, l.check, l.detail);
        }
    }
    Ok(if ok { 0 } else { 1 })
}
