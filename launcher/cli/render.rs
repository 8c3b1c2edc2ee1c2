//! Rendering for people: errors (`cns: …` and `hint: …`, once, at the
//! top), progress on a terminal, pre-flight findings, nested values.

use cns_engine::preflight::{Finding, Severity};

/// Prints an error (each cause once) and its hint; returns its exit status.
pub fn report(e: &anyhow::Error) -> i32 {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !s.is_empty() && !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    eprintln!("cns: {}", parts.join(": "));
    let lib = e.chain().find_map(|c| c.downcast_ref::<cns_runtime::Error>());
    if let Some(h) = lib.and_then(|l| l.hint()) {
        eprintln!("hint: {h}");
    }
    lib.map_or(cns_runtime::error::EXIT_CNS, |l| l.status())
}

/// Progress of a long dump or restore on a terminal: one line, rewritten
/// in place, erased when done; notes as `cns: note: …`. Silent when stderr
/// is not a terminal (progress) or with -q (both).
#[derive(Debug)]
pub struct Term {
    progress: bool,
    quiet: bool,
}

impl Term {
    pub fn new(quiet: bool) -> Term {
        use std::io::IsTerminal;
        Term { progress: !quiet && std::io::stderr().is_terminal(), quiet }
    }
}

impl cns_runtime::Events for Term {
    fn stage(&self, what: &str, stage: &str) {
        if self.progress {
            eprint!("\r\x1b[Kcns: {what}: {stage}...");
        }
    }

    fn done(&self) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("cns: note: {message}");
        }
    }
}

/// Prints pre-flight findings; exit status 1 when one blocks.
pub fn findings(findings: &[Finding], json: bool) -> i32 {
    let blocked = findings.iter().any(|f| f.severity == Severity::Blocker);
    if json {
        println!("{}", serde_json::to_string_pretty(findings).unwrap_or_default());
    } else {
        for f in findings {
            let sev = match f.severity {
                Severity::Ok => "ok",
                Severity::Warning => "warning",
                Severity::Blocker => "blocker",
            };
            let fix = if f.fix.is_empty() { String::new() } else { format!(" — fix: {}", f.fix) };
            println!("{sev:<8} {}: {} ({}){fix}", f.code, f.message, f.object);
        }
        if findings.is_empty() {
            println!("ok       nothing blocks a dump");
        }
    }
    if blocked { 1 } else { 0 }
}

/// Milliseconds from microseconds, for stats lines.
pub fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The text form: nested keys indented, lists one item a line.
pub fn print_text(v: &serde_json::Value, indent: &str) {
    let Some(map) = v.as_object() else { return };
    for (k, val) in map {
        match val {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) => {
                println!("{indent}{k}:");
                print_text(val, &format!("{indent}  "));
            }
            serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                println!("{indent}{k}:");
                for i in items {
                    let line: Vec<String> = i.as_object().map(|o| o.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect()).unwrap_or_default();
                    println!("{indent}  - {}", line.join(" "));
                }
            }
            _ => println!("{indent}{k}: {}", scalar(val)),
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

