//! `list`: every workload, one row each.

use serde::Serialize;

use crate::runtime::Runtime;
use crate::workload::{State, Workload};

/// One row of `cns ps --json` (field names are stable; see docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct PsRow {
    pub name: String,
    pub state: State,
    pub pid: Option<i32>,
    pub command: Vec<String>,
    pub created: u64,
    pub ip: Option<String>,
    pub host_if: Option<String>,
    pub exit_code: Option<i32>,
    pub images: Option<String>,
    pub restored_from: Option<String>,
    pub adopted: bool,
    /// Usage against the limits (workloads with --memory/--pids/--cpus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::confine::cgroup::Usage>,
}

impl From<&Workload> for PsRow {
    fn from(w: &Workload) -> PsRow {
        let state = w.live_state();
        PsRow {
            name: w.name.clone(),
            state,
            pid: w.live_pid(),
            command: w.command.clone(),
            created: w.created,
            ip: w.net.addrs.map(|a| a.inner.to_string()),
            host_if: w.net.host_if.clone(),
            exit_code: if state == State::Exited { w.exit_code } else { None },
            images: w.images.as_ref().map(|p| p.display().to_string()),
            restored_from: w.restored_from.clone(),
            adopted: w.adopted,
            resources: (!w.confine.limits.is_empty()).then(|| crate::confine::cgroup::usage(&w.name, &w.confine.limits)),
        }
    }
}

/// All workloads, sorted by name.
pub fn list(rt: &Runtime) -> Vec<PsRow> {
    rt.store.list().iter().map(PsRow::from).collect()
}
