//! What a run tells while it works: rounds starting, host instances
//! finishing, VM batches booting and progressing. The engine emits these to
//! a subscriber (`ovlc` draws progress bars from them, or prints lines in a
//! CI log); the engine itself never prints.

use std::time::Duration;

use crate::targets::vm::VmProgress;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A run of several rounds (or a seeded one) in shuffled orders.
    Shuffled { rounds: usize, seed: u64 },
    /// A round of `instances` starts.
    RoundStarted { round: usize, instances: usize },
    /// A host instance finished.
    InstanceFinished { id: String, target: String },
    /// A VM batch (numbered within its round) starts.
    BatchStarted { batch: usize, target: String, instances: usize },
    /// A machine of a batch booted or started an instance; the batch's
    /// instances before `progress.position` are done.
    BatchProgress { batch: usize, progress: VmProgress, elapsed: Duration },
    /// Every instance of a batch has its outcome.
    BatchFinished { batch: usize, target: String, instances: usize, elapsed: Duration },
    /// Host instances that ran beside kernel trouble run again alone.
    RunAgainAlone { instances: usize },
    /// A round is over.
    RoundFinished { round: usize },
}

/// Whoever listens to a run. Called from the run's worker threads.
pub trait Subscriber: Sync {
    fn event(&self, e: Event);
}

impl<F: Fn(Event) + Sync> Subscriber for F {
    fn event(&self, e: Event) {
        self(e)
    }
}
