//! Per-instance time limits on host targets. An instance that does not
//! finish in time (a `read` of a FIFO without a writer, a driver that never
//! answers) is interrupted: its processes (fuse-overlayfs, the rootless
//! agent) are killed, and its thread is signalled until its blocking system
//! call returns `EINTR`. The executor then stops at the next statement, the
//! instance's mounts go with its namespace, and the run goes on; the
//! instance's result is `timeout`.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The signal that interrupts a blocked system call (its handler does
/// nothing, and is installed without `SA_RESTART`).
const INTERRUPT: libc::c_int = libc::SIGUSR2;

/// The limit of one host instance, unless `OVLC_INSTANCE_TIMEOUT` (seconds)
/// says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// `OVLC_INSTANCE_TIMEOUT` in seconds, else [`DEFAULT_LIMIT`].
pub fn limit() -> Duration {
    crate::settings::get().instance_timeout.unwrap_or(DEFAULT_LIMIT)
}

#[derive(Debug, Default)]
struct Watched {
    /// The instance finished (or was abandoned): signal nothing any more.
    done: bool,
    expired: bool,
    children: Vec<u32>,
}

/// One watched instance: its thread and deadline.
#[derive(Debug)]
struct Entry {
    tid: libc::pid_t,
    deadline: Instant,
    state: Mutex<Watched>,
}

/// Every watched instance, and the one thread that watches them all.
#[derive(Debug, Default)]
struct Registry {
    entries: Mutex<Vec<Arc<Entry>>>,
    wake: Condvar,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Entry>>> = const { std::cell::RefCell::new(None) };
}

extern "C" fn interrupted(_: libc::c_int) {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The registry, with its watching thread started (once). The thread first
/// takes a filesystem context of its own: threads share the one of the
/// thread that starts them, and a worker that shares it may not change its
/// mount namespace (see `sys::InstanceNamespace`).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<&'static Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = interrupted as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0; // no SA_RESTART: a blocked call returns EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(INTERRUPT, &sa, std::ptr::null_mut());
        }
        let reg: &'static Registry = Box::leak(Box::default());
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS);
            let _ = ready.send(());
            watch(reg);
        });
        let _ = started.recv();
        reg
    })
}

/// The watching thread: sleeps until the next deadline; at a passed one,
/// kills the instance's processes and signals its thread every 50 ms until
/// the instance is over.
fn watch(reg: &'static Registry) {
    let pid = std::process::id() as libc::c_int;
    let mut entries = lock(&reg.entries);
    loop {
        entries.retain(|e| !lock(&e.state).done);
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        for e in entries.iter() {
            if e.deadline <= now {
                // Under the entry's lock: once `done`, its thread runs other
                // work and must not be signalled.
                let mut st = lock(&e.state);
                if !st.expired {
                    st.expired = true;
                    for &child in &st.children {
                        unsafe { libc::kill(child as libc::c_int, libc::SIGKILL) };
                    }
                }
                unsafe { libc::syscall(libc::SYS_tgkill, pid, e.tid, INTERRUPT) };
                next = next.min(now + Duration::from_millis(50));
            } else {
                next = next.min(e.deadline);
            }
        }
        entries = reg.wake.wait_timeout(entries, next - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// The watch over the instance the calling thread runs; dropping it ends
/// the watch.
#[derive(Debug)]
pub struct Armed {
    entry: Arc<Entry>,
    limit: Duration,
}

/// Starts watching the calling thread's instance for `limit`.
pub fn arm(limit: Duration) -> Armed {
    let reg = registry();
    let entry = Arc::new(Entry {
        tid: unsafe { libc::gettid() },
        deadline: Instant::now() + limit,
        state: Mutex::new(Watched::default()),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(entry.clone()));
    lock(&reg.entries).push(entry.clone());
    reg.wake.notify_all();
    Armed { entry, limit }
}

impl Armed {
    /// Whether the limit passed.
    pub fn expired(&self) -> bool {
        lock(&self.entry.state).expired
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        lock(&self.entry.state).done = true;
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// Whether the calling thread's instance ran out of time (false when
/// nothing watches it).
pub fn expired() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|e| lock(&e.state).expired))
}

/// Records a process of the calling thread's instance, killed if it runs
/// out of time (at once when it already has).
pub fn track(pid: u32) {
    CURRENT.with(|c| {
        if let Some(e) = c.borrow().as_ref() {
            let mut st = lock(&e.state);
            if st.expired {
                unsafe { libc::kill(pid as libc::c_int, libc::SIGKILL) };
            }
            st.children.push(pid);
        }
    });
}

/// Forgets a process of the calling thread's instance once it has been
/// reaped (its pid may be another process's afterwards).
pub fn untrack(pid: u32) {
    CURRENT.with(|c| {
        if let Some(e) = c.borrow().as_ref() {
            lock(&e.state).children.retain(|p| *p != pid);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_call_is_interrupted_when_the_limit_passes() {
        let (r, _w) = nix::unistd::pipe().unwrap_or_else(|e| panic!("{e}"));
        let t = std::thread::spawn(move || {
            let armed = arm(Duration::from_millis(200));
            let started = Instant::now();
            let mut b = [0u8; 1];
            // Blocks: the write end stays open, nothing is written.
            let got = nix::unistd::read(&r, &mut b);
            (got, started.elapsed(), armed.expired(), expired())
        });
        let (got, took, armed, current) = t.join().unwrap_or_else(|_| panic!("the thread panicked"));
        assert_eq!(got, Err(nix::errno::Errno::EINTR));
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(armed && current);
    }

    #[test]
    fn a_finished_instance_is_not_marked_later() {
        let armed = arm(Duration::from_millis(50));
        assert!(!expired());
        drop(armed);
        std::thread::sleep(Duration::from_millis(150));
        assert!(!expired());
    }
}
