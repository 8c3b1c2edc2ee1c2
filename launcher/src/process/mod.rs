//! Processes: the one clone helper, the workload's setup and its init, the
//! host-side monitor, capabilities and seccomp, entering a running
//! workload, and the pidfd handle every signal and wait goes through.
//! Nothing here knows about the workload store.

pub mod clone;
pub mod enter;
pub mod handle;
pub mod init;
pub mod monitor;
pub mod report;
pub mod security;
pub mod spawn;
pub mod stat;

pub use handle::Process;
pub use report::Report;
