//! The operations, each over option structs of its own, returning typed
//! results and printing nothing. dump, restore, export and import live with
//! the checkpoint code and are re-exported here.

pub mod check;
pub mod exec;
pub mod inspect;
pub mod kill;
pub mod list;
pub mod logs;
pub mod rm;
pub mod run;

pub use crate::checkpoint::adopt::dump_host_tree;
pub use crate::checkpoint::archive::{Compression, ExportOptions, Exported, ImportOptions, Imported, TrustPolicy, export, import};
pub use crate::checkpoint::signing::generate_files as generate_key;
pub use crate::checkpoint::dump::{DumpOptions, DumpOutcome, DumpPlan, dump};
pub use crate::checkpoint::restore::{RestoreOptions, RestorePlan, Restored, restore};
pub use exec::{ExecOptions, exec};
pub use inspect::inspect;
pub use kill::{kill, parse_signal};
pub use list::{PsRow, list};
pub use logs::logs;
pub use rm::{RmOptions, rm};
pub use run::{RunOptions, Started, run, wait_foreground};
