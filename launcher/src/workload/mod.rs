//! The workload model and its store: the record and its state
//! transitions, where things live, the config, and the locked store.

pub mod config;
pub mod paths;
pub mod record;
pub mod store;

pub use config::Config;
pub use paths::Paths;
pub use record::{NetConfig, NetMode, Publish, State, Workload, generate_name, validate_name};
pub use store::{Locked, Store};
