//! `kill`: a signal to a workload's root.

use nix::sys::signal::Signal;

use crate::error::{Error, ErrorKind, Result};
use crate::process::Process;
use crate::runtime::Runtime;

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || Error::invalid(format!("unknown signal {s}"), "see `kill -l`");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    full.parse::<Signal>().map_err(|_| bad())
}

/// Sends `sig` to the root of `name`, through a pidfd.
pub fn kill(rt: &Runtime, name: &str, sig: Signal) -> Result<()> {
    let w = rt.store.get(name)?;
    let pid = w.running_pid()?;
    let p = Process::open(pid, w.pid_start).ok_or_else(|| Error::new(ErrorKind::State, format!("workload {name} is not running")))?;
    p.signal(sig).map_err(|e| Error::wrap(format!("cannot signal {name}"), e))
}
