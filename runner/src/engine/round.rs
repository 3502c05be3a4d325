//! One round of a run: every plan once, host instances on a thread pool and
//! VM batches on a pool of machines, side by side; then the host instances
//! that shared kernel trouble run again alone.

use std::time::Instant;

use rayon::prelude::*;

use super::batches;
use crate::error::{Error, Result};
use crate::events::{Event, Subscriber};
use crate::model::{Outcome, Plan};
use crate::plan::Target;
use crate::targets::host::{self, Workspace};
use crate::targets::vm::{self, CustomKernel, VmProgress};

/// What every round of a run shares.
pub struct Round<'a> {
    pub ws: &'a Workspace,
    pub jobs: usize,
    pub catalog: &'a ::vm::kernels::CatalogSource,
    pub custom: Option<&'a CustomKernel>,
    pub events: &'a dyn Subscriber,
}

/// Outcomes with the index of their plan.
type Numbered = Vec<(usize, Outcome)>;

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Infrastructure(format!("cannot start {threads} worker threads: {e}")))
}

impl Round<'_> {
    /// Runs every plan once, starting them in `order` (a permutation of the
    /// plans' indices); outcomes come back in the plans' order.
    pub fn execute(&self, plans: &[(Plan, Target)], order: &[usize]) -> Result<Vec<Outcome>> {
        let workers = pool(self.jobs)?;
        let targets: Vec<&Target> = plans.iter().map(|(_, t)| t).collect();
        // Machines at once: no more than -j, nor than the memory available holds.
        let machines = vm::machines_at_once(self.jobs);
        let batches = batches::split(batches::group(&targets, order), machines);
        let (host_out, vm_out) = workers.install(|| {
            rayon::join(|| self.host_instances(plans, order), || self.vm_batches(plans, &batches, machines))
        });
        let mut outcomes: Vec<Option<Outcome>> = vec![None; plans.len()];
        for (i, o) in host_out.into_iter().chain(vm_out.into_iter().flatten()) {
            outcomes[i] = Some(o);
        }
        self.run_shared_trouble_alone(plans, &mut outcomes);
        Ok(outcomes
            .into_iter()
            .zip(plans)
            .map(|(o, (p, _))| o.unwrap_or_else(|| Outcome::error(p, "", "not run")))
            .collect())
    }

    /// Host instances, one by one on the pool's threads. An instance that
    /// drops the kernel's caches runs alone: dropping them evicts the inodes
    /// and dentries of every instance on the host's kernel, whose results
    /// (an overlay's nlink xattr, inode numbers after eviction, what
    /// fuse-overlayfs is asked again) would then depend on the timing.
    fn host_instances(&self, plans: &[(Plan, Target)], order: &[usize]) -> Numbered {
        let caches = std::sync::RwLock::new(());
        order
            .par_iter()
            .filter_map(|&i| match &plans[i].1 {
                Target::Host(h) => {
                    use std::sync::PoisonError;
                    let (_alone, _beside) = if plans[i].0.scenario.drops_caches() {
                        (Some(caches.write().unwrap_or_else(PoisonError::into_inner)), None)
                    } else {
                        (None, Some(caches.read().unwrap_or_else(PoisonError::into_inner)))
                    };
                    let o = host::run(self.ws, &plans[i].0, *h);
                    self.events.event(Event::InstanceFinished { id: o.id.clone(), target: o.target.clone() });
                    Some((i, o))
                }
                Target::Vm(_) => None,
            })
            .collect()
    }

    /// VM batches, `machines` at a time, each in as many machines as it
    /// takes: a queue taken in order (the largest batch first), so that the
    /// machines finish together.
    fn vm_batches(&self, plans: &[(Plan, Target)], batches: &[batches::Batch], machines: usize) -> Vec<Numbered> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..machines.min(batches.len()) {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((v, idx)) = batches.get(k) else { break };
                    let out = self.vm_batch(k, v, idx, plans);
                    done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(out);
                });
            }
        });
        done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn vm_batch(&self, batch: usize, v: &vm::VmTarget, idx: &[usize], plans: &[(Plan, Target)]) -> Numbered {
        let ps: Vec<Plan> = idx.iter().map(|&i| plans[i].0.clone()).collect();
        let (target, instances) = (v.name(), idx.len());
        self.events.event(Event::BatchStarted { batch, target: target.clone(), instances });
        let started = Instant::now();
        let progress = |progress: VmProgress| {
            self.events.event(Event::BatchProgress { batch, progress, elapsed: started.elapsed() });
        };
        let outs = vm::run_batch(v, &ps, self.catalog, self.custom, &progress);
        self.events.event(Event::BatchFinished { batch, target, instances, elapsed: started.elapsed() });
        idx.iter().copied().zip(outs).collect()
    }

    /// Kernel trouble logged while host instances ran side by side is charged
    /// to all of them: each runs again alone, and that verdict stands.
    fn run_shared_trouble_alone(&self, plans: &[(Plan, Target)], outcomes: &mut [Option<Outcome>]) {
        let shared = |o: &Option<Outcome>| o.as_ref().is_some_and(host::kernel_trouble_shared);
        let n = outcomes.iter().filter(|o| shared(o)).count();
        if n == 0 || self.jobs <= 1 {
            return;
        }
        self.events.event(Event::RunAgainAlone { instances: n });
        for (i, slot) in outcomes.iter_mut().enumerate() {
            let Target::Host(h) = &plans[i].1 else { continue };
            if !shared(slot) {
                continue;
            }
            let mut alone = host::run(self.ws, &plans[i].0, *h);
            if let Some(f) = alone.failures.iter_mut().find(|f| f.step == host::KERNEL_LOG_STEP) {
                f.step = format!("{} (run again alone: the trouble is this instance's)", f.step);
            }
            *slot = Some(alone);
        }
    }
}
