//! Checkpoints: dump (plan, pre-flight, CRIU, commit), restore (plan, then
//! execute), adoption of host trees, cns's metadata, portable archives,
//! and CRIU failures explained.

pub mod adopt;
pub mod archive;
pub mod commit;
pub mod dump;
pub mod failure;
pub mod hooks;
pub mod lazy;
pub mod meta;
pub mod restore;
pub mod signing;

pub use dump::{DumpOptions, DumpOutcome, DumpPlan};
pub use meta::{Meta, read_meta};
pub use restore::{RestoreOptions, RestorePlan, Restored};

/// The key of the log's bind mount in CRIU's external-mount map.
pub const STDIO_KEY: &str = "cns-stdio";
