//! `Handle` and `TimerHandle`: a scheduled callback, its arguments and its context.
//!
//! Mirrors `asyncio.events.Handle` / `TimerHandle`: `cancel`, `cancelled`, `get_context`,
//! `when`, the stock repr, and `_run`, which calls the callback inside its context and
//! hands any exception but `SystemExit`/`KeyboardInterrupt` to the loop's exception handler.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyFloat, PyTuple};
use pyo3::PyClass;
use pyo3::{PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::errors;
use crate::event_loop::LoopCore;
use crate::helpers;

/// A handle the loop has queued with `call_soon` is kept alive by the loop until it runs
/// or is dropped, and hardly ever held by anyone else (`call_soon`'s callers, the C Task
/// and Future among them, drop what it returns), so the cycle collector need not look
/// inside it meanwhile: the loop hides it, and the context it copied for itself (see
/// `own_context`), when queueing it and, when letting go, tracks them again if anyone
/// else still holds the handle (`release`). Every young-generation collection would
/// otherwise traverse every queued callback and its context. While hidden, the loop's
/// own traversal stands for it (`visit_queued`). A handle from the free list may still be
/// tracked (one that was not queued through here, e.g. a reader's): untracking an
/// untracked object is a no-op.
pub fn hide(handle: &Bound<'_, Handle>) {
    unsafe { ffi::PyObject_GC_UnTrack(handle.as_ptr().cast()) };
    hide_context(handle);
}

/// Hide only a scheduled handle's own context copy (see `own_context`), not the handle:
/// for a `TimerHandle`, which its caller usually keeps (`asyncio.sleep`, timeouts) and
/// which may so be part of a cycle the collector must see whole. The handle's traversal
/// visits what the hidden context refers to (`Handle::visit_slots`).
pub fn hide_context(handle: &Bound<'_, Handle>) {
    if let Some(slots) = handle.get().slots.peek() {
        if slots.own_context {
            if let Some(context) = &slots.context {
                unsafe { ffi::PyObject_GC_UnTrack(context.as_ptr().cast()) };
            }
        }
    }
}

/// The loop lets go of a handle: if it outlives the loop's hold, track it again, and its
/// context (whether or not the handle itself was hidden: see `hide`).
pub fn release(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    if unsafe { ffi::Py_REFCNT(p) } <= 1 {
        return;
    }
    track(p);
    if let Ok(handle) = obj.cast::<Handle>() {
        if let Some(slots) = handle.get().slots.peek() {
            if let Some(context) = &slots.context {
                track(context.as_ptr());
            }
        }
    }
}

/// For the loop's `tp_traverse`: a queued handle, or, if the loop alone holds it and it is
/// hidden (`hide`), what the handle refers to. The collector does not see a hidden handle,
/// so a reference it holds would otherwise count as one from outside: the loop, which
/// the handle refers to, could never be found unreachable, and a loop dropped without
/// `close()` would live on with everything it holds. A hidden handle that someone else
/// also holds is visited as itself (a no-op): its references are not the loop's alone,
/// and the collector sees them only once the loop lets go of it (`release`).
pub fn visit_queued(
    handle: &Bound<'_, Handle>,
    visit: &PyVisit<'_>,
) -> Result<(), PyTraverseError> {
    if held_hidden(handle.as_ptr()) {
        handle.get().visit_slots(visit)
    } else {
        visit.call(handle.as_unbound())
    }
}

/// Whether `obj` (a GC object) is hidden from the collector and has one reference only.
fn held_hidden(obj: *mut ffi::PyObject) -> bool {
    unsafe { ffi::Py_REFCNT(obj) == 1 && ffi::PyObject_GC_IsTracked(obj) == 0 }
}

/// Visit what `obj` refers to (its type's `tp_traverse`), as references of the caller's.
fn visit_inside(visit: &PyVisit<'_>, obj: &Py<PyAny>) -> Result<(), PyTraverseError> {
    struct Forward<'a, 'b> {
        visit: &'a PyVisit<'b>,
        failed: Option<PyTraverseError>,
    }
    unsafe extern "C" fn forward(
        obj: *mut ffi::PyObject,
        arg: *mut std::ffi::c_void,
    ) -> std::ffi::c_int {
        // SAFETY: `arg` is the `Forward` below, alive for the traversal; `obj` is a live
        // object, wrapped without a reference count change and never dropped.
        unsafe {
            let f = &mut *arg.cast::<Forward<'_, '_>>();
            let py = Python::assume_attached();
            let obj = std::mem::ManuallyDrop::new(Bound::from_owned_ptr(py, obj).unbind());
            match f.visit.call(&*obj) {
                Ok(()) => 0,
                Err(e) => {
                    f.failed = Some(e);
                    1
                }
            }
        }
    }
    let p = obj.as_ptr();
    // SAFETY: the collector traverses with the GIL held; `p` is alive (we hold it).
    let Some(traverse) = (unsafe { (*ffi::Py_TYPE(p)).tp_traverse }) else {
        return Ok(());
    };
    let mut f = Forward {
        visit,
        failed: None,
    };
    unsafe { traverse(p, forward, std::ptr::addr_of_mut!(f).cast()) };
    f.failed.map_or(Ok(()), Err)
}

/// Track `obj` (a GC object) if it is not tracked.
fn track(obj: *mut ffi::PyObject) {
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj) == 0 {
            ffi::PyObject_GC_Track(obj.cast());
        }
    }
}

/// A handle's own copy of the current context (made when no context was given) is hidden
/// from the cycle collector while the loop holds the scheduled handle (`hide`,
/// `hide_context`): only the handle refers to it, apart from what code running in it may
/// briefly hold (a `Token`, an entered context's link to the one it replaced), which
/// the collector would only keep alive for that while. It is tracked again before it can
/// be handed out or freed: when the handle hands it out (`get_context`), when the loop lets
/// go of a handle someone else holds (`release`), and before the handle drops it (a
/// context must be tracked when it is freed). A caller's context is never hidden.
#[inline(always)]
fn own_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let context = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? };
    Ok(context.unbind())
}

/// Drop a handle's context (see `own_context`).
fn drop_context(py: Python<'_>, context: Py<PyAny>) {
    track(context.as_ptr());
    drop(context.into_bound(py));
}

/// Visit what a slot holds, if anything.
fn visit_slot<T>(visit: &PyVisit<'_>, slot: &Option<Py<T>>) -> Result<(), PyTraverseError> {
    match slot {
        Some(obj) => visit.call(obj),
        None => Ok(()),
    }
}

/// A handle's positional arguments. Most callbacks take none or one (a future's done
/// callbacks get the future), which a handle keeps without a tuple: the tuple is made
/// only when something asks for it (`_args`, a report) and then kept, so that `_args`
/// stays the same object, as stock's attribute is.
pub enum Args {
    /// `()` (the empty tuple is a singleton, so nothing to keep).
    Empty,
    One(Py<PyAny>),
    Tuple(Py<PyTuple>),
}

impl From<Bound<'_, PyTuple>> for Args {
    fn from(args: Bound<'_, PyTuple>) -> Args {
        Args::Tuple(args.unbind())
    }
}

impl Args {
    /// The arguments as a tuple (a new reference).
    pub fn tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            Args::Empty => Ok(PyTuple::empty(py)),
            Args::One(arg) => PyTuple::new(py, [arg]),
            Args::Tuple(t) => Ok(t.bind(py).clone()),
        }
    }

    /// The arguments as a tuple, kept in place of what was here (see `Args`).
    fn as_tuple<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let tuple = self.tuple(py)?;
        if let Args::One(_) = self {
            *self = Args::Tuple(tuple.clone().unbind());
        }
        Ok(tuple)
    }

    fn clone_ref(&self, py: Python<'_>) -> Args {
        match self {
            Args::Empty => Args::Empty,
            Args::One(arg) => Args::One(arg.clone_ref(py)),
            Args::Tuple(t) => Args::Tuple(t.clone_ref(py)),
        }
    }

    /// Drop the arguments now, with the GIL held (see `Slots`'s `Drop`).
    fn release(self, py: Python<'_>) {
        match self {
            Args::Empty => {}
            Args::One(arg) => drop(arg.into_bound(py)),
            Args::Tuple(t) => drop(t.into_bound(py)),
        }
    }

    fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Args::Empty => Ok(()),
            Args::One(arg) => visit.call(arg),
            Args::Tuple(t) => visit.call(t),
        }
    }

    /// `callable(*args)`: its result, or NULL with the exception set.
    ///
    /// # Safety
    /// The GIL is held; `callable` is a live object.
    #[inline(always)]
    unsafe fn call(&self, py: Python<'_>, callable: *mut ffi::PyObject) -> *mut ffi::PyObject {
        unsafe {
            match self {
                Args::Empty => vectorcall(py, callable, std::ptr::null(), 0),
                // A free slot before the argument: a bound method may put `self` there.
                Args::One(arg) => {
                    let mut slots = [std::ptr::null_mut(), arg.as_ptr()];
                    let nargsf = 1 | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET;
                    vectorcall(py, callable, slots.as_mut_ptr().add(1), nargsf)
                }
                Args::Tuple(t) => {
                    let n = ffi::PyTuple_GET_SIZE(t.as_ptr());
                    let items =
                        std::ptr::addr_of!((*t.as_ptr().cast::<ffi::PyTupleObject>()).ob_item);
                    vectorcall(py, callable, items.cast(), n as usize)
                }
            }
        }
    }
}

/// `PyObject_Vectorcall(callable, args, nargsf, NULL)`: the callable's own vectorcall
/// function called directly (what `PyObject_Vectorcall` does after looking up the
/// thread state, which only its result check needs; here that check's thread-state look-up
/// comes only when an exception is set), or `PyObject_Vectorcall` itself for a callable
/// without one.
///
/// # Safety
/// The GIL is held; `args` holds `nargsf`'s arguments.
#[inline(always)]
unsafe fn vectorcall(
    _py: Python<'_>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
) -> *mut ffi::PyObject {
    unsafe {
        let tp = ffi::Py_TYPE(callable);
        if ffi::PyType_HasFeature(tp, ffi::Py_TPFLAGS_HAVE_VECTORCALL) != 0 {
            let slot = callable.cast::<u8>().offset((*tp).tp_vectorcall_offset);
            if let Some(func) = *slot.cast::<Option<ffi::vectorcallfunc>>() {
                let result = func(callable, args, nargsf, std::ptr::null_mut());
                if result.is_null() || !ffi::PyErr_Occurred().is_null() {
                    return check_result(callable, result);
                }
                return result;
            }
        }
        ffi::PyObject_Vectorcall(callable, args, nargsf, std::ptr::null_mut())
    }
}

/// A vectorcall's result that is NULL or came with an exception set: the `SystemError`
/// CPython makes for any call that breaks the protocol (a NULL without an exception, a
/// result with one), else the result as it is.
///
/// # Safety
/// The GIL is held; `callable` is live; `result` is NULL or a new reference.
#[cold]
#[inline(never)]
unsafe fn check_result(
    callable: *mut ffi::PyObject,
    result: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        let py = Python::assume_attached();
        let no_error = ffi::PyErr_Occurred().is_null();
        if result.is_null() {
            if no_error {
                let callable = Bound::from_borrowed_ptr(py, callable);
                let err = pyo3::exceptions::PySystemError::new_err(format!(
                    "{} returned NULL without setting an exception",
                    repr_or_type(&callable)
                ));
                err.restore(py);
            }
            return std::ptr::null_mut();
        }
        if no_error {
            return result;
        }
        ffi::Py_DECREF(result);
        let cause = PyErr::take(py);
        let callable = Bound::from_borrowed_ptr(py, callable);
        let err = pyo3::exceptions::PySystemError::new_err(format!(
            "{} returned a result with an exception set",
            repr_or_type(&callable)
        ));
        err.set_cause(py, cause);
        err.restore(py);
        std::ptr::null_mut()
    }
}

/// `repr(obj)`, or its type's name if that fails (the failure dropped).
fn repr_or_type(obj: &Bound<'_, PyAny>) -> String {
    match obj.repr() {
        Ok(r) => r.to_string(),
        Err(_) => format!(
            "<{} object>",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ),
    }
}

/// The objects a handle holds. All empty only while the handle waits in its loop's free
/// list (see `Handle::empty_for_reuse`); a cancelled handle has no callback or arguments.
#[derive(Default)]
pub struct Slots {
    callback: Option<Py<PyAny>>,
    args: Option<Args>,
    context: Option<Py<PyAny>>,
    /// `context` is the handle's own copy (see `own_context`), not the caller's.
    own_context: bool,
    loop_: Option<Py<LoopCore>>,
    source_traceback: Option<Py<PyAny>>,
}

impl Slots {
    /// What a handle for `callback(*args)` holds; `context=None` copies the current
    /// context. `trace_depth`: in debug mode, how many caller frames to record.
    #[inline(always)]
    pub fn new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Args,
        context: Option<Py<PyAny>>,
        loop_: Py<LoopCore>,
        trace_depth: Option<u32>,
    ) -> PyResult<Slots> {
        let source_traceback = match trace_depth {
            Some(depth) => Some(helpers::get(py)?.extract_stack.call1(py, (depth,))?),
            None => None,
        };
        // Last: nothing may fail once the handle's own context exists (see `own_context`).
        let (context, own) = match context {
            Some(c) if !c.is_none(py) => (c, false),
            _ => (own_context(py)?, true),
        };
        Ok(Slots {
            callback: Some(callback),
            args: Some(args),
            context: Some(context),
            own_context: own,
            loop_: Some(loop_),
            source_traceback,
        })
    }

    /// Drop everything now, with the GIL held (as any drop of `Slots`: see its `Drop`).
    pub fn release(self, _py: Python<'_>) {
        drop(self);
    }

    /// Whether it holds nothing (a handle in its loop's free list).
    fn is_empty(&self) -> bool {
        self.callback.is_none()
            && self.args.is_none()
            && self.context.is_none()
            && self.loop_.is_none()
            && self.source_traceback.is_none()
    }
}

impl Drop for Slots {
    /// Slots live in handles, Python objects, and are dropped with the GIL held (by the
    /// handle's `tp_dealloc`, or by the loop's own code): decref at once, without PyO3's
    /// check of whether this thread holds the GIL (a thread-local look-up per object).
    fn drop(&mut self) {
        fn now<T>(py: Python<'_>, slot: &mut Option<Py<T>>) {
            if let Some(obj) = slot.take() {
                drop(obj.into_bound(py));
            }
        }
        // SAFETY: see above.
        let py = unsafe { Python::assume_attached() };
        now(py, &mut self.callback);
        if let Some(args) = self.args.take() {
            args.release(py);
        }
        if let Some(context) = self.context.take() {
            drop_context(py, context);
        }
        now(py, &mut self.loop_);
        now(py, &mut self.source_traceback);
    }
}

/// Whether the loop may empty `handle` and reuse it: an object of exactly type `ty` (a
/// plain `Handle` or `TimerHandle`, no subclass) that only the caller's reference keeps
/// alive and that no weak reference points to.
pub fn reusable(handle: &Bound<'_, Handle>, ty: *mut ffi::PyTypeObject) -> bool {
    let p = handle.as_ptr();
    unsafe {
        let tp = ffi::Py_TYPE(p);
        if tp != ty || ffi::Py_REFCNT(p) != 1 {
            return false;
        }
        let offset = (*tp).tp_weaklistoffset;
        offset > 0 && (*p.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>()).is_null()
    }
}

#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct Handle {
    /// One cell for all of them: one borrow check to fill, run or empty a handle.
    slots: GilCell<Slots>,
    cancelled: AtomicBool,
    repr: GilCell<Option<String>>,
    /// When it was queued to run (f64 bits), for the sampled ready-queue delay; 0: not
    /// sampled.
    queued_at: AtomicU64,
}

impl Handle {
    /// What the handle refers to, for the collector. A hidden context that only this
    /// handle holds (see `own_context`) is in none of the collector's lists, so what it
    /// refers to is visited here, as the handle's own references.
    fn visit_slots(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Skipped while borrowed.
        let Some(slots) = self.slots.peek() else {
            return Ok(());
        };
        visit_slot(visit, &slots.callback)?;
        if let Some(args) = &slots.args {
            args.visit(visit)?;
        }
        visit_slot(visit, &slots.source_traceback)?;
        match &slots.context {
            Some(context) if held_hidden(context.as_ptr()) => visit_inside(visit, context)?,
            context => visit_slot(visit, context)?,
        }
        visit_slot(visit, &slots.loop_)
    }

    /// A handle holding `slots` (see `Slots::new`).
    pub fn with_slots(slots: Slots) -> Handle {
        Handle {
            slots: GilCell::new(slots),
            cancelled: AtomicBool::new(false),
            repr: GilCell::new(None),
            queued_at: AtomicU64::new(0),
        }
    }

    /// Give a handle emptied by `empty_for_reuse` new `slots` to run.
    #[inline(always)]
    pub fn refill(&self, _py: Python<'_>, slots: Slots) -> PyResult<()> {
        let mut held = self.slots.try_mut()?;
        // It holds nothing (emptied by `empty_for_reuse`, then out of everyone's reach in
        // the loop's free list), so there is nothing to drop or even to look at.
        debug_assert!(held.is_empty());
        // SAFETY: writes over a valid `Slots` that owns nothing.
        unsafe { std::ptr::write(&mut *held, slots) };
        drop(held);
        self.cancelled.store(false, Ordering::Relaxed);
        self.queued_at.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Empty a handle that ran and that nothing but the loop can reach, so the loop can
    /// reuse it: what it held is dropped once its state is no longer borrowed (a
    /// `__del__` may re-enter the loop). False (and nothing done) if its state is busy.
    #[inline(always)]
    pub fn empty_for_reuse(&self, py: Python<'_>) -> bool {
        let Ok(mut slots) = self.slots.try_mut() else {
            return false;
        };
        // Slot by slot rather than `mem::take` and `Slots`'s `Drop` (the same drops): that
        // costs about 27 more instructions per callback (callgrind, call_soon micro).
        let callback = slots.callback.take();
        let args = slots.args.take();
        let context = slots.context.take();
        let loop_ = slots.loop_.take();
        let source_traceback = slots.source_traceback.take();
        drop(slots);
        // Only `cancel` keeps a repr (in debug mode).
        if self.is_cancelled() {
            if let Ok(mut repr) = self.repr.try_mut() {
                *repr = None;
            }
        }
        // Dropped as `Bound`s: no check of who holds the GIL (see `Slots`'s `Drop`).
        if let Some(callback) = callback {
            drop(callback.into_bound(py));
        }
        if let Some(args) = args {
            args.release(py);
        }
        if let Some(context) = context {
            drop_context(py, context);
        }
        if let Some(loop_) = loop_ {
            drop(loop_.into_bound(py));
        }
        if let Some(trace) = source_traceback {
            drop(trace.into_bound(py));
        }
        true
    }

    /// The loop this handle belongs to.
    fn loop_of<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        match self.slots.try_ref()?.loop_.as_ref() {
            Some(l) => Ok(l.bind(py).clone()),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "oxloop internal error: handle has no loop",
            )),
        }
    }

    /// Whether this handle's loop runs on the calling thread (see `event_loop::guarded`).
    fn loop_runs_here(&self) -> bool {
        match self.slots.try_ref() {
            Ok(s) => s.loop_.as_ref().is_some_and(|l| l.get().runs_here()),
            Err(_) => false,
        }
    }

    fn loop_debug(&self) -> bool {
        match self.slots.try_ref() {
            Ok(s) => s.loop_.as_ref().is_some_and(|l| l.get().debug()),
            Err(_) => false,
        }
    }

    fn source_traceback(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.slots.try_ref()?.source_traceback.as_ref() {
            Some(t) => t.clone_ref(py),
            None => py.None(),
        })
    }

    /// The context, handed out: tracked from now on (see `own_context`).
    fn context_of(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.slots.try_ref()?.context.as_ref() {
            Some(c) => {
                track(c.as_ptr());
                c.clone_ref(py)
            }
            None => py.None(),
        })
    }

    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_queued_at(&self, now: f64) {
        self.queued_at.store(now.to_bits(), Ordering::Relaxed);
    }

    /// The sampled queue time, cleared (reader handles are queued again and again).
    #[inline]
    pub fn take_queued_at(&self) -> f64 {
        match self.queued_at.load(Ordering::Relaxed) {
            0 => 0.0,
            bits => {
                self.queued_at.store(0, Ordering::Relaxed);
                f64::from_bits(bits)
            }
        }
    }

    /// Mark cancelled and drop the callback and its arguments (as stock does).
    pub fn cancel_base(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let h = slf.get();
        if h.cancelled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if h.loop_debug() {
            // Keep a repr so that debug messages can still name the callback.
            let text = Handle::repr_text(slf, false)?;
            *h.repr.try_mut()? = Some(text);
        }
        let (cb, args) = {
            let mut slots = h.slots.try_mut()?;
            (slots.callback.take(), slots.args.take())
        };
        drop((cb, args)); // after the borrow ends: a __del__ may re-enter
        Ok(())
    }

    /// Run the callback in its context. Only `SystemExit`/`KeyboardInterrupt` come back
    /// as `Err`; any other exception goes to the loop's exception handler.
    #[inline(always)]
    pub fn run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let h = slf.get();
        // The callback may cancel its own handle, which drops the callback and its
        // arguments, hence the clones (dropped as `Bound`s: no check of who holds the
        // GIL); the context is only borrowed: `PyContext_Enter` holds a reference to it
        // until `PyContext_Exit`.
        let (cb, args, ctx) = {
            let slots = h.slots.try_ref()?;
            match (&slots.callback, &slots.args, &slots.context) {
                (Some(c), Some(a), Some(x)) => (c.bind(py).clone(), a.clone_ref(py), x.as_ptr()),
                _ => return Ok(()), // cancelled meanwhile (or emptied: nothing to run)
            }
        };
        unsafe {
            if ffi::PyContext_Enter(ctx) == 0 {
                let result = args.call(py, cb.as_ptr());
                ffi::PyContext_Exit(ctx);
                if !result.is_null() {
                    ffi::Py_DECREF(result);
                    args.release(py);
                    return Ok(());
                }
            }
        }
        Handle::run_failed(slf, cb, args)
    }

    /// `run`'s callback (or entering its context) failed: report the exception set.
    #[cold]
    #[inline(never)]
    fn run_failed(slf: &Bound<'_, Handle>, cb: Bound<'_, PyAny>, args: Args) -> PyResult<()> {
        let py = slf.py();
        let err = PyErr::fetch(py);
        let outcome = Handle::report(slf, &cb, &args, err);
        args.release(py);
        outcome
    }

    fn report(
        slf: &Bound<'_, Handle>,
        cb: &Bound<'_, PyAny>,
        args: &Args,
        err: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        if errors::must_propagate(py, &err) {
            return Err(err);
        }
        let args = args.tuple(py)?;
        let debug = slf.get().loop_debug();
        let source = helpers::get(py)?
            .format_callback_source
            .call1(py, (cb, args, debug))?;
        let context = PyDict::new(py);
        context.set_item("message", format!("Exception in callback {source}"))?;
        context.set_item("exception", err.value(py))?;
        context.set_item("handle", slf)?;
        let tb = slf.get().source_traceback(py)?;
        if !tb.is_none(py) {
            context.set_item("source_traceback", tb)?;
        }
        let lp = slf.get().loop_of(py)?;
        lp.call_method1("call_exception_handler", (context,))?;
        Ok(())
    }

    /// The stock repr: `<Handle [cancelled] callback(args) at file:line [created at ...]>`.
    fn repr_text(slf: &Bound<'_, Handle>, use_cache: bool) -> PyResult<String> {
        let py = slf.py();
        let h = slf.get();
        if use_cache {
            if let Some(r) = h.repr.try_ref()?.as_ref() {
                return Ok(r.clone());
            }
        }
        let class_name = slf.get_type().name()?.to_string();
        let mut info = vec![class_name];
        if h.is_cancelled() {
            info.push("cancelled".to_string());
        }
        if let Ok(timer) = slf.cast::<TimerHandle>() {
            let when = PyFloat::new(py, timer.get().when_value())
                .repr()?
                .to_string();
            let pos = if h.is_cancelled() { 2 } else { 1 };
            info.insert(pos, format!("when={when}"));
        }
        let cb_args = {
            let mut slots = h.slots.try_mut()?;
            let args = match slots.args.as_mut() {
                Some(a) => Some(a.as_tuple(py)?),
                None => None,
            };
            slots.callback.as_ref().map(|c| (c.clone_ref(py), args))
        };
        if let Some((cb, args)) = cb_args {
            let args: Py<PyAny> = match args {
                Some(a) => a.into_any().unbind(),
                None => py.None(),
            };
            let debug = h.loop_debug();
            let source = helpers::get(py)?
                .format_callback_source
                .call1(py, (cb, args, debug))?;
            info.push(source.bind(py).str()?.to_string());
        }
        let tb = h.source_traceback(py)?;
        if !tb.is_none(py) {
            let tb = tb.bind(py);
            if tb.len()? > 0 {
                let frame = tb.get_item(-1)?;
                let file = frame.get_item(0)?.str()?.to_string();
                let line = frame.get_item(1)?.str()?.to_string();
                info.push(format!("created at {file}:{line}"));
            }
        }
        Ok(format!("<{}>", info.join(" ")))
    }
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::cancel_base(slf)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.context_of(py)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::run(slf)
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.slots.try_ref()?.callback.as_ref() {
            Some(c) => c.clone_ref(py),
            None => py.None(),
        })
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.slots.try_mut()?.args.as_mut() {
            Some(a) => a.as_tuple(py)?.into_any().unbind(),
            None => py.None(),
        })
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.context_of(py)
    }

    #[getter]
    fn _loop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        self.loop_of(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.source_traceback(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Handle::repr_text(slf, true)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.visit_slots(&visit)
    }

    fn __clear__(&self) {
        let taken = self
            .slots
            .try_mut()
            .ok()
            .map(|mut s| (s.callback.take(), s.args.take()));
        drop(taken);
    }
}

/// A handle scheduled at an absolute loop time.
#[pyclass(module = "oxloop._oxloop", extends = Handle, frozen)]
pub struct TimerHandle {
    /// The deadline (f64 bits): set once per use (a reused timer gets a new one).
    when: AtomicU64,
    scheduled: AtomicBool,
}

impl TimerHandle {
    pub fn new(when: f64) -> TimerHandle {
        TimerHandle {
            when: AtomicU64::new(when.to_bits()),
            scheduled: AtomicBool::new(false),
        }
    }

    #[inline]
    pub fn when_value(&self) -> f64 {
        f64::from_bits(self.when.load(Ordering::Relaxed))
    }

    /// Give a timer emptied by `Handle::empty_for_reuse` new slots and a new deadline.
    pub fn refill(slf: &Bound<'_, TimerHandle>, slots: Slots, when: f64) -> PyResult<()> {
        slf.as_super().get().refill(slf.py(), slots)?;
        let timer = slf.get();
        timer.when.store(when.to_bits(), Ordering::Relaxed);
        timer.scheduled.store(false, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    pub fn set_scheduled(&self, value: bool) {
        self.scheduled.store(value, Ordering::Relaxed);
    }
}

#[pymethods]
impl TimerHandle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let base = slf.as_super();
        if !base.get().is_cancelled() && slf.get().scheduled.load(Ordering::Relaxed) {
            base.get().loop_of(slf.py())?.get().timer_cancelled()?;
        }
        Handle::cancel_base(base)
    }

    fn when(&self) -> f64 {
        self.when_value()
    }

    #[getter]
    fn _when(&self) -> f64 {
        self.when_value()
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    fn __hash__(&self) -> u64 {
        // Same as hash(float): equal whens hash equal.
        self.when_value().to_bits()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.get().when_value(), other.get().when_value());
        let equal = || -> PyResult<bool> {
            if a != b {
                return Ok(false);
            }
            let (x, y) = (slf.as_super(), other.as_super());
            Ok(x.getattr("_callback")?.eq(y.getattr("_callback")?)?
                && x.getattr("_args")?.eq(y.getattr("_args")?)?
                && x.get().is_cancelled() == y.get().is_cancelled())
        };
        let result = match op {
            CompareOp::Lt => a < b,
            CompareOp::Gt => a > b,
            CompareOp::Le => a < b || equal()?,
            CompareOp::Ge => a > b || equal()?,
            CompareOp::Eq => equal()?,
            CompareOp::Ne => !equal()?,
        };
        Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
    }
}

/// Replace `Handle.cancel` and `TimerHandle.cancel` by `METH_NOARGS` entries that skip
/// PyO3's bookkeeping while the handle's loop runs on the calling thread (see
/// `event_loop::guarded`); otherwise inside `Python::attach`, which counts the thread as
/// attached for PyO3 (a `Py` dropped inside is released at once).
pub fn install_fast_paths(py: Python<'_>) -> PyResult<()> {
    install_cancel(&py.get_type::<Handle>(), cancel_fast::<Handle>)?;
    install_cancel(&py.get_type::<TimerHandle>(), cancel_fast::<TimerHandle>)
}

fn install_cancel(ty: &Bound<'_, pyo3::types::PyType>, entry: ffi::PyCFunction) -> PyResult<()> {
    crate::event_loop::install_method(
        ty,
        ffi::PyMethodDef {
            ml_name: c"cancel".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: entry },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"cancel($self)\n--\n\n".as_ptr(),
        },
    )
}

/// A handle type's `cancel`.
trait Cancel: PyClass {
    fn cancel_it(slf: &Bound<'_, Self>) -> PyResult<()>;
    /// Whether the handle's loop runs on the calling thread.
    fn loop_runs_here(slf: &Bound<'_, Self>) -> bool;
}

impl Cancel for Handle {
    fn cancel_it(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::cancel_base(slf)
    }
    fn loop_runs_here(slf: &Bound<'_, Self>) -> bool {
        slf.get().loop_runs_here()
    }
}

impl Cancel for TimerHandle {
    fn cancel_it(slf: &Bound<'_, Self>) -> PyResult<()> {
        TimerHandle::cancel(slf)
    }
    fn loop_runs_here(slf: &Bound<'_, Self>) -> bool {
        slf.as_super().get().loop_runs_here()
    }
}

/// `cancel()` of a `T`: by `guarded` when the handle's loop runs here, else inside
/// `Python::attach`.
unsafe extern "C" fn cancel_fast<T: Cancel>(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    /// # Safety
    /// `slf` is a `T` (the method descriptor checked it) and the GIL is held.
    unsafe fn body<T: Cancel>(
        py: Python<'_>,
        slf: *mut ffi::PyObject,
    ) -> PyResult<*mut ffi::PyObject> {
        let handle = unsafe { crate::event_loop::bound_ref(py, &slf).cast_unchecked::<T>() };
        T::cancel_it(handle)?;
        Ok(unsafe { ffi::Py_NewRef(ffi::Py_None()) })
    }
    unsafe {
        let py = Python::assume_attached();
        let handle = crate::event_loop::bound_ref(py, &slf).cast_unchecked::<T>();
        if T::loop_runs_here(handle) {
            crate::event_loop::guarded(py, || body::<T>(py, slf))
        } else {
            let _ = args;
            Python::attach(|py| crate::event_loop::guarded(py, || body::<T>(py, slf)))
        }
    }
}
