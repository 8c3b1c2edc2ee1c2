//! cns: run Linux workloads in fresh namespaces, checkpointable from birth.
//!
//! The library under the `cns` command. Each operation (run, list, inspect,
//! exec, kill, rm, dump, restore, check, export, import) takes an options
//! struct of its own and returns a typed result; progress reaches the caller
//! through [`Events`]; nothing here prints. The parts:
//!
//! - [`workload`]: the record, its states and transitions, the locked store, paths, config
//! - [`process`]: clone, the workload's setup and init, the monitor, pidfd handles
//! - [`confine`]: a root file system of its own, bind and tmpfs mounts, read-only root
//! - [`net`]: addresses, leases, host veth names, published ports
//! - [`checkpoint`]: dump (plan, commit), restore (plan, execute), adoption, archives
//! - [`migrate`]: moving a live workload to another host over ssh
//! - [`recovery`]: cleaning up after a command that died half-way
//! - [`ops`]: the operations

pub mod checkpoint;
pub mod confine;
pub mod migrate;
pub mod error;
pub mod files;
pub mod net;
pub mod ops;
pub mod process;
pub mod recovery;
pub mod runtime;
pub mod workload;

pub use error::{Error, ErrorKind, Result};
pub use runtime::{Events, NoEvents, Runtime};
