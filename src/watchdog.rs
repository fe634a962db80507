//! The stall watchdog: a thread that notices when one callback (or task step) has held
//! the loop for longer than a threshold, and reports it while it is still happening.
//!
//! The loop thread marks each callback's start (`begin`) and end (`end`) in shared
//! atomics. The watchdog thread wakes a few times per threshold; on a stall it takes the
//! GIL (which a running callback hands over at the interpreter's switch interval), reads
//! the loop thread's Python stack and reports through `oxloop._watchdog`. The loop thread
//! reports the final duration when the stalled callback returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;

use crate::event_loop::monotonic;
use crate::handles::Handle;

struct Shared {
    threshold: f64,
    /// Increments at every callback start.
    seq: AtomicU64,
    /// Start time of the running callback (f64 bits), 0 when none runs.
    started: AtomicU64,
    /// The `seq` whose stall has been reported as ongoing.
    reported: AtomicU64,
    thread_ident: AtomicU64,
    current: Mutex<Option<Py<Handle>>>,
    /// The ongoing report object, handed back when the stall ends.
    report: Mutex<Option<PyObject>>,
    callback: Option<PyObject>,
    stop: Mutex<bool>,
    wake: Condvar,
}

pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watchdog {
    pub fn start(threshold: f64, callback: Option<PyObject>) -> PyResult<Watchdog> {
        let shared = Arc::new(Shared {
            threshold,
            seq: AtomicU64::new(0),
            started: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            thread_ident: AtomicU64::new(0),
            current: Mutex::new(None),
            report: Mutex::new(None),
            callback,
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let tick = Duration::from_secs_f64((threshold / 4.0).clamp(0.001, 0.05));
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("oxloop-watchdog".into())
            .spawn(move || watch(worker, tick))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// A callback starts on the loop thread `ident`.
    #[inline]
    pub fn begin(&self, handle: &Bound<'_, Handle>, ident: u64) {
        let s = &self.shared;
        let previous = lock(&s.current).replace(handle.clone().unbind());
        s.thread_ident.store(ident, Ordering::Relaxed);
        s.seq.fetch_add(1, Ordering::AcqRel);
        s.started.store(monotonic().to_bits(), Ordering::Release);
        drop(previous);
    }

    /// The callback returned: report the final duration if it was reported as a stall.
    pub fn end(&self, py: Python<'_>) -> PyResult<()> {
        let s = &self.shared;
        let started = f64::from_bits(s.started.swap(0, Ordering::AcqRel));
        let handle = lock(&s.current).take();
        drop(handle);
        if s.reported.load(Ordering::Acquire) != s.seq.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(report) = lock(&s.report).take() else {
            return Ok(());
        };
        let duration = monotonic() - started;
        let callback = s.callback.as_ref().map(|c| c.clone_ref(py));
        py.import("oxloop._watchdog")?
            .getattr("stall_finished")?
            .call1((report, duration, callback))?;
        Ok(())
    }

    /// Stop and join the thread; called with the GIL, released while joining.
    pub fn stop(mut self, py: Python<'_>) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            py.allow_threads(move || {
                let _ = thread.join();
            });
        }
    }
}

fn watch(s: Arc<Shared>, tick: Duration) {
    loop {
        {
            let stopped = lock(&s.stop);
            let (stopped, _) = s
                .wake
                .wait_timeout(stopped, tick)
                .unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        let started = f64::from_bits(s.started.load(Ordering::Acquire));
        let seq = s.seq.load(Ordering::Acquire);
        if started == 0.0 || s.reported.load(Ordering::Acquire) == seq {
            continue;
        }
        if monotonic() - started < s.threshold {
            continue;
        }
        Python::with_gil(|py| {
            // The loop thread cannot move on while we hold the GIL: check it is the same
            // callback, still running.
            if *lock(&s.stop)
                || s.seq.load(Ordering::Acquire) != seq
                || s.started.load(Ordering::Acquire) == 0
            {
                return;
            }
            let handle = lock(&s.current).as_ref().map(|h| h.clone_ref(py));
            let duration = monotonic() - started;
            let ident = s.thread_ident.load(Ordering::Relaxed);
            let callback = s.callback.as_ref().map(|c| c.clone_ref(py));
            let report = py.import("oxloop._watchdog").and_then(|m| {
                m.getattr("stall_started")?
                    .call1((handle, duration, ident, callback))
            });
            match report {
                Ok(report) => *lock(&s.report) = Some(report.unbind()),
                Err(err) => err.write_unraisable(py, None),
            }
            s.reported.store(seq, Ordering::Release);
        });
    }
}
