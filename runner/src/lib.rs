//! ovlc's engine: scenario discovery and loading (execution, targets and
//! reports come with the executor).

pub mod discover;
