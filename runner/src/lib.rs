//! ovlc's engine: scenario discovery, the executor (layers, mounts, raw
//! system calls, canonical trees, expectations), host targets, snapshots and
//! reports. Only the `ovlc` binary prints.

pub mod bench;
pub mod check;
pub mod cleanup;
pub mod differences;
pub mod discover;
pub mod exec;
pub mod explain;
pub mod guest;
pub mod host;
pub mod html;
pub mod junit;
pub mod kmsg;
pub mod layer;
pub mod oci;
pub mod ops;
pub mod repeat;
pub mod report;
pub mod snapshot;
pub mod sys;
pub mod tree;
pub mod watchdog;
