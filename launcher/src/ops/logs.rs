//! `logs`: a workload's output.

use std::io::{Read, Write};

use crate::error::{Context, Result};
use crate::runtime::Runtime;
use crate::workload::State;

/// Copies the log of `name` to `out`; with `follow`, until the workload stops.
pub fn logs(rt: &Runtime, name: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
    let w = rt.store.get(name)?;
    let mut f = std::fs::File::open(&w.log).with_context(|| format!("cannot open the log {}", w.log.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        let cur = rt.store.get(name).ok();
        if cur.as_ref().map(|w| w.live_state()) != Some(State::Running) {
            // One last read after it stopped.
            std::io::copy(&mut f, out)?;
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
