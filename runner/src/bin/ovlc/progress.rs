//! The progress of a run as the terminal shows it: a bar for the run and a
//! line per running machine; without a terminal (a CI log), a plain line per
//! machine step and per finished batch. Draws the engine's events.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runner::events::{Event, Subscriber};

pub struct Progress {
    /// Bars, on a terminal in human mode.
    multi: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bar: Option<ProgressBar>,
    /// Each running batch's line, and how many of its instances the bar counted.
    batches: HashMap<usize, (Option<ProgressBar>, usize)>,
}

impl Progress {
    pub fn new(human: bool) -> Progress {
        Progress { multi: (human && std::io::stderr().is_terminal()).then(MultiProgress::new), state: Mutex::default() }
    }

    fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
        ProgressStyle::with_template(template).unwrap_or_else(|_| fallback())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn advance(&mut self, batch: usize, done: usize) {
        if let Some((_, counted)) = self.batches.get_mut(&batch) {
            let step = done.saturating_sub(*counted);
            *counted = (*counted).max(done);
            if let Some(b) = &self.bar {
                b.inc(step as u64);
            }
        }
    }
}

impl Subscriber for Progress {
    fn event(&self, e: Event) {
        match e {
            Event::Shuffled { rounds, seed } => {
                let s = if rounds == 1 { "" } else { "s" };
                eprintln!("{rounds} round{s} in shuffled order, seed {seed} (replay with --seed {seed})");
            }
            Event::RoundStarted { instances, .. } => {
                let bar = self.multi.as_ref().map(|m| {
                    let b = m.add(ProgressBar::new(instances as u64));
                    b.set_style(Self::style("{bar:40} {pos}/{len} {elapsed} {msg}", ProgressStyle::default_bar));
                    b
                });
                *self.state() = State { bar, batches: HashMap::new() };
            }
            Event::InstanceFinished { id, .. } => {
                if let Some(b) = &self.state().bar {
                    b.set_message(id);
                    b.inc(1);
                }
            }
            Event::BatchStarted { batch, .. } => {
                let line = self.multi.as_ref().map(|m| {
                    let l = m.add(ProgressBar::new_spinner());
                    l.set_style(Self::style("  {spinner} {msg} {elapsed}", ProgressStyle::default_spinner));
                    l.enable_steady_tick(std::time::Duration::from_millis(200));
                    l
                });
                self.state().batches.insert(batch, (line, 0));
            }
            Event::BatchProgress { batch, progress: p, elapsed } => {
                let what = p.current.as_deref().unwrap_or("booting");
                let text = format!("{} machine {}: {}/{} {what}", p.target, p.machine, p.position + 1, p.total);
                let mut st = self.state();
                match st.batches.get(&batch).and_then(|(l, _)| l.as_ref()) {
                    Some(l) => l.set_message(text),
                    None => eprintln!("{text} ({} s)", elapsed.as_secs()),
                }
                // Every instance before the running one is done.
                st.advance(batch, p.position);
            }
            Event::BatchFinished { batch, target, instances, elapsed } => {
                let mut st = self.state();
                st.advance(batch, instances);
                match st.batches.remove(&batch).and_then(|(l, _)| l) {
                    Some(l) => l.finish_and_clear(),
                    None => eprintln!("{target}: {instances} instances in {} s", elapsed.as_secs()),
                }
            }
            Event::RunAgainAlone { .. } => {}
            Event::RoundFinished { .. } => {
                if let Some(b) = self.state().bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    }
}
