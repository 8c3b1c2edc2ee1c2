//! `cns kill NAME... [-s SIGNAL]` (and the older `cns kill NAME SIGNAL`).

use cns_runtime::Runtime;
use cns_runtime::ops;

use crate::cli::KillArgs;
use crate::cli::render::report;

pub fn kill(rt: &Runtime, mut a: KillArgs) -> anyhow::Result<i32> {
    // `cns kill web USR1`: a last word that names a signal and no workload.
    if a.signal.is_none() && a.names.len() == 2 {
        let last = &a.names[1];
        if ops::parse_signal(last).is_ok() && rt.store.get(last).is_err() {
            a.signal = a.names.pop();
        }
    }
    let sig = ops::parse_signal(a.signal.as_deref().unwrap_or("TERM"))?;
    each(&a.names, |n| ops::kill(rt, n, sig).map_err(anyhow::Error::from))
}

/// Runs `f` on every name, reporting each failure; the status of the worst.
pub fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    if let [one] = names {
        f(one)?;
        return Ok(0);
    }
    let mut status = 0;
    for n in names {
        if let Err(e) = f(n) {
            status = status.max(report(&e));
        }
    }
    Ok(status)
}
