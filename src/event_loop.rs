//! `LoopCore`: the event loop's engine, i.e. the ready queue, the timer heap, fd readiness
//! and the run cycle.
//!
//! One iteration (`_run_once`) is what the stock loop does: drop cancelled timers, poll
//! for I/O (blocking only when nothing is ready, with the GIL released), queue the I/O
//! callbacks and the due timers, then run the callbacks that were ready at that point, in
//! FIFO order. `oxloop.Loop` (Python) subclasses this class together with
//! `asyncio.AbstractEventLoop` and adds the glue where Rust gains nothing.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use mio::Waker;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::errors;
use crate::handles::{self, Args, Handle, Slots, TimerHandle};
use crate::helpers;
use crate::module_attr::ModuleAttr;
use crate::poll::{
    DeadlineTimer, Poller, DEADLINE_TOKEN, HANGUP, READABLE, SIGNAL_TOKEN, WAKE_TOKEN, WRITABLE,
};
use crate::signals::SignalTable;
use crate::stats::{Sampler, Stats};
use crate::stream::StreamTransport;
use crate::timers::TimerHeap;
use crate::watchdog::{Running, Watchdog};

/// Caller frames a debug-mode handle records: the stock loop's limit (10) less the two
/// frames of its own it drops (call_later: one more; add_signal_handler: one fewer).
const TRACE_DEPTH: u32 = 8;

/// Frames of oxloop's own Python glue between the user and a core method that records
/// a stack (`Loop.add_signal_handler` calls `_add_signal_handle`).
const PY_GLUE_FRAMES: u32 = 1;

/// Emptied handles a loop keeps for reuse by `call_soon` (at most).
const FREE_HANDLES: usize = 1024;

/// Longest single poll, as the stock loop (24 hours).
const MAX_POLL_SECONDS: f64 = 24.0 * 3600.0;

/// What runs when a watched fd is ready: a callback handle, or a stream transport's own
/// read/write handler, called natively in the context it was watched from.
enum Watcher {
    Call(Py<Handle>),
    Transport {
        transport: Py<StreamTransport>,
        context: Py<PyAny>,
        /// The transport's watch generation: an event queued for an earlier watch is stale.
        gen: u32,
    },
}

/// An entry of the ready queue: a handle, or "transport T is readable/writable".
pub(crate) enum Ready {
    Call(Py<Handle>),
    Io {
        transport: Py<StreamTransport>,
        context: Py<PyAny>,
        writer: bool,
        gen: u32,
        /// When it was queued, for the sampled ready-queue delay; 0: not sampled.
        queued_at: f64,
    },
}

impl Ready {
    fn visit(&self, py: Python<'_>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Ready::Call(h) => handles::visit_queued(h.bind(py), visit),
            Ready::Io {
                transport, context, ..
            } => {
                visit.call(transport)?;
                visit.call(context)
            }
        }
    }

    /// The loop lets go of the entry (see `handles::release`).
    fn release(&self, py: Python<'_>) {
        if let Ready::Call(h) = self {
            handles::release(h.bind(py).as_any());
        }
    }
}

/// Hashes an fd with one multiplication: SipHash cost more than the rest of a lookup,
/// and fds are not chosen by an adversary.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 << 8 | b as u64);
        }
    }

    fn write_i32(&mut self, fd: i32) {
        self.write_u64(fd as u32 as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;

/// A watched fd: the reader and writer and whether epoll knows the fd.
#[derive(Default)]
struct FdEntry {
    reader: Option<Watcher>,
    writer: Option<Watcher>,
    registered: bool,
    /// Fired since the last re-arm (level-triggered emulation, see poll.rs).
    fired: bool,
    /// A transport owns the fd and reads until the kernel has nothing left (or asks
    /// for a re-arm itself), so the edge-triggered report is enough: no re-arm per event.
    drained_by_owner: bool,
}

impl FdEntry {
    fn mask(&self) -> u8 {
        (if self.reader.is_some() { READABLE } else { 0 })
            | (if self.writer.is_some() { WRITABLE } else { 0 })
    }
}

/// `{"loop": lp}` for `Future` and `{"loop": lp, "name": None, "context": None}` for
/// `Task` (no `context` before 3.11): what `create_future` and `create_task` pass to the C
/// types, which only read them. They refer to the loop, so a loop keeps them only while
/// it runs (a loop nobody runs is still freed by its reference count alone).
struct CallKwargs {
    future: Py<PyDict>,
    task: Py<PyDict>,
}

impl CallKwargs {
    fn new(lp: &Bound<'_, LoopCore>) -> PyResult<CallKwargs> {
        let py = lp.py();
        let future = PyDict::new(py);
        future.set_item(intern!(py, "loop"), lp)?;
        let task = future.copy()?;
        task.set_item(intern!(py, "name"), py.None())?;
        if lp.get().py311 {
            task.set_item(intern!(py, "context"), py.None())?;
        }
        Ok(CallKwargs {
            future: future.unbind(),
            task: task.unbind(),
        })
    }
}

/// `_asyncio.<name>`, if the C module has it.
fn c_type(py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
    let module = py.import("_asyncio").ok()?;
    Some(module.getattr(name).ok()?.unbind())
}

/// Whether `obj` is exactly the C type `c` (not a subclass, not a replacement).
fn is_c_type(obj: &Bound<'_, PyAny>, c: &Option<Py<PyAny>>) -> bool {
    c.as_ref().is_some_and(|c| obj.is(c))
}

/// 3.13.3 and later 3.13 releases take any keyword in `create_task` (read from
/// `sys.version_info` when such a call comes, a rare one).
#[cfg(not(Py_3_14))]
fn create_task_takes_any_keyword(py: Python<'_>) -> PyResult<bool> {
    let version = py.import("sys")?.getattr("version_info")?;
    version.ge((3, 13, 3))
}

pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn current_thread_id() -> u64 {
    unsafe { libc::pthread_self() as u64 }
}

/// The fd of an int or of an object with `fileno()`, with the `selectors` errors.
fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if let Ok(fd) = obj.extract::<i64>() {
        fd
    } else {
        let fileno = obj
            .call_method0("fileno")
            .and_then(|f| f.call_method0("__index__"))
            .and_then(|f| f.extract::<i64>());
        match fileno {
            Ok(fd) => fd,
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr()?
                )))
            }
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as RawFd)
}

#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct LoopCore {
    ready: GilCell<VecDeque<Ready>>,
    timers: GilCell<TimerHeap>,
    poller: Poller,
    waker: GilCell<Option<Waker>>,
    fds: GilCell<FdMap<FdEntry>>,
    rearm: GilCell<Vec<RawFd>>,
    signals: GilCell<SignalTable>,
    stopping: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    thread_id: AtomicU64,
    slow_callback_duration: GilCell<f64>,
    current_handle: GilCell<Option<Py<Handle>>>,
    clock_resolution: f64,
    deadline: GilCell<Option<DeadlineTimer>>,
    stats: GilCell<Stats>,
    sampler: Sampler,
    watchdog: GilCell<Option<Watchdog>>,
    watching: AtomicBool,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    open_transports: AtomicI64,
    /// fd -> weak reference to the transport that owns it: the public reader/writer
    /// methods refuse such an fd while the transport is open, as stock.
    transport_fds: GilCell<HashMap<RawFd, Py<PyAny>>>,
    /// Plain handles that ran and that nothing else held, emptied, for `call_soon` to
    /// reuse (saves an allocation, its deallocation and two trips through PyO3's glue).
    /// They hold nothing and are not tracked by the cycle collector.
    free_handles: GilCell<Vec<Py<Handle>>>,
    /// The same for `TimerHandle`s that fired (`call_later`, `call_at`).
    free_timers: GilCell<Vec<Py<TimerHandle>>>,
    /// `Handle`'s and `TimerHandle`'s type objects, for the exact-type check before reuse.
    handle_type: usize,
    timer_type: usize,
    /// `loop.set_task_factory()`'s factory (`_task_factory`, as stock).
    task_factory: GilCell<Option<Py<PyAny>>>,
    /// `asyncio.tasks.Task` and `asyncio.futures.Future`, which `create_task` and
    /// `create_future` look up on each call, as the stock methods do.
    task_attr: ModuleAttr,
    future_attr: ModuleAttr,
    /// `_asyncio.Future` and `_asyncio.Task`, the C types (if the module exists).
    c_future: Option<Py<PyAny>>,
    c_task: Option<Py<PyAny>>,
    /// The keyword arguments `create_future` and `create_task` pass to the C `Future` and
    /// `Task`, made once per run of the loop instead of once per call (see `call_kwargs`).
    call_kwargs: GilCell<Option<CallKwargs>>,
    /// Python >= 3.11 (`create_task(context=)`), >= 3.13 (`Task.set_name` for names).
    py311: bool,
}

impl LoopCore {
    /// Count bytes a transport moved (for `stats()`).
    #[inline]
    pub fn note_io(&self, read: usize, written: usize) {
        self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
    }

    /// A transport opened (+1) or finished (-1).
    pub fn note_transport(&self, delta: i64) {
        self.open_transports.fetch_add(delta, Ordering::Relaxed);
    }

    /// The transport owning `fd` is gone.
    pub fn release_fd(&self, fd: RawFd) {
        if let Ok(mut t) = self.transport_fds.try_mut() {
            t.remove(&fd);
        }
    }

    /// RuntimeError if an open transport owns the fd of `fileobj`.
    fn ensure_fd_no_transport(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<()> {
        let fd = fileobj_to_fd(fileobj)?;
        let weak = match self.transport_fds.try_ref()?.get(&fd) {
            Some(w) => w.clone_ref(py),
            None => return Ok(()),
        };
        let transport = weak.bind(py).call0()?;
        if transport.is_none() || transport.call_method0("is_closing")?.is_truthy()? {
            return Ok(());
        }
        Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "File descriptor {} is used by transport {}",
            fileobj.repr()?,
            transport.repr()?
        )))
    }

    /// `call_soon` for the core's own users (transports): no debug checks.
    /// `call_soon(callback, *args, context=context)` for the transports (None: a copy of
    /// the current context).
    pub fn soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        slf.get().check_closed()?;
        Self::schedule_soon(slf, callback, args.into(), context).map(drop)
    }

    /// Watch `fd` for readability (or writability) with `callback()`, replacing any
    /// earlier one, run in `context` (None: a copy of the current one). `drains`: the
    /// callback reads until EAGAIN or calls `rearm_fd`, so the fd needs no
    /// level-triggered re-arm after each event.
    pub fn watch_fd(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: &Bound<'_, PyAny>,
        writer: bool,
        drains: bool,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let slots = Self::slots_for(slf, callback, Args::Empty, context, TRACE_DEPTH)?;
        let handle = Py::new(slf.py(), Handle::with_slots(slots))?;
        Self::set_fd_watcher(slf, fd, Watcher::Call(handle), writer, drains)
    }

    /// Watch `fd` for readability (or writability) with `transport`'s own handler, run
    /// natively in `context`, else in a copy of the current context (as a handle's would
    /// be); `gen` tells this watch from the transport's earlier ones. The transport
    /// drains the fd.
    pub fn watch_transport(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        transport: &Bound<'_, StreamTransport>,
        writer: bool,
        gen: u32,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = match context {
            Some(c) => c,
            None => unsafe {
                Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())?.unbind()
            },
        };
        let watcher = Watcher::Transport {
            transport: transport.clone().unbind(),
            context,
            gen,
        };
        Self::set_fd_watcher(slf, fd, watcher, writer, true)
    }

    /// Report `fd` again on the next poll if it is still ready (an owner that stopped
    /// reading before the kernel ran dry).
    pub fn rearm_fd(&self, fd: RawFd) -> PyResult<()> {
        let mut fds = self.fds.try_mut()?;
        if let Some(entry) = fds.get_mut(&fd) {
            if !entry.fired {
                entry.fired = true;
                self.rearm.try_mut()?.push(fd);
            }
        }
        Ok(())
    }

    pub fn unwatch_fd(slf: &Bound<'_, Self>, fd: RawFd, writer: bool) -> PyResult<()> {
        Self::unset_fd_callback(slf, fd, writer).map(drop)
    }

    #[inline]
    pub fn debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Whether the loop is running on the calling thread.
    #[inline]
    pub(crate) fn runs_here(&self) -> bool {
        let tid = self.thread_id.load(Ordering::Relaxed);
        tid != 0 && tid == current_thread_id()
    }

    /// Whether the loop is running on the calling thread, outside debug mode: where the
    /// hand-written entries take their fast paths (see `guarded`).
    #[inline]
    fn runs_here_plain(&self) -> bool {
        !self.debug() && self.runs_here()
    }

    /// One of the keyword-argument dicts of `CallKwargs`, while the loop runs on this
    /// thread (made on first use in a run, dropped when the run ends: they refer to the
    /// loop).
    fn call_kwargs<'py>(
        slf: &Bound<'py, Self>,
        which: impl FnOnce(&CallKwargs) -> &Py<PyDict>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let this = slf.get();
        if !this.runs_here() {
            return Ok(None);
        }
        let mut cell = this.call_kwargs.try_mut()?;
        if cell.is_none() {
            *cell = Some(CallKwargs::new(slf)?);
        }
        Ok(cell.as_ref().map(|k| which(k).bind(slf.py()).clone()))
    }

    /// `asyncio.futures.Future(loop=self)`, `Future` looked up on each call as stock does.
    fn new_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let future = this.future_attr.get(py)?;
        let kwargs = match is_c_type(&future, &this.c_future) {
            true => Self::call_kwargs(slf, |k| &k.future)?,
            false => None,
        };
        let kwargs = match kwargs {
            Some(k) => k,
            None => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "loop"), slf)?;
                kwargs
            }
        };
        future.call((), Some(&kwargs))
    }

    #[inline]
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(errors::loop_closed())
        } else {
            Ok(())
        }
    }

    fn check_thread(&self) -> PyResult<()> {
        let tid = self.thread_id.load(Ordering::Relaxed);
        if tid != 0 && tid != current_thread_id() {
            return Err(errors::wrong_thread());
        }
        Ok(())
    }

    fn check_callback(&self, py: Python<'_>, cb: &Bound<'_, PyAny>, method: &str) -> PyResult<()> {
        helpers::get(py)?.check_callback.call1(py, (cb, method))?;
        if !cb.is_callable() {
            return Err(errors::not_callable(method, &cb.repr()?.to_string()));
        }
        Ok(())
    }

    pub fn timer_cancelled(&self) -> PyResult<()> {
        self.timers.try_mut()?.note_cancelled();
        Ok(())
    }

    /// What a new handle holds; in debug mode it records `depth` caller frames, the
    /// number the stock loop keeps for the same method (its frame limit less its own).
    #[inline(always)]
    fn slots_for(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Args,
        context: Option<Py<PyAny>>,
        depth: u32,
    ) -> PyResult<Slots> {
        Slots::new(
            slf.py(),
            callback.clone().unbind(),
            args,
            context,
            slf.clone().unbind(),
            slf.get().debug().then_some(depth),
        )
    }

    #[inline(always)]
    fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Args,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        let recycled = this.free_handles.try_mut()?.pop();
        let handle = match recycled {
            Some(handle) => {
                // On error it is dropped empty.
                let slots = Self::slots_for(slf, callback, args, context, TRACE_DEPTH)?;
                handle.get().refill(slf.py(), slots)?;
                handle
            }
            None => Py::new(
                slf.py(),
                Handle::with_slots(Self::slots_for(slf, callback, args, context, TRACE_DEPTH)?),
            )?,
        };
        handles::hide(handle.bind(slf.py()));
        if this.sampler.sample_now() {
            handle.get().set_queued_at(monotonic());
        }
        this.ready
            .try_mut()?
            .push_back(Ready::Call(handle.clone_ref(slf.py())));
        Ok(handle)
    }

    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: &Bound<'_, PyAny>,
        args: Args,
        context: Option<Py<PyAny>>,
        depth: u32,
    ) -> PyResult<Py<TimerHandle>> {
        let slots = Self::slots_for(slf, callback, args, context, depth)?;
        let recycled = slf.get().free_timers.try_mut()?.pop();
        let timer = match recycled {
            Some(timer) => {
                // On error it is dropped empty.
                TimerHandle::refill(timer.bind(slf.py()), slots, when)?;
                timer
            }
            None => {
                let init = PyClassInitializer::from(Handle::with_slots(slots))
                    .add_subclass(TimerHandle::new(when));
                Py::new(slf.py(), init)?
            }
        };
        handles::hide_context(timer.bind(slf.py()).as_super());
        slf.get().timers.try_mut()?.push(timer.clone_ref(slf.py()));
        Ok(timer)
    }

    /// Poll for I/O and queue the callbacks of the fds that are ready. Returns the time
    /// the poll returned.
    fn poll_io(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<f64> {
        self.rearm_fired()?;
        let nonblocking = timeout == Some(Duration::ZERO);
        let watched = !self.fds.try_ref()?.is_empty() || !self.signals.try_ref()?.is_empty();
        let start = monotonic();
        if nonblocking && !watched {
            // Nothing could be ready: skip the syscall.
            self.stats.try_mut()?.polled(start, start);
            return Ok(start);
        }
        let result = if nonblocking {
            self.poller.wait(timeout)
        } else {
            // A signal that came while callbacks ran: its Python handler runs now, not
            // after a poll that nothing may end (KeyboardInterrupt surfaces here).
            py.check_signals()?;
            self.poller.wait_released(py, timeout)
        };
        let end = monotonic();
        self.stats.try_mut()?.polled(start, end);
        let completed = result?;
        self.dispatch_fired(py, end)?;
        if !completed {
            // A signal interrupted the poll (EINTR): run its Python handler now. One that
            // comes after a poll returned is the interpreter's to handle at its next
            // bytecode, or the check above before the next blocking poll.
            py.check_signals()?;
        }
        Ok(end)
    }

    fn dispatch_fired(&self, py: Python<'_>, now: f64) -> PyResult<()> {
        let guard = self.poller.lock().map_err(|_| errors::wrong_thread())?;
        let Some(st) = guard.as_ref() else {
            return Ok(());
        };
        if st.fired.is_empty() {
            return Ok(());
        }
        let mut ready = self.ready.try_mut()?;
        let mut fds = self.fds.try_mut()?;
        let mut rearm = self.rearm.try_mut()?;
        let mut queue_io = |w: &Watcher, writer: bool| {
            let sampled = self.sampler.sample_now();
            match w {
                Watcher::Call(h) => {
                    if sampled {
                        h.get().set_queued_at(now);
                    }
                    ready.push_back(Ready::Call(h.clone_ref(py)));
                }
                Watcher::Transport {
                    transport,
                    context,
                    gen,
                } => ready.push_back(Ready::Io {
                    transport: transport.clone_ref(py),
                    context: context.clone_ref(py),
                    writer,
                    gen: *gen,
                    queued_at: if sampled { now } else { 0.0 },
                }),
            }
        };
        for &(token, mask) in &st.fired {
            if token == WAKE_TOKEN {
                continue;
            }
            if token == DEADLINE_TOKEN {
                if let Some(d) = self.deadline.try_mut()?.as_mut() {
                    d.fired();
                }
                continue;
            }
            if token == SIGNAL_TOKEN {
                for h in self.signals.try_ref()?.take_pending(py) {
                    queue_io(&Watcher::Call(h), false);
                }
                continue;
            }
            let fd = token.0 as RawFd;
            let Some(entry) = fds.get_mut(&fd) else {
                continue;
            };
            if mask & READABLE != 0 {
                if let Some(r) = &entry.reader {
                    if matches!(r, Watcher::Call(h) if h.get().is_cancelled()) {
                        entry.reader = None;
                    } else {
                        queue_io(r, false);
                    }
                }
            }
            if mask & WRITABLE != 0 {
                if let Some(w) = &entry.writer {
                    if matches!(w, Watcher::Call(h) if h.get().is_cancelled()) {
                        entry.writer = None;
                    } else {
                        queue_io(w, true);
                    }
                }
            }
            // An owner that drains sees new data as a new edge, but a hang-up that came
            // with the data it read would never be reported again: re-arm for that.
            if !entry.fired && (!entry.drained_by_owner || mask & HANGUP != 0) {
                entry.fired = true;
                rearm.push(fd);
            }
        }
        Ok(())
    }

    /// Re-arm the fds that fired last time, so a still-ready fd is reported again.
    fn rearm_fired(&self) -> PyResult<()> {
        let pending = std::mem::take(&mut *self.rearm.try_mut()?);
        if pending.is_empty() {
            return Ok(());
        }
        let mut fds = self.fds.try_mut()?;
        for fd in pending.iter().copied() {
            let Some(entry) = fds.get_mut(&fd) else {
                continue;
            };
            entry.fired = false;
            let mask = entry.mask();
            // A closed fd fails here; the kernel has already forgotten it, as have we.
            if mask == 0
                || self
                    .poller
                    .set_interest(fd, mask, entry.registered)
                    .is_err()
            {
                let _ = self.poller.set_interest(fd, 0, true);
                fds.remove(&fd);
            }
        }
        let mut rearm = self.rearm.try_mut()?;
        if rearm.is_empty() {
            *rearm = pending;
            rearm.clear(); // keep the allocation
        }
        Ok(())
    }

    fn run_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let ntodo = this.ready.try_ref()?.len();
        let mut ran = 0u64;
        let result = (|| {
            for _ in 0..ntodo {
                let next = this.ready.try_mut()?.pop_front();
                let handle = match next {
                    None => break,
                    Some(Ready::Call(h)) => h,
                    Some(Ready::Io {
                        transport,
                        context,
                        writer,
                        gen,
                        queued_at,
                    }) => {
                        let transport = transport.into_bound(py);
                        if !transport.get().io_live(writer, gen) {
                            continue;
                        }
                        if queued_at > 0.0 {
                            let delay = monotonic() - queued_at;
                            this.stats.try_mut()?.ready_delay.record(delay);
                        }
                        let context = context.into_bound(py);
                        if !this.debug() {
                            ran += 1;
                            if this.watching.load(Ordering::Relaxed) {
                                let running = Running::Io {
                                    transport: &transport,
                                    writer,
                                };
                                Self::run_watched(this, running, || {
                                    StreamTransport::run_io(&transport, slf, writer, &context)
                                })?;
                            } else {
                                StreamTransport::run_io(&transport, slf, writer, &context)?;
                            }
                            continue;
                        }
                        // Debug mode sees the handle the event stands for (and counts it
                        // below).
                        let handle =
                            StreamTransport::io_handle(&transport, slf, writer, context.unbind())?;
                        handles::hide(handle.bind(py));
                        handle
                    }
                };
                let handle = handle.into_bound(py);
                if handle.get().is_cancelled() {
                    this.let_go(handle)?;
                    continue;
                }
                ran += 1;
                let queued_at = handle.get().take_queued_at();
                if queued_at > 0.0 {
                    let delay = monotonic() - queued_at;
                    this.stats.try_mut()?.ready_delay.record(delay);
                }
                let result = if this.watching.load(Ordering::Relaxed) {
                    Self::run_watched(this, Running::Call(&handle), || {
                        if this.debug() {
                            Self::run_debug(this, &handle)
                        } else {
                            Handle::run(&handle)
                        }
                    })
                } else if this.debug() {
                    Self::run_debug(this, &handle)
                } else {
                    Handle::run(&handle)
                };
                this.let_go(handle)?;
                result?;
            }
            Ok(())
        })();
        this.stats.try_mut()?.callbacks += ran;
        result
    }

    /// The loop is done with a handle from the ready queue: keep it for reuse if nothing
    /// else can reach it, else let it go (see `handles::release`). Not in debug mode,
    /// whose reports may hold handles. (The stall watchdog holds a reference to any
    /// handle it reports on, and only borrows the running one until `end`.)
    fn let_go(&self, handle: Bound<'_, Handle>) -> PyResult<()> {
        let py = handle.py();
        let plain = handles::reusable(&handle, self.handle_type as *mut ffi::PyTypeObject);
        let timer = !plain && handles::reusable(&handle, self.timer_type as *mut ffi::PyTypeObject);
        if self.debug() || !(plain || timer) {
            handles::release(handle.as_any());
            return Ok(());
        }
        if !handle.get().empty_for_reuse(py) {
            handles::release(handle.as_any());
            return Ok(());
        }
        if timer {
            let mut free = self.free_timers.try_mut()?;
            if free.len() < FREE_HANDLES {
                // SAFETY: its type is exactly TimerHandle (`reusable`).
                free.push(unsafe { handle.into_any().cast_into_unchecked() }.unbind());
            }
        } else {
            let mut free = self.free_handles.try_mut()?;
            if free.len() < FREE_HANDLES {
                free.push(handle.unbind());
            }
        }
        Ok(())
    }

    /// Run one callback (`run`) with the stall watchdog looking on.
    fn run_watched(
        this: &LoopCore,
        running: Running<'_, '_>,
        run: impl FnOnce() -> PyResult<()>,
    ) -> PyResult<()> {
        let tid = this.thread_id.load(Ordering::Relaxed);
        if let Some(w) = this.watchdog.try_ref()?.as_ref() {
            w.begin(running, tid);
        }
        let result = run();
        if let Some(w) = this.watchdog.try_ref()?.as_ref() {
            // A failing report must not stop the loop.
            if let Err(err) = w.end(running) {
                err.write_unraisable(running.py(), None);
            }
        }
        result
    }

    fn run_debug(this: &LoopCore, handle: &Bound<'_, Handle>) -> PyResult<()> {
        let py = handle.py();
        *this.current_handle.try_mut()? = Some(handle.clone().unbind());
        let t0 = monotonic();
        let result = Handle::run(handle);
        let dt = monotonic() - t0;
        let previous = this.current_handle.try_mut()?.take();
        drop(previous);
        result?;
        if dt >= *this.slow_callback_duration.try_ref()? {
            helpers::get(py)?
                .log_slow_callback
                .call1(py, (handle, dt))?;
        }
        Ok(())
    }

    /// How long the poll may block: zero with work ready, else until the next timer
    /// (which the deadline timer is armed for, for a precise wake-up, together with the
    /// timers due just after it: see `TimerHeap::wake_time`), else forever.
    fn poll_timeout(&self, py: Python<'_>) -> PyResult<Option<Duration>> {
        if !self.ready.try_ref()?.is_empty() || self.stopping.load(Ordering::Relaxed) {
            return Ok(Some(Duration::ZERO));
        }
        let Some(when) = self.timers.try_mut()?.wake_time(py) else {
            return Ok(None);
        };
        let secs = (when - monotonic()).clamp(0.0, MAX_POLL_SECONDS);
        if secs > 0.0 {
            if let Some(d) = self.deadline.try_mut()?.as_mut() {
                d.arm(when);
            }
        }
        Ok(Some(Duration::from_secs_f64(secs)))
    }

    fn queue_due_timers(&self, py: Python<'_>, now: f64) -> PyResult<()> {
        let end_time = now + self.clock_resolution;
        let mut timers = self.timers.try_mut()?;
        let mut ready = self.ready.try_mut()?;
        while let Some(timer) = timers.pop_due(end_time) {
            let handle = timer.into_bound(py).into_super().unbind();
            if self.sampler.sample_now() {
                handle.get().set_queued_at(now);
            }
            ready.push_back(Ready::Call(handle));
        }
        Ok(())
    }

    fn run_once_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // No vector at all in the common case (nothing cancelled at the top of the heap):
        // an empty one still cost an out-of-line drop per iteration.
        let garbage = this.timers.try_mut()?.prune(py);
        if let Some(garbage) = garbage {
            for h in &garbage {
                handles::release(h.bind(py).as_any());
            }
            drop(garbage);
        }
        let timeout = this.poll_timeout(py)?;
        let now = this.poll_io(py, timeout)?;
        this.queue_due_timers(py, now)?;
        Self::run_ready(slf)
    }

    pub(crate) fn set_reader_or_writer(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        writer: bool,
    ) -> PyResult<Py<Handle>> {
        let fd = fileobj_to_fd(fileobj)?;
        slf.get().check_closed()?;
        let handle = Py::new(
            slf.py(),
            Handle::with_slots(Self::slots_for(
                slf,
                callback,
                args.into(),
                None,
                TRACE_DEPTH,
            )?),
        )?;
        let result = handle.clone_ref(slf.py());
        Self::set_fd_watcher(slf, fd, Watcher::Call(handle), writer, false)?;
        Ok(result)
    }

    fn set_fd_watcher(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        watcher: Watcher,
        writer: bool,
        drains: bool,
    ) -> PyResult<()> {
        let this = slf.get();
        this.check_closed()?;
        let old = {
            let mut fds = this.fds.try_mut()?;
            let entry = fds.entry(fd).or_default();
            entry.drained_by_owner = drains;
            let slot = if writer {
                &mut entry.writer
            } else {
                &mut entry.reader
            };
            let old = slot.replace(watcher);
            if let Err(e) = this.poller.set_interest(fd, entry.mask(), entry.registered) {
                // Undo: the fd cannot be watched (e.g. a regular file: EPERM).
                let slot = if writer {
                    &mut entry.writer
                } else {
                    &mut entry.reader
                };
                let new = std::mem::replace(slot, old);
                let empty = entry.mask() == 0 && !entry.registered;
                if empty {
                    fds.remove(&fd);
                }
                drop(fds);
                drop(new);
                return Err(e.into());
            }
            entry.registered = true;
            old
        };
        if let Some(Watcher::Call(old)) = old {
            Handle::cancel_base(old.bind(slf.py()))?;
        }
        Ok(())
    }

    fn unset_reader_or_writer(
        slf: &Bound<'_, Self>,
        fileobj: &Bound<'_, PyAny>,
        writer: bool,
    ) -> PyResult<bool> {
        if slf.get().closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let fd = fileobj_to_fd(fileobj)?;
        Self::unset_fd_callback(slf, fd, writer)
    }

    fn unset_fd_callback(slf: &Bound<'_, Self>, fd: RawFd, writer: bool) -> PyResult<bool> {
        let this = slf.get();
        if this.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let old = {
            let mut fds = this.fds.try_mut()?;
            let Some(entry) = fds.get_mut(&fd) else {
                return Ok(false);
            };
            let old = if writer {
                entry.writer.take()
            } else {
                entry.reader.take()
            };
            if old.is_none() {
                return Ok(false);
            }
            let mask = entry.mask();
            let poller = &this.poller;
            if poller.set_interest(fd, mask, entry.registered).is_err() && mask != 0 {
                let _ = poller.set_interest(fd, 0, true);
            }
            if mask == 0 {
                fds.remove(&fd);
            }
            old
        };
        if let Some(Watcher::Call(old)) = old {
            Handle::cancel_base(old.bind(slf.py()))?;
        }
        Ok(true)
    }
}

impl LoopCore {
    /// `call_later(delay, ...)` (`relative`) or `call_at(when, ...)`.
    fn call_timer(
        slf: &Bound<'_, Self>,
        time: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Args,
        context: Option<Py<PyAny>>,
        relative: bool,
    ) -> PyResult<Py<TimerHandle>> {
        let (when, depth) = if relative {
            if time.is_none() {
                return Err(PyTypeError::new_err("delay must not be None"));
            }
            let now = monotonic();
            let when = match time.extract::<f64>() {
                Ok(d) => now + d,
                // Let Python raise its own error for `float + delay`.
                Err(_) => PyFloat::new(slf.py(), now).add(time)?.extract::<f64>()?,
            };
            // Stock call_later hands over to call_at: one frame more.
            (when, TRACE_DEPTH - 1)
        } else {
            if time.is_none() {
                return Err(PyTypeError::new_err("when cannot be None"));
            }
            (time.extract::<f64>()?, TRACE_DEPTH)
        };
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            this.check_thread()?;
            // call_later's messages carry call_at's name too.
            this.check_callback(slf.py(), callback, "call_at")?;
        }
        Self::schedule_at(slf, when, callback, args, context, depth)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let (poller, waker) = Poller::new()?;
        let deadline = DeadlineTimer::new();
        if let Some(d) = &deadline {
            poller.register_deadline_fd(d.fd())?;
        }
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut res) };
        Ok(LoopCore {
            ready: GilCell::new(VecDeque::with_capacity(256)),
            timers: GilCell::new(TimerHeap::default()),
            poller,
            waker: GilCell::new(Some(waker)),
            fds: GilCell::new(FdMap::default()),
            rearm: GilCell::new(Vec::new()),
            signals: GilCell::new(SignalTable::default()),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            thread_id: AtomicU64::new(0),
            slow_callback_duration: GilCell::new(0.1),
            current_handle: GilCell::new(None),
            clock_resolution: res.tv_sec as f64 + res.tv_nsec as f64 * 1e-9,
            deadline: GilCell::new(deadline),
            stats: GilCell::new(Stats::new()),
            sampler: Sampler::new(),
            watchdog: GilCell::new(None),
            watching: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            open_transports: AtomicI64::new(0),
            transport_fds: GilCell::new(HashMap::new()),
            free_handles: GilCell::new(Vec::new()),
            free_timers: GilCell::new(Vec::new()),
            handle_type: py.get_type::<Handle>().as_type_ptr() as usize,
            timer_type: py.get_type::<TimerHandle>().as_type_ptr() as usize,
            task_factory: GilCell::new(None),
            task_attr: ModuleAttr::new(py, "asyncio.tasks", "Task")?,
            future_attr: ModuleAttr::new(py, "asyncio.futures", "Future")?,
            c_future: c_type(py, "Future"),
            c_task: c_type(py, "Task"),
            call_kwargs: GilCell::new(None),
            py311: py.version_info() >= (3, 11),
        })
    }

    // create_future and time: see install_fast_paths.

    /// The stock `create_task` of 3.14 and later: `create_task(coro, **kwargs)`, every
    /// keyword argument handed on as given, to the task factory (`factory(loop, coro,
    /// **kwargs)`) or to `Task(coro, loop=self, **kwargs)` (`name`, `context`,
    /// `eager_start`, ...).
    #[cfg(Py_3_14)]
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let factory = this
            .task_factory
            .try_ref()?
            .as_ref()
            .map(|f| f.clone_ref(py));
        if let Some(factory) = factory {
            return factory.bind(py).call((slf, coro), kwargs);
        }
        let task = this.task_attr.get(py)?;
        if kwargs.is_none() && is_c_type(&task, &this.c_task) {
            if let Some(plain) = Self::call_kwargs(slf, |k| &k.task)? {
                return task.call((coro,), Some(&plain));
            }
        }
        let all = PyDict::new(py);
        all.set_item(intern!(py, "loop"), slf)?;
        if let Some(kwargs) = kwargs {
            if kwargs.contains(intern!(py, "loop"))? {
                return Err(PyTypeError::new_err(format!(
                    "{}() got multiple values for keyword argument 'loop'",
                    task.getattr(intern!(py, "__qualname__"))?
                )));
            }
            all.update(kwargs.as_mapping())?;
        }
        task.call((coro,), Some(&all))
    }

    /// The stock `create_task` of 3.13 and earlier: a `Task` on this loop, or whatever the
    /// task factory makes of the coroutine (then named by `set_name`). From 3.13.3 on,
    /// other keyword arguments (`eager_start`, ...) are handed on to `Task` or the factory
    /// as 3.13.4's does (`name` stays the loop's to set); before, they are refused.
    #[cfg(not(Py_3_14))]
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let context = context.filter(|c| !c.is_none());
        if context.is_some() && !this.py311 {
            return Err(PyTypeError::new_err(
                "create_task() got an unexpected keyword argument 'context'",
            ));
        }
        let extra = match kwargs.filter(|k| !k.is_empty()) {
            Some(k) if create_task_takes_any_keyword(py)? => Some(k),
            Some(k) => {
                let key = k.keys().get_item(0)?;
                return Err(PyTypeError::new_err(format!(
                    "create_task() got an unexpected keyword argument '{key}'"
                )));
            }
            None => None,
        };
        let factory = match this.task_factory.try_ref()?.as_ref() {
            Some(f) => f.bind(py).clone(),
            None => {
                let name = name.filter(|n| !n.is_none());
                let task = this.task_attr.get(py)?;
                if name.is_none()
                    && context.is_none()
                    && extra.is_none()
                    && is_c_type(&task, &this.c_task)
                {
                    if let Some(kwargs) = Self::call_kwargs(slf, |k| &k.task)? {
                        return task.call((coro,), Some(&kwargs));
                    }
                }
                let kwargs = PyDict::new(py);
                if let Some(extra) = extra {
                    kwargs.update(extra.as_mapping())?;
                }
                kwargs.set_item(intern!(py, "loop"), slf)?;
                kwargs.set_item(intern!(py, "name"), name)?;
                if this.py311 {
                    kwargs.set_item(intern!(py, "context"), context)?;
                }
                return task.call((coro,), Some(&kwargs));
            }
        };
        let task = match (context, extra) {
            (None, None) => factory.call1((slf, coro))?,
            (context, extra) => {
                let kwargs = PyDict::new(py);
                if let Some(extra) = extra {
                    kwargs.update(extra.as_mapping())?;
                }
                if let Some(ctx) = context {
                    kwargs.set_item(intern!(py, "context"), ctx)?;
                }
                factory.call((slf, coro), Some(&kwargs))?
            }
        };
        if let Some(name) = name.filter(|n| !n.is_none()) {
            if cfg!(Py_3_13) {
                task.call_method1(intern!(py, "set_name"), (name,))?;
            } else {
                let tasks = this.task_attr.module.bind(py);
                let set_name = tasks.getattr("_set_task_name")?;
                set_name.call1((&task, name))?;
            }
        }
        Ok(task)
    }

    #[getter(_task_factory)]
    fn task_factory_get(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.task_factory.try_ref()?.as_ref() {
            Some(f) => f.clone_ref(py),
            None => py.None(),
        })
    }

    #[setter(_task_factory)]
    fn task_factory_set(&self, py: Python<'_>, factory: Option<Py<PyAny>>) -> PyResult<()> {
        let factory = factory.filter(|f| !f.is_none(py));
        let old = std::mem::replace(&mut *self.task_factory.try_mut()?, factory);
        drop(old); // after the borrow: a __del__ may re-enter
        Ok(())
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            this.check_thread()?;
            this.check_callback(slf.py(), callback, "call_soon")?;
        }
        Self::schedule_soon(slf, callback, args.into(), context)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let this = slf.get();
        this.check_closed()?;
        if this.debug() {
            this.check_callback(slf.py(), callback, "call_soon_threadsafe")?;
        }
        let handle = Self::schedule_soon(slf, callback, args.into(), context)?;
        if let Some(w) = this.waker.try_ref()?.as_ref() {
            let _ = w.wake();
        }
        Ok(handle)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        Self::call_timer(slf, delay, callback, args.into(), context, true)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        Self::call_timer(slf, when, callback, args.into(), context, false)
    }

    // get_debug: see install_fast_paths.

    /// Any object, by its truth (stock accepts `set_debug(0)`).
    fn set_debug(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(enabled.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    #[getter]
    fn get_slow_callback_duration(&self) -> PyResult<f64> {
        Ok(*self.slow_callback_duration.try_ref()?)
    }

    #[setter]
    fn set_slow_callback_duration(&self, value: f64) -> PyResult<()> {
        *self.slow_callback_duration.try_mut()? = value;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.thread_id.load(Ordering::Relaxed) != 0
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn _thread_id(&self) -> Option<u64> {
        match self.thread_id.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    #[getter]
    fn _current_handle(&self, py: Python<'_>) -> PyResult<Option<Py<Handle>>> {
        Ok(self
            .current_handle
            .try_ref()?
            .as_ref()
            .map(|h| h.clone_ref(py)))
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    /// One loop iteration.
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once_impl(slf)
    }

    /// Run iterations until `stop()`; the Python `run_forever` wraps this with the
    /// running-loop registration and asyncgen hooks.
    fn _run_until_stopped(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.check_closed()?;
        if this.is_running() {
            return Err(errors::already_running());
        }
        this.thread_id.store(current_thread_id(), Ordering::Relaxed);
        let result = loop {
            if let Err(e) = Self::run_once_impl(slf) {
                break Err(e);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stopping.store(false, Ordering::Relaxed);
        this.thread_id.store(0, Ordering::Relaxed);
        let kwargs = this.call_kwargs.try_mut()?.take();
        drop(kwargs); // after the borrow
        this.stats.try_mut()?.paused(monotonic());
        result
    }

    /// Release everything the loop holds: queued callbacks, timers, watched fds, the
    /// epoll and wakeup fds. Idempotent.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_running() {
            return Err(errors::close_running());
        }
        if self.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.watching.store(false, Ordering::Relaxed);
        if let Some(w) = self.watchdog.try_mut()?.take() {
            w.stop(py);
        }
        let deadline = self.deadline.try_mut()?.take();
        let mut timers = Vec::new();
        self.timers.try_mut()?.clear(&mut timers);
        let ready: Vec<_> = self.ready.try_mut()?.drain(..).collect();
        let fds: Vec<_> = self.fds.try_mut()?.drain().collect();
        let signals = self.signals.try_mut()?.drain();
        let waker = self.waker.try_mut()?.take();
        let owned: Vec<_> = self.transport_fds.try_mut()?.drain().collect();
        drop(owned);
        let free = std::mem::take(&mut *self.free_handles.try_mut()?);
        let free_timers = std::mem::take(&mut *self.free_timers.try_mut()?);
        drop((free, free_timers));
        self.poller.close();
        for h in &timers {
            handles::release(h.bind(py).as_any());
        }
        for r in &ready {
            r.release(py);
        }
        drop((timers, ready, fds, signals, waker, deadline));
        Ok(())
    }

    /// Counters and gauges since the loop was created (see the README).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        {
            let st = self.stats.try_ref()?;
            d.set_item("iterations", st.iterations)?;
            d.set_item("callbacks", st.callbacks)?;
            d.set_item("busy_time", st.busy)?;
            d.set_item("poll_time", st.polled)?;
            let total = st.busy + st.polled;
            d.set_item(
                "busy_ratio",
                if total > 0.0 { st.busy / total } else { 0.0 },
            )?;
            d.set_item("ready_delay_p50", st.ready_delay.quantile(0.5))?;
            d.set_item("ready_delay_p99", st.ready_delay.quantile(0.99))?;
        }
        d.set_item("timers_pending", self.timers.try_ref()?.len())?;
        d.set_item("fds_watched", self.fds.try_ref()?.len())?;
        d.set_item(
            "open_transports",
            self.open_transports.load(Ordering::Relaxed),
        )?;
        d.set_item("bytes_read", self.bytes_read.load(Ordering::Relaxed))?;
        d.set_item("bytes_written", self.bytes_written.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// Report callbacks that hold the loop longer than `threshold` seconds (None or 0:
    /// off). `callback(report)` receives each report instead of the `oxloop` logger.
    #[pyo3(signature = (threshold, callback=None))]
    fn set_stall_watchdog(
        &self,
        py: Python<'_>,
        threshold: Option<f64>,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let threshold = threshold.unwrap_or(0.0);
        if threshold.is_nan() || threshold < 0.0 {
            return Err(PyValueError::new_err(format!(
                "threshold must be a non-negative number of seconds, got {threshold}"
            )));
        }
        let callback = callback.filter(|c| !c.is_none(py));
        if let Some(c) = &callback {
            if !c.bind(py).is_callable() {
                return Err(PyTypeError::new_err("callback must be callable or None"));
            }
        }
        self.watching.store(false, Ordering::Relaxed);
        let old = self.watchdog.try_mut()?.take();
        if let Some(old) = old {
            old.stop(py);
        }
        if threshold > 0.0 {
            *self.watchdog.try_mut()? = Some(Watchdog::start(threshold, callback)?);
            self.watching.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::set_reader_or_writer(slf, fd, callback, args, false).map(drop)
    }

    /// `add_reader` returning the new handle (used by the sock_* methods).
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::set_reader_or_writer(slf, fd, callback, args, false)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::set_reader_or_writer(slf, fd, callback, args, true)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::set_reader_or_writer(slf, fd, callback, args, true).map(drop)
    }

    fn remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::unset_reader_or_writer(slf, fd, false)
    }

    fn remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        slf.get().ensure_fd_no_transport(slf.py(), fd)?;
        Self::unset_reader_or_writer(slf, fd, true)
    }

    /// `remove_reader` without the transport check (for the sock_* methods, which may
    /// run on a transport's socket during sendfile).
    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::unset_reader_or_writer(slf, fd, false)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::unset_reader_or_writer(slf, fd, true)
    }

    /// Record that `transport` owns `fd` (see `ensure_fd_no_transport`).
    fn _claim_fd(&self, fd: RawFd, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let weak = pyo3::types::PyWeakrefReference::new(transport)?;
        self.transport_fds
            .try_mut()?
            .insert(fd, weak.into_any().unbind());
        Ok(())
    }

    /// The transports that claimed an fd and are still alive (for `Server.close_clients`).
    fn _claimed_transports(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let weak: Vec<Py<PyAny>> = self
            .transport_fds
            .try_ref()?
            .values()
            .map(|w| w.clone_ref(py))
            .collect();
        let mut alive = Vec::with_capacity(weak.len());
        for w in weak {
            let t = w.bind(py).call0()?;
            if !t.is_none() {
                alive.push(t.unbind());
            }
        }
        Ok(alive)
    }

    /// Watch the read end of the `signal.set_wakeup_fd` socket (or stop, with -1).
    fn _set_signal_fd(&self, fd: RawFd) -> PyResult<()> {
        self.check_closed()?;
        let mut signals = self.signals.try_mut()?;
        if let Some(old) = signals.wakeup_fd.take() {
            self.poller.deregister_fd(old);
        }
        if fd >= 0 {
            self.poller.register_signal_fd(fd)?;
            signals.wakeup_fd = Some(fd);
        }
        Ok(())
    }

    /// Register `callback(*args)` for signal `sig` (the Python side validated it).
    #[pyo3(signature = (sig, callback, *args))]
    fn _add_signal_handle(
        slf: &Bound<'_, Self>,
        sig: i32,
        callback: &Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().check_closed()?;
        let handle = Py::new(
            slf.py(),
            Handle::with_slots(Self::slots_for(
                slf,
                callback,
                args.into(),
                None,
                TRACE_DEPTH + 1 + PY_GLUE_FRAMES,
            )?),
        )?;
        let old = slf.get().signals.try_mut()?.insert(sig, handle);
        if let Some(old) = old {
            Handle::cancel_base(old.bind(slf.py()))?;
        }
        Ok(())
    }

    fn _remove_signal_handle(slf: &Bound<'_, Self>, sig: i32) -> PyResult<bool> {
        let old = slf.get().signals.try_mut()?.remove(sig);
        match old {
            Some(old) => {
                Handle::cancel_base(old.bind(slf.py()))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: the collector traverses with the GIL held (nothing here takes it).
        let py = unsafe { Python::assume_attached() };
        if let Some(ready) = self.ready.peek() {
            for r in ready.iter() {
                r.visit(py, &visit)?;
            }
        }
        if let Some(timers) = self.timers.peek() {
            for h in timers.handles() {
                handles::visit_queued(h.bind(py).as_super(), &visit)?;
            }
        }
        if let Some(fds) = self.fds.peek() {
            for w in fds.values().flat_map(|e| [&e.reader, &e.writer]).flatten() {
                match w {
                    Watcher::Call(h) => visit.call(h)?,
                    Watcher::Transport {
                        transport, context, ..
                    } => {
                        visit.call(transport)?;
                        visit.call(context)?;
                    }
                }
            }
        }
        if let Some(signals) = self.signals.peek() {
            for h in signals.handles() {
                visit.call(h)?;
            }
        }
        if let Some(cur) = self.current_handle.peek() {
            if let Some(h) = cur.as_ref() {
                visit.call(h)?;
            }
        }
        if let Some(w) = self.watchdog.peek() {
            if let Some(w) = w.as_ref() {
                w.traverse(&visit)?;
            }
        }
        if let Some(f) = self.task_factory.peek() {
            if let Some(f) = f.as_ref() {
                visit.call(f)?;
            }
        }
        self.task_attr.traverse(&visit)?;
        self.future_attr.traverse(&visit)?;
        if let Some(k) = self.call_kwargs.peek() {
            if let Some(k) = k.as_ref() {
                visit.call(&k.future)?;
                visit.call(&k.task)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let ready: Vec<_> = match self.ready.try_mut() {
            Ok(mut r) => r.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let mut timers = Vec::new();
        if let Ok(mut t) = self.timers.try_mut() {
            t.clear(&mut timers);
        }
        let fds: Vec<_> = match self.fds.try_mut() {
            Ok(mut f) => f.drain().collect(),
            Err(_) => Vec::new(),
        };
        let signals = match self.signals.try_mut() {
            Ok(mut s) => s.drain(),
            Err(_) => Vec::new(),
        };
        let free = match self.free_handles.try_mut() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(_) => Vec::new(),
        };
        let free_timers = match self.free_timers.try_mut() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(_) => Vec::new(),
        };
        let factory = self.task_factory.try_mut().ok().and_then(|mut f| f.take());
        let kwargs = self.call_kwargs.try_mut().ok().and_then(|mut k| k.take());
        let looked_up = (self.task_attr.forget(), self.future_attr.forget());
        if let Ok(w) = self.watchdog.try_ref() {
            if let Some(w) = w.as_ref() {
                self.watching.store(false, Ordering::Relaxed);
                w.clear();
            }
        }
        // SAFETY: the collector calls tp_clear with the GIL held.
        let py = unsafe { Python::assume_attached() };
        for h in &timers {
            handles::release(h.bind(py).as_any());
        }
        for r in &ready {
            r.release(py);
        }
        drop((
            ready,
            timers,
            fds,
            signals,
            free,
            free_timers,
            factory,
            kwargs,
            looked_up,
        ));
    }
}

/// A PyO3-generated `LoopCore` method that a hand-written entry hands the calls it does
/// not take to (argument shapes it does not parse, debug mode, a loop that is not running
/// on the calling thread): its checks and messages, unchanged.
struct Generic(PyOnceLock<Py<PyAny>>);

static CALL_SOON_GENERIC: Generic = Generic(PyOnceLock::new());
static CALL_LATER_GENERIC: Generic = Generic(PyOnceLock::new());
static CALL_AT_GENERIC: Generic = Generic(PyOnceLock::new());
static CREATE_TASK_GENERIC: Generic = Generic(PyOnceLock::new());

impl Generic {
    /// Keep the generated method before the hand-written one replaces it on the type.
    fn keep(&self, ty: &Bound<'_, pyo3::types::PyType>, name: &str) -> PyResult<()> {
        let method = ty.getattr(intern!(ty.py(), "__dict__"))?.get_item(name)?;
        let _ = self.0.set(ty.py(), method.unbind());
        Ok(())
    }

    /// Call it with a `METH_FASTCALL | METH_KEYWORDS` entry's arguments: its result, or
    /// NULL with its exception set. (No Rust object that could need dropping: this needs
    /// no PyO3 entry around it.)
    ///
    /// # Safety
    /// As the entry: `args` holds `nargsf`'s positional arguments, then one value per
    /// name in `kwnames`; the GIL is held.
    unsafe fn call(
        &self,
        py: Python<'_>,
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        let _ = py;
        unsafe { crate::entries::call_generic(&self.0, slf, args, nargsf, kwnames) }
    }
}

/// Run the body of a hand-written C entry as PyO3's entries run theirs, less its
/// bookkeeping: an error is raised in Python and a panic becomes a `PanicException`,
/// never unwinding into the interpreter.
///
/// PyO3's entries also count the GIL as held for the thread (so that a `Py` dropped
/// inside is decref'd at once, not deferred). The hand-written entries use this only on
/// the thread that runs the loop, while it runs: that is inside `_run_until_stopped`, a
/// PyO3 entry, which counted it already.
pub(crate) fn guarded(
    py: Python<'_>,
    body: impl FnOnce() -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    crate::entries::guarded(|| crate::entries::raise_or(py, body()))
}

/// Replace `LoopCore` methods by entries that skip PyO3's general ones:
///
/// * `call_soon`, `call_later` and `call_at`, entered with `METH_FASTCALL`: while the
///   loop runs on the calling thread (outside debug mode), their common shapes
///   (`[delay or when,] callback, *args`, with or without `context=ctx`) are taken apart
///   by hand instead of by PyO3's argument parser and run without PyO3's entry
///   bookkeeping (see `guarded`); anything else goes to the generated method, so errors
///   stay the same.
/// * `create_future` and `create_task(coro)`: the same, for their plain shapes.
/// * `get_debug`, which the C `Future` and `Task` call once each when created, and
///   `time`: plain `METH_NOARGS` reads that cannot fail.
/// * and, through `handles::install_fast_paths`, `Handle.cancel` and `TimerHandle.cancel`.
pub fn install_fast_paths(py: Python<'_>) -> PyResult<()> {
    handles::install_fast_paths(py)?;
    let ty = py.get_type::<LoopCore>();
    CALL_SOON_GENERIC.keep(&ty, "call_soon")?;
    CALL_LATER_GENERIC.keep(&ty, "call_later")?;
    CALL_AT_GENERIC.keep(&ty, "call_at")?;
    CREATE_TASK_GENERIC.keep(&ty, "create_task")?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"create_task".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: create_task_fast,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"create_task($self, coro, *, name=None, context=None)\n--\n\nThe stock `create_task`: a `Task` on this loop, or whatever the task factory makes\nof the coroutine (then named by `set_name`).".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"call_later".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_later_fast,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"call_later($self, delay, callback, *args, context=None)\n--\n\n".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"call_at".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_at_fast,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"call_at($self, when, callback, *args, context=None)\n--\n\n".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"call_soon".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_soon_fast,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"call_soon($self, callback, *args, context=None)\n--\n\n".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"get_debug".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: get_debug_fast,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"get_debug($self)\n--\n\n".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"create_future".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: create_future_fast,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"create_future($self)\n--\n\n`asyncio.Future(loop=self)`.".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"time".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: time_fast,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"time($self)\n--\n\nThe loop's clock: `time.monotonic()`.".as_ptr(),
        },
    )
}

/// Put a method descriptor for `def` (kept for the life of the process) on `ty`.
pub(crate) fn install_method(
    ty: &Bound<'_, pyo3::types::PyType>,
    def: ffi::PyMethodDef,
) -> PyResult<()> {
    let def = Box::leak(Box::new(def));
    let name = unsafe { std::ffi::CStr::from_ptr(def.ml_name) }
        .to_str()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(ty.py(), ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))?
    };
    ty.setattr(name, descr)
}

/// `ptr` as a `&Bound`, with no change to its reference count (as PyO3's own entries
/// see their arguments; `Bound` is a transparent wrapper of the pointer).
///
/// # Safety
/// `ptr` is a valid object for `'a` and the GIL is held.
pub(crate) unsafe fn bound_ref<'a, 'py>(
    _py: Python<'py>,
    ptr: &'a *mut ffi::PyObject,
) -> &'a Bound<'py, PyAny> {
    unsafe { &*std::ptr::from_ref(ptr).cast::<Bound<'py, PyAny>>() }
}

/// The `LoopCore` a method descriptor was called on.
///
/// # Safety
/// `slf` is a `LoopCore` (the method descriptor checked it) and the GIL is held.
/// Whether a call's keyword names (a tuple of str) include `context`.
///
/// # Safety
/// `kwnames` is a live tuple of str and the GIL is held.
unsafe fn names_context(py: Python<'_>, kwnames: *mut ffi::PyObject) -> bool {
    let names = unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
    names
        .iter()
        .any(|n| n.extract::<&str>().is_ok_and(|n| n == "context"))
}

unsafe fn loop_of<'a>(py: Python<'a>, slf: &'a *mut ffi::PyObject) -> &'a LoopCore {
    unsafe { bound_ref(py, slf).cast_unchecked::<LoopCore>() }.get()
}

/// `get_debug()`. No PyO3 trampoline: reading an atomic flag cannot fail or panic, and
/// nothing here is dropped.
unsafe extern "C" fn get_debug_fast(
    slf: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        let py = Python::assume_attached();
        let flag = if loop_of(py, &slf).debug() {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        };
        ffi::Py_NewRef(flag)
    }
}

/// `time()`: no PyO3 trampoline, as `get_debug`'s (reading the clock cannot fail).
unsafe extern "C" fn time_fast(
    _slf: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe { ffi::PyFloat_FromDouble(monotonic()) }
}

/// `create_future()`: without PyO3's entry bookkeeping while the loop runs on this
/// thread, inside `Python::attach` otherwise.
unsafe extern "C" fn create_future_fast(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        let py = Python::assume_attached();
        if loop_of(py, &slf).runs_here() {
            guarded(py, || create_future_impl(py, slf))
        } else {
            let _ = args;
            Python::attach(|py| guarded(py, || create_future_impl(py, slf)))
        }
    }
}

/// # Safety
/// `slf` is a `LoopCore` (the method descriptor checked it); the GIL is held.
#[inline(always)]
unsafe fn create_future_impl(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let slf = unsafe { bound_ref(py, &slf).cast_unchecked::<LoopCore>() };
    LoopCore::new_future(slf).map(Bound::into_ptr)
}

/// A `METH_FASTCALL | METH_KEYWORDS` entry `$name` for a scheduling method: its
/// generated method, how many arguments come before the callback, and what to do with
/// the call taken apart (see `FastCall::schedule`).
macro_rules! scheduling_entry {
    ($name:ident, $generic:expr, $lead:expr, $schedule:expr) => {
        unsafe extern "C" fn $name(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargsf: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            let call = FastCall {
                slf,
                args,
                nargsf,
                kwnames,
            };
            unsafe { call.schedule(&$generic, $lead, $schedule) }
        }
    };
}

scheduling_entry!(
    call_soon_fast,
    CALL_SOON_GENERIC,
    0,
    |lp, _, callback, rest, context| {
        LoopCore::schedule_soon(lp, callback, rest, context).map(Py::into_ptr)
    }
);

scheduling_entry!(
    call_later_fast,
    CALL_LATER_GENERIC,
    1,
    |lp, delay, callback, rest, context| {
        LoopCore::call_timer(lp, delay, callback, rest, context, true).map(Py::into_ptr)
    }
);

scheduling_entry!(
    call_at_fast,
    CALL_AT_GENERIC,
    1,
    |lp, when, callback, rest, context| {
        LoopCore::call_timer(lp, when, callback, rest, context, false).map(Py::into_ptr)
    }
);

/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call: `args` holds the positional
/// arguments (their number in `nargsf`), then one value per name in `kwnames`; `slf`
/// is a `LoopCore` (the method descriptor checked it).
#[derive(Clone, Copy)]
struct FastCall {
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
}

impl FastCall {
    /// Run a scheduling method (`lead` leading arguments, then `callback, *args`, and
    /// `context=` or no keyword) from its hand-written entry: by hand while the loop runs
    /// on this thread outside debug mode and the call has one of those shapes, else
    /// through `generic`. `schedule` gets the loop, the first argument (the delay or the
    /// time; the callback for `call_soon`), the callback, the rest as a tuple and the
    /// context.
    ///
    /// # Safety
    /// The GIL is held; `self` is what the interpreter passed to the entry.
    #[inline(always)]
    unsafe fn schedule<'py>(
        self,
        generic: &Generic,
        lead: isize,
        schedule: impl Fn(
            &Bound<'py, LoopCore>,
            &Bound<'py, PyAny>,
            &Bound<'py, PyAny>,
            Args,
            Option<Py<PyAny>>,
        ) -> PyResult<*mut ffi::PyObject>,
    ) -> *mut ffi::PyObject {
        let FastCall {
            slf,
            args,
            nargsf,
            kwnames,
        } = self;
        unsafe {
            let py = Python::assume_attached();
            let fallback = || generic.call(py, slf, args, nargsf, kwnames);
            if !loop_of(py, &slf).runs_here_plain() {
                return fallback();
            }
            let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
            if nargs < lead + 1 {
                return fallback();
            }
            let context = if kwnames.is_null() {
                None
            } else if is_just_context(py, kwnames) {
                Some(*args.offset(nargs))
            } else {
                return fallback();
            };
            guarded(py, || {
                let lp = bound_ref(py, &slf).cast_unchecked::<LoopCore>();
                let first = bound_ref(py, &*args);
                let callback = bound_ref(py, &*args.offset(lead));
                let rest = args_of(py, args.offset(lead + 1), nargs - lead - 1)?;
                let context = context.map(|c| Bound::from_borrowed_ptr(py, c).unbind());
                schedule(lp, first, callback, rest, context)
            })
        }
    }
}

/// `create_task(coro)`: as `FastCall::schedule` does, without PyO3's argument parser and
/// entry bookkeeping while the loop runs on the calling thread; any other call (names,
/// contexts) through the generated method.
unsafe extern "C" fn create_task_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        let py = Python::assume_attached();
        let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
        let lp = loop_of(py, &slf);
        if !kwnames.is_null() && !lp.py311 && names_context(py, kwnames) {
            // 3.10's create_task has no `context` parameter: even `context=None` is refused.
            ffi::PyErr_SetString(
                ffi::PyExc_TypeError,
                c"create_task() got an unexpected keyword argument 'context'".as_ptr(),
            );
            return std::ptr::null_mut();
        }
        if nargs != 1 || !kwnames.is_null() || !lp.runs_here() {
            return CREATE_TASK_GENERIC.call(py, slf, args, nargsf, kwnames);
        }
        guarded(py, || {
            let lp = bound_ref(py, &slf).cast_unchecked::<LoopCore>();
            #[cfg(Py_3_14)]
            let task = LoopCore::create_task(lp, bound_ref(py, &*args), None);
            #[cfg(not(Py_3_14))]
            let task = LoopCore::create_task(lp, bound_ref(py, &*args), None, None, None);
            task.map(Bound::into_ptr)
        })
    }
}

/// `n` arguments for a handle (new references to them).
///
/// # Safety
/// `args` points to `n` valid object pointers; the GIL is held.
#[inline(always)]
unsafe fn args_of(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    n: ffi::Py_ssize_t,
) -> PyResult<Args> {
    match n {
        0 => return Ok(Args::Empty),
        1 => {
            return Ok(Args::One(
                unsafe { Bound::from_borrowed_ptr(py, *args) }.unbind(),
            ))
        }
        _ => {}
    }
    unsafe {
        let tuple = Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(n))?;
        for i in 0..n {
            let item = *args.offset(i);
            ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i, ffi::Py_NewRef(item));
        }
        Ok(Args::Tuple(tuple.cast_into_unchecked::<PyTuple>().unbind()))
    }
}

/// The keyword names of the last call that `is_just_context` found to be `("context",)`
/// (kept alive so that its address cannot be reused): `_asyncio` passes the same tuple
/// every time, so one comparison of addresses settles it.
static CONTEXT_KWNAMES: std::sync::atomic::AtomicPtr<ffi::PyObject> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Whether a call's keyword names are exactly `("context",)`. (`_asyncio` passes a tuple
/// and a name of its own, not the interned one, hence the text comparison.)
///
/// # Safety
/// `kwnames` is a call's tuple of keyword names; the GIL is held.
unsafe fn is_just_context(py: Python<'_>, kwnames: *mut ffi::PyObject) -> bool {
    if kwnames == CONTEXT_KWNAMES.load(Ordering::Relaxed) {
        return true;
    }
    unsafe {
        if ffi::PyTuple_GET_SIZE(kwnames) != 1 {
            return false;
        }
        let name = ffi::PyTuple_GET_ITEM(kwnames, 0);
        // Keyword names are always str.
        let matches = name == intern!(py, "context").as_ptr()
            || ffi::PyUnicode_CompareWithASCIIString(name, c"context".as_ptr()) == 0;
        if matches {
            let old = CONTEXT_KWNAMES.swap(ffi::Py_NewRef(kwnames), Ordering::Relaxed);
            if !old.is_null() {
                ffi::Py_DECREF(old);
            }
        }
        matches
    }
}
