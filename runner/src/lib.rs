//! ovlc's engine. The modules follow the data flow of a run:
//! scenario files are found (`discover`), turned into plans (`plan`), run by
//! a target (`targets`: host drivers, the rootless agent, VMs) through the
//! interpreter (`exec`), which yields outcomes (`model`); the engine
//! (`engine`) drives a run and emits `events`; `snapshot` and `report` judge
//! and render the outcomes. `oci`, `tree`, `bench` and `sys` serve them;
//! `scaffold` holds the starting scenarios of `ovlc new`.
//! The engine prints nothing: the `ovlc` binary renders its events and
//! results (the processes it starts, the rootless agent and a guest's PID 1,
//! speak on their standard output to the host). See docs/architecture.md.

pub mod author;
pub mod bench;
pub mod discover;
pub mod engine;
pub mod error;
pub mod events;
pub mod exec;
pub mod guest;
pub mod model;
pub mod oci;
pub mod plan;
pub mod report;
pub mod repro;
pub mod scaffold;
pub mod settings;
pub mod snapshot;
pub mod sys;
pub mod targets;
pub mod tree;

pub use error::{Error, ErrorKind};
