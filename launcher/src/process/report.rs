//! The one child → parent report: a forked helper (the workload's setup,
//! a detached monitor, the namespace init of an adopted restore) tells the
//! command that forked it whether it started, over a close-on-exec pipe.
//! JSON, one message, then the pipe closes.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::error::{EXIT_CNS, Error, ErrorKind};

/// What the child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// It started; the host PID of the root it started.
    Started { pid: i32 },
    /// It failed: one sentence, the fix, and the exit status to use.
    Failed { message: String, hint: String, status: i32 },
}

impl Report {
    /// The report for a library error.
    pub fn failed(e: &Error) -> Report {
        Report::Failed { message: e.one_line(), hint: e.hint().unwrap_or_default(), status: e.status() }
    }

    /// Writes the report into `w` (the child's end of the pipe).
    pub fn send(&self, w: OwnedFd) {
        if let Ok(text) = serde_json::to_vec(self) {
            let mut f = std::fs::File::from(w);
            let _ = f.write_all(&text);
        }
    }

    /// Reads the report from `r`; `None` when the child closed the pipe
    /// without writing (for the workload's setup: it exec'd).
    pub fn receive(r: OwnedFd) -> Option<Report> {
        let mut text = Vec::new();
        let _ = std::fs::File::from(r).read_to_end(&mut text);
        if text.is_empty() {
            return None;
        }
        Some(serde_json::from_slice(&text).unwrap_or_else(|_| Report::Failed {
            message: format!("unreadable report from a child: {}", String::from_utf8_lossy(&text).trim()),
            hint: "run with -v".into(),
            status: EXIT_CNS,
        }))
    }

    /// The started PID, or the failure as an error of `kind`.
    pub fn into_result(self, kind: ErrorKind) -> Result<i32, Error> {
        match self {
            Report::Started { pid } => Ok(pid),
            Report::Failed { message, hint, status } => Err(Error::new(kind, message).with_hint(hint).with_status(status)),
        }
    }
}
