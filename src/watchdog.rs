//! The stall watchdog: a thread that notices when one callback (or task step) has held
//! the loop for longer than a threshold, and reports it while it is still happening.
//!
//! The loop thread marks each callback's start (`begin`) and end (`end`) in shared
//! atomics. The watchdog thread wakes a few times per threshold; on a stall it claims it,
//! takes the GIL (a Python callback hands it over at the interpreter's switch interval),
//! reads the loop thread's Python stack and reports through `oxloop._watchdog`. Each
//! stall gets exactly two reports: ongoing, then finished with the final duration. The
//! `stall` state machine below settles who sends the finished one when the callback ends
//! while the ongoing report is still being built (or, for C code that holds the GIL,
//! before the watchdog could get the GIL at all: that report has no stack).
//!
//! After `fork()` the child has the loop but not the thread (and perhaps a mutex the thread
//! held): a watchdog started before the fork goes inert there, never waited for or locked.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::event_loop::monotonic;
use crate::handles::Handle;
use crate::stream::StreamTransport;

/// What the loop thread is running: a handle, or a stream transport's read (or write)
/// event, which the loop runs without a handle; one is made only for a report.
#[derive(Clone, Copy)]
pub enum Running<'a, 'py> {
    Call(&'a Bound<'py, Handle>),
    Io {
        transport: &'a Bound<'py, StreamTransport>,
        writer: bool,
    },
}

impl<'py> Running<'_, 'py> {
    pub fn py(&self) -> Python<'py> {
        match self {
            Running::Call(h) => h.py(),
            Running::Io { transport, .. } => transport.py(),
        }
    }

    fn ptr(&self) -> *mut ffi::PyObject {
        match self {
            Running::Call(h) => h.as_ptr(),
            Running::Io { transport, .. } => transport.as_ptr(),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Running::Call(_) => KIND_CALL,
            Running::Io { writer: false, .. } => KIND_READ,
            Running::Io { writer: true, .. } => KIND_WRITE,
        }
    }

    /// The handle to report: the running one, or the one an I/O event stands for.
    fn handle(&self) -> Option<Py<Handle>> {
        match self {
            Running::Call(h) => Some((*h).clone().unbind()),
            Running::Io { transport, writer } => {
                StreamTransport::report_handle(transport, *writer).ok()
            }
        }
    }
}

const KIND_CALL: u8 = 0;
const KIND_READ: u8 = 1;
const KIND_WRITE: u8 = 2;

enum Stall {
    Idle,
    /// The watchdog claimed the stall of callback `seq` and is building its report.
    Building {
        seq: u64,
    },
    /// The ongoing report went out; the finished one goes when the callback returns.
    Reported {
        seq: u64,
        report: Py<PyAny>,
    },
    /// The callback returned while its ongoing report was still being built.
    Ended {
        seq: u64,
        duration: f64,
        handle: Option<Py<Handle>>,
    },
}

struct Shared {
    threshold: f64,
    /// Increments at every callback start.
    seq: AtomicU64,
    /// Start time of the running callback (f64 bits), 0 when none runs.
    started: AtomicU64,
    thread_ident: AtomicU64,
    /// The running callback's handle (or transport), borrowed (no reference held): set by `begin`,
    /// cleared by `end`, both on the loop thread with the GIL held. So, read with the GIL
    /// held, a non-null pointer is a handle that is still running, hence still alive.
    current: AtomicPtr<ffi::PyObject>,
    /// What `current` points to (`KIND_*`).
    current_kind: AtomicU8,
    stall: Mutex<Stall>,
    callback: Mutex<Option<Py<PyAny>>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// Forks since the process started, counted in the child (`pthread_atfork`).
static FORKS: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

pub struct Watchdog {
    /// `FORKS` when the thread started: the watchdog lives in this process only.
    born: u64,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn report_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("oxloop._watchdog")
}

impl Shared {
    fn callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        lock(&self.callback).as_ref().map(|c| c.clone_ref(py))
    }

    fn finish(&self, py: Python<'_>, report: Py<PyAny>, duration: f64) -> PyResult<()> {
        report_module(py)?.getattr("stall_finished")?.call1((
            report,
            duration,
            self.callback(py),
        ))?;
        Ok(())
    }
}

impl Watchdog {
    pub fn start(threshold: f64, callback: Option<Py<PyAny>>) -> PyResult<Watchdog> {
        AT_FORK.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        });
        let shared = Arc::new(Shared {
            threshold,
            seq: AtomicU64::new(0),
            started: AtomicU64::new(0),
            thread_ident: AtomicU64::new(0),
            current: AtomicPtr::new(std::ptr::null_mut()),
            current_kind: AtomicU8::new(KIND_CALL),
            stall: Mutex::new(Stall::Idle),
            callback: Mutex::new(callback),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let tick = Duration::from_secs_f64((threshold / 4.0).clamp(0.001, 0.05));
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("oxloop-watchdog".into())
            .spawn(move || watch(worker, tick))?;
        Ok(Watchdog {
            born: FORKS.load(Ordering::Relaxed),
            shared,
            thread: Some(thread),
        })
    }

    /// False in a child forked after the thread started: the thread is not there.
    #[inline]
    pub fn alive(&self) -> bool {
        FORKS.load(Ordering::Relaxed) == self.born
    }

    /// A callback starts on the loop thread `ident`.
    #[inline]
    pub fn begin(&self, running: Running<'_, '_>, ident: u64) {
        if !self.alive() {
            return;
        }
        let s = &self.shared;
        s.current.store(running.ptr(), Ordering::Relaxed);
        s.current_kind.store(running.kind(), Ordering::Relaxed);
        s.thread_ident.store(ident, Ordering::Relaxed);
        s.seq.fetch_add(1, Ordering::SeqCst);
        s.started.store(monotonic().to_bits(), Ordering::SeqCst);
    }

    /// The callback returned: send the finished report if its stall was reported.
    pub fn end(&self, running: Running<'_, '_>) -> PyResult<()> {
        if !self.alive() {
            return Ok(());
        }
        let s = &self.shared;
        let started = f64::from_bits(s.started.swap(0, Ordering::SeqCst));
        let duration = monotonic() - started;
        if duration < s.threshold {
            // The watchdog claims only a callback that has run for the threshold, judged
            // on its clock before it checks (under the `stall` lock) that `started` is
            // still set: one that returns sooner cannot have been claimed. No lock here.
            s.current.store(std::ptr::null_mut(), Ordering::Relaxed);
            return Ok(());
        }
        let seq = s.seq.load(Ordering::SeqCst);
        let reported = {
            let mut stall = lock(&s.stall);
            s.current.store(std::ptr::null_mut(), Ordering::Relaxed);
            match std::mem::replace(&mut *stall, Stall::Idle) {
                Stall::Building { seq: claimed } if claimed == seq => {
                    // The watchdog is still writing the ongoing report: it sends both.
                    *stall = Stall::Ended {
                        seq,
                        duration,
                        handle: running.handle(),
                    };
                    return Ok(());
                }
                Stall::Reported {
                    seq: claimed,
                    report,
                } if claimed == seq => Some(report),
                other => {
                    *stall = other;
                    None
                }
            }
        };
        match reported {
            Some(report) => s.finish(running.py(), report, duration),
            None => Ok(()),
        }
    }

    /// Stop the thread and wait for it, with the GIL released. From the watchdog's own
    /// thread (its callback turned it off) the thread is told to stop, not joined.
    pub fn stop(mut self, py: Python<'_>) {
        if !self.alive() {
            // A forked child: no thread to stop or join, and its mutexes may be held for
            // good. Leave them be.
            std::mem::forget(self.thread.take());
            return;
        }
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let own: ThreadId = std::thread::current().id();
            if thread.thread().id() != own {
                py.detach(move || {
                    let _ = thread.join();
                });
            }
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(cb) = self.shared.callback.try_lock() {
            if let Some(cb) = cb.as_ref() {
                visit.call(cb)?;
            }
        }
        Ok(())
    }

    /// Drop the user's callback (the GC breaking a cycle through it) and stop the thread.
    pub fn clear(&self) {
        if !self.alive() {
            return;
        }
        let cb = lock(&self.shared.callback).take();
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        drop(cb);
    }
}

/// Wait one tick; false once told to stop.
fn sleep_tick(s: &Shared, tick: Duration) -> bool {
    let stopped = lock(&s.stop);
    let (stopped, _) = s
        .wake
        .wait_timeout(stopped, tick)
        .unwrap_or_else(|p| p.into_inner());
    !*stopped
}

fn watch(s: Arc<Shared>, tick: Duration) {
    let mut claimed_seq = 0;
    while sleep_tick(&s, tick) {
        let started = f64::from_bits(s.started.load(Ordering::Acquire));
        let seq = s.seq.load(Ordering::Acquire);
        if started == 0.0 || claimed_seq == seq || monotonic() - started < s.threshold {
            continue;
        }
        {
            let mut stall = lock(&s.stall);
            // Claim only a callback still running: `end` zeroes `started` before it takes
            // this lock, so a claim never lands after its callback's end.
            if !matches!(*stall, Stall::Idle)
                || s.seq.load(Ordering::Acquire) != seq
                || s.started.load(Ordering::Acquire) == 0
            {
                continue;
            }
            *stall = Stall::Building { seq };
        }
        claimed_seq = seq;
        // Blocks while C code holds the GIL; the callback may end meanwhile (`Ended`).
        Python::attach(|py| {
            if let Err(err) = report(py, &s, seq, started) {
                err.write_unraisable(py, None);
            }
        });
    }
}

/// Send the ongoing report for callback `seq` (and the finished one if it has ended).
fn report(py: Python<'_>, s: &Shared, seq: u64, started: f64) -> PyResult<()> {
    let ident = s.thread_ident.load(Ordering::Relaxed);
    // Either the callback has returned (`Ended`, with its handle), or it still runs: then,
    // with the GIL held, `current` is its handle and alive (see `Shared::current`). Read
    // both before anything that could run Python code and let the loop thread go on.
    let (ended, running) = {
        let mut stall = lock(&s.stall);
        match std::mem::replace(&mut *stall, Stall::Idle) {
            Stall::Ended {
                seq: claimed,
                duration,
                handle,
            } if claimed == seq => (Some((duration, handle)), None),
            other => {
                *stall = other;
                let ptr = s.current.load(Ordering::Relaxed);
                let running = (!ptr.is_null())
                    .then(|| unsafe { Bound::from_borrowed_ptr(py, ptr) })
                    .and_then(|obj| match s.current_kind.load(Ordering::Relaxed) {
                        KIND_CALL => Some(Running::Call(obj.cast::<Handle>().ok()?).handle()?),
                        kind => Running::Io {
                            transport: obj.cast::<StreamTransport>().ok()?,
                            writer: kind == KIND_WRITE,
                        }
                        .handle(),
                    });
                (None, running)
            }
        }
    };
    let module = report_module(py)?;
    let callback = s.callback(py);
    let Some((final_duration, handle)) = ended else {
        // Still running: the loop thread's stack shows where it is stuck.
        let handle = running;
        let duration = monotonic() - started;
        let report = module
            .getattr("stall_started")?
            .call1((handle, duration, ident, callback, true))?
            .unbind();
        let mut stall = lock(&s.stall);
        match std::mem::replace(&mut *stall, Stall::Idle) {
            Stall::Ended { duration, .. } => {
                // It returned while the report was going out.
                drop(stall);
                return s.finish(py, report, duration);
            }
            _ => *stall = Stall::Reported { seq, report },
        }
        return Ok(());
    };
    // It returned before we could take the GIL (C code holding it): no stack to show.
    let noticed = s.threshold.min(final_duration);
    let report = module
        .getattr("stall_started")?
        .call1((handle, noticed, ident, callback, false))?
        .unbind();
    s.finish(py, report, final_duration)
}
