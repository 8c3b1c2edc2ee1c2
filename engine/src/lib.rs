//! The CRIU engine of cns.
//!
//! cns never shells out to `criu dump`/`criu restore` for real work: it talks
//! to `criu swrk` over CRIU's protobuf RPC on a `SOCK_SEQPACKET` socketpair
//! ([`rpc`]), one swrk process per operation. This crate knows where CRIU is
//! and whether it is new enough ([`criu`]), how an image directory is laid out
//! and what it holds ([`image`]), and how to turn CRIU's log into one sentence
//! with a fix ([`explain`]). [`preflight`] answers "will this work?" before
//! anything is frozen.

pub mod criu;
pub mod explain;
pub mod image;
pub mod kdat;
pub mod lazy;
pub mod options;
pub mod page_server;
pub mod preflight;
pub mod rpc;
pub mod sockdiag;

/// Types generated from `proto/rpc.proto` and `proto/images.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

pub use criu::{Criu, CriuError, CriuVersion};
pub use explain::{Explanation, explain_log};
pub use image::{DumpStats, ImageDir, ImageError, RestoreStats};
pub use options::{CriuFlags, CriuOptions, Operation};
pub use rpc::{Dirs, Notify, NotifyAction, PrivateMount, RpcError, Swrk};
