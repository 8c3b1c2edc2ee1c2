//! `cns ps`.

use cns_runtime::Runtime;
use cns_runtime::workload::State;

use crate::cli::PsArgs;

pub fn ps(rt: &Runtime, a: PsArgs) -> anyhow::Result<i32> {
    let rows = cns_runtime::ops::list(rt);
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<20} {:<8} {:>8} {:<15} COMMAND", "NAME", "STATE", "PID", "IP");
    for r in rows {
        let state = match (r.state, r.exit_code) {
            (State::Exited, Some(c)) => format!("exited({c})"),
            (s, _) => s.to_string(),
        };
        let pid = r.pid.map_or("-".into(), |p| p.to_string());
        println!("{:<20} {:<8} {:>8} {:<15} {}", r.name, state, pid, r.ip.unwrap_or_else(|| "-".into()), one_line(&r.command.join(" ")));
    }
    Ok(0)
}

/// A command on one line: newlines, tabs and other control characters escaped.
pub fn one_line(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_stay_on_one_line() {
        assert_eq!(super::one_line("sh -c 'a\nb\tc\u{1b}[2J'"), "sh -c 'a\\nb\\tc\\u{1b}[2J'");
    }
}
