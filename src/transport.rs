//! What every transport shares: the read buffer, the link to its loop, reports to the
//! loop's exception handler, and write flow control (the water marks and
//! `pause_writing`/`resume_writing`), as the stock transports do.

use std::io;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{intern, IntoPyObjectExt};

use crate::cell::GilCell;
use crate::errors::must_propagate;
use crate::event_loop::LoopCore;

/// Largest single read, as the stock transports (`max_size`).
pub const MAX_READ: usize = 256 * 1024;
/// Writes after the connection was lost that pass silently before each one logs.
pub const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;
/// The stock high water mark; the low one is a quarter of the high one.
pub const DEFAULT_HIGH: usize = 64 * 1024;

/// One read buffer for every transport of the process: what is read is copied out into
/// `bytes` before any Python code runs, and only the thread holding the GIL reads.
static READ_BUF: GilCell<Vec<u8>> = GilCell::new(Vec::new());

/// Where the read buffer starts: on a page boundary. The kernel copies received data
/// into it with `rep movsb`, which runs at a fraction of its speed on some CPUs (seen:
/// AMD EPYC) when the destination is not cache-line aligned, and a 256 KiB `Vec` from
/// malloc is at whatever offset the allocator chose (measured: 100 KiB echo costing 2.5x
/// the server CPU, nearly all of it in the kernel's copy, from one build to the next).
const READ_ALIGN: usize = 4096;

/// Run `f` over the read buffer (`MAX_READ` bytes, page-aligned).
pub fn with_read_buf<T>(f: impl FnOnce(&mut [u8]) -> T) -> PyResult<T> {
    let mut buf = READ_BUF.try_mut()?;
    if buf.len() < MAX_READ + READ_ALIGN {
        buf.resize(MAX_READ + READ_ALIGN, 0);
    }
    let start = buf.as_ptr().align_offset(READ_ALIGN);
    Ok(f(&mut buf[start..start + MAX_READ]))
}

/// A `bytes` that the last `data_received` left unreferenced: the next read of the same
/// length refills it instead of allocating one more (a malloc and a free per read), and a
/// large one is what the next read goes straight into (`read_bytes`).
static SPARE: GilCell<Option<Py<PyBytes>>> = GilCell::new(None);

/// The smallest spare a read goes straight into; smaller reads are copied out of the
/// read buffer (measured, 10 KiB echo: 12,979 instructions per request copied, 2,811
/// read straight in).
const DIRECT_MIN: usize = 4 * 1024;

/// Whether the kernel copies into a destination at `p` at full speed. On this AMD EPYC
/// VM its `rep movsb` copy ran at a third of its speed into a destination 8 to 24 bytes
/// past a 64-byte boundary (measured: 100 KiB echo at 2.4x the server CPU; 0 and 32 to
/// 56 bytes past ran at full speed); a `bytes`' data starts 0, 16, 32 or 48 bytes past one,
/// as malloc placed its block.
fn fast_destination(p: *const u8) -> bool {
    !matches!(p as usize % 64, 1..=31)
}

/// Forget a reused `bytes`' cached hash, as for a new object.
///
/// # Safety
/// `p` is a `bytes` that no one else holds.
unsafe fn reset_hash(p: *mut ffi::PyObject) {
    #[allow(deprecated)]
    {
        (*p.cast::<ffi::PyBytesObject>()).ob_shash = -1;
    }
}

/// Large spares that malloc placed where the kernel copies slowly, held (so that the next
/// allocations land elsewhere) until a well-placed one comes back from `data_received`.
static ASIDE: GilCell<Vec<Py<PyBytes>>> = GilCell::new(Vec::new());
/// How many spares may be set aside in one search; when they all were, searching stops
/// for good (so that a heap that keeps placing them badly costs no more allocations).
const MAX_ASIDE: usize = 3;
static GAVE_UP: GilCell<bool> = GilCell::new(false);

/// The spare `b` fits the next read: if reads cannot go straight into it, set it aside
/// (true) so that this read allocates anew, while looking for a well-placed one.
#[inline(never)]
fn set_aside(b: &mut Option<Py<PyBytes>>) -> bool {
    if b.as_ref()
        .is_none_or(|b| unsafe { direct_target(b.as_ptr()) })
    {
        return false;
    }
    let Ok(mut gave_up) = GAVE_UP.try_mut() else {
        return false;
    };
    let Ok(mut aside) = ASIDE.try_mut() else {
        return false;
    };
    if *gave_up {
        return false;
    }
    if aside.len() >= MAX_ASIDE {
        *gave_up = true;
        let all = std::mem::take(&mut *aside);
        drop(aside);
        drop(all);
        return false;
    }
    aside.extend(b.take());
    true
}

/// `bytes(src)`, reusing the spare when it has the length and nobody else holds it.
#[inline(always)]
pub fn new_bytes<'py>(py: Python<'py>, src: &[u8]) -> Bound<'py, PyBytes> {
    if let Ok(mut spare) = SPARE.try_mut() {
        let fits = spare.as_ref().is_some_and(|b| {
            let p = b.as_ptr();
            unsafe { ffi::Py_SIZE(p) as usize == src.len() && ffi::Py_REFCNT(p) == 1 }
        });
        if fits && src.len() >= DIRECT_MIN && set_aside(&mut spare) {
            return PyBytes::new(py, src);
        }
        if let Some(b) = spare.take_if(|_| fits) {
            let p = b.as_ptr();
            // SAFETY: we hold the only reference, so no one sees the contents change.
            unsafe {
                reset_hash(p);
                let dst = ffi::PyBytes_AS_STRING(p) as *mut u8;
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
            }
            return b.into_bound(py);
        }
    }
    PyBytes::new(py, src)
}

/// What one read brought: its length and the `bytes` holding it.
pub type Read<'py> = (usize, Bound<'py, PyBytes>);

/// One `read` of up to `MAX_READ` bytes from `fd` into a new `bytes` (None at the end of
/// the stream). A large spare is read into directly, with the rest of the room in the
/// read buffer (one `readv`), and is what is returned when the read fills it exactly: no
/// copy of the data in user space. Otherwise what was read is copied into a new `bytes`
/// (or the spare of its length).
pub fn read_bytes(py: Python<'_>, fd: RawFd) -> PyResult<io::Result<Option<Read<'_>>>> {
    let target = SPARE.try_mut().ok().and_then(|mut spare| {
        spare.take_if(|b| {
            let p = b.as_ptr();
            // SAFETY: `p` is a live `bytes`.
            unsafe { direct_target(p) && ffi::Py_REFCNT(p) == 1 }
        })
    });
    let Some(target) = target else {
        return with_read_buf(|buf| {
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            match n {
                n if n < 0 => Err(io::Error::last_os_error()),
                0 => Ok(None),
                n => Ok(Some((n as usize, new_bytes(py, &buf[..n as usize])))),
            }
        });
    };
    read_into_spare(py, fd, target)
}

/// `read_bytes` into `target`, the spare, taken: it is returned if the read filled it
/// exactly, and put back otherwise.
#[inline(never)]
fn read_into_spare(
    py: Python<'_>,
    fd: RawFd,
    target: Py<PyBytes>,
) -> PyResult<io::Result<Option<Read<'_>>>> {
    let p = target.as_ptr();
    // SAFETY: the spare is ours alone (refcount 1) until it is returned or put back.
    let (dst, len) = unsafe {
        (
            ffi::PyBytes_AS_STRING(p) as *mut u8,
            ffi::Py_SIZE(p) as usize,
        )
    };
    let got = with_read_buf(|buf| {
        let iov = [
            libc::iovec {
                iov_base: dst as *mut libc::c_void,
                iov_len: len,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_READ - len,
            },
        ];
        let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Ok(None),
            n if n as usize == len => Ok(Some(None)),
            n => {
                // SAFETY: `dst` holds `len` bytes read (or `n` when fewer), the read
                // buffer the rest.
                let n = n as usize;
                let head = unsafe { std::slice::from_raw_parts(dst, n.min(len)) };
                let tail = &buf[..n.saturating_sub(len)];
                Ok(Some(Some((n, concat_bytes(py, head, tail)))))
            }
        }
    });
    let delivered = match got {
        Ok(Ok(Some(None))) => {
            // SAFETY: still only ours; it now holds what was read.
            unsafe { reset_hash(p) };
            return Ok(Ok(Some((len, target.into_bound(py)))));
        }
        Ok(Ok(Some(Some(copy)))) => Ok(Ok(Some(copy))),
        Ok(Ok(None)) => Ok(Ok(None)),
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    };
    // Not handed out: it stays the spare.
    if let Ok(mut spare) = SPARE.try_mut() {
        if spare.is_none() {
            *spare = Some(target);
        }
    }
    delivered
}

/// A new `bytes` of `head` then `tail`.
fn concat_bytes<'py>(py: Python<'py>, head: &[u8], tail: &[u8]) -> Bound<'py, PyBytes> {
    if tail.is_empty() {
        return new_bytes(py, head);
    }
    let len = head.len() + tail.len();
    PyBytes::new_with(py, len, |dst| {
        dst[..head.len()].copy_from_slice(head);
        dst[head.len()..].copy_from_slice(tail);
        Ok(())
    })
    .unwrap_or_else(|_| PyBytes::new(py, &[head, tail].concat()))
}

/// Whether the kernel may read straight into `b` (`read_bytes`): large, well placed.
///
/// # Safety
/// `b` is a `bytes`.
unsafe fn direct_target(b: *mut ffi::PyObject) -> bool {
    (DIRECT_MIN..=MAX_READ).contains(&(ffi::Py_SIZE(b) as usize))
        && fast_destination(ffi::PyBytes_AS_STRING(b) as *const u8)
}

/// A well-placed spare came back: let the ones set aside go.
#[inline(never)]
fn found_placed() {
    let aside = ASIDE.try_mut().map(|mut a| std::mem::take(&mut *a));
    drop(aside);
}

/// `data` was delivered: keep it as the spare if no one else holds it.
#[inline(always)]
pub fn recycle_bytes(data: Bound<'_, PyBytes>) {
    let p = data.as_ptr();
    if unsafe { ffi::Py_REFCNT(p) } == 1 && unsafe { ffi::Py_SIZE(p) } > 1 {
        if unsafe { direct_target(p) } {
            found_placed();
        }
        if let Ok(mut spare) = SPARE.try_mut() {
            let old = spare.replace(data.unbind());
            drop(spare);
            drop(old);
        }
    }
}

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// asyncio's logger, which the stock transports log through.
pub fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio.log")?.getattr("logger")?.unbind())
        })
        .map(|l| l.bind(py))
}

/// The loop core of a transport's loop (None once the transport has finished).
#[inline]
pub fn loop_core<'py>(
    py: Python<'py>,
    lp: &Option<Py<LoopCore>>,
) -> PyResult<Bound<'py, LoopCore>> {
    match lp {
        Some(l) => Ok(l.bind(py).clone()),
        None => Err(PyRuntimeError::new_err("the transport is closed")),
    }
}

/// The loop object, for Python (None once the transport has finished).
pub fn loop_object(py: Python<'_>, lp: &Option<Py<LoopCore>>) -> Option<Py<PyAny>> {
    lp.as_ref().map(|l| l.clone_ref(py).into_any())
}

/// `loop.call_exception_handler({message, exception, transport, protocol})`.
pub fn report(
    transport: &Bound<'_, PyAny>,
    lp: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    err: &PyErr,
    message: &str,
) -> PyResult<()> {
    let py = transport.py();
    let Some(lp) = lp else {
        return Ok(());
    };
    let ctx = PyDict::new(py);
    ctx.set_item("message", message)?;
    ctx.set_item("exception", err.value(py))?;
    ctx.set_item("transport", transport)?;
    ctx.set_item("protocol", protocol)?;
    lp.bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
    Ok(())
}

/// In debug mode, the stock `logger.debug("%r: %s", transport, message, exc_info=err)`
/// of a fatal OSError.
pub fn log_fatal_os_error(
    transport: &Bound<'_, PyAny>,
    err: &PyErr,
    message: &str,
) -> PyResult<()> {
    let py = transport.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("exc_info", err.value(py))?;
    logger(py)?.call_method("debug", ("%r: %s", transport, message), Some(&kwargs))?;
    Ok(())
}

/// The water marks as given to `set_write_buffer_limits` (high, low), when they are not
/// plain ints.
pub type GivenLimits = (Py<PyAny>, Py<PyAny>);

/// A transport's loop and protocol, taken out for a call made without its state borrowed.
pub type Links = (Option<Py<PyAny>>, Option<Py<PyAny>>);

/// The write water marks and whether the protocol was told to pause.
pub struct FlowControl {
    /// The marks as integers the buffered size compares against as it does against the
    /// given ones (`size > high`, `size <= low`).
    pub high: usize,
    pub low: usize,
    pub paused: bool,
    /// The marks as given, when they are not plain ints (floats, bools, ints past
    /// `usize`): `get_write_buffer_limits` hands them back as stock does.
    pub given: Option<Box<GivenLimits>>,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high: DEFAULT_HIGH,
            low: DEFAULT_HIGH / 4,
            paused: false,
            given: None,
        }
    }
}

/// Water marks checked as stock's `_set_write_buffer_limits` checks them: the objects
/// (high, low), after the defaults and the ValueError.
pub struct Limits<'py> {
    pub high: Bound<'py, PyAny>,
    pub low: Bound<'py, PyAny>,
}

impl<'py> Limits<'py> {
    /// Stock's defaults from what was given (`default_high` when neither was) and check.
    pub fn parse(
        py: Python<'py>,
        high: Option<&Bound<'py, PyAny>>,
        low: Option<&Bound<'py, PyAny>>,
        default_high: usize,
    ) -> PyResult<Self> {
        let high = high.filter(|h| !h.is_none());
        let low = low.filter(|l| !l.is_none());
        let high: Bound<'py, PyAny> = match (high, low) {
            (Some(h), _) => h.clone(),
            (None, None) => default_high.into_bound_py_any(py)?,
            (None, Some(l)) => l.mul(4)?,
        };
        let low: Bound<'py, PyAny> = match low {
            Some(l) => l.clone(),
            None => high.floor_div(4)?,
        };
        let zero = 0i64.into_bound_py_any(py)?;
        if !(high.ge(&low)? && low.ge(&zero)?) {
            return Err(PyValueError::new_err(format!(
                "high ({}) must be >= low ({}) must be >= 0",
                high.repr()?,
                low.repr()?
            )));
        }
        Ok(Limits { high, low })
    }

    /// Whether both are exact ints that fit an `i64`: no need to keep the objects.
    pub fn plain(&self) -> bool {
        let fits = |v: &Bound<'py, PyAny>| {
            v.is_exact_instance_of::<pyo3::types::PyInt>() && v.extract::<i64>().is_ok()
        };
        fits(&self.high) && fits(&self.low)
    }

    pub fn given(&self) -> Option<Box<GivenLimits>> {
        (!self.plain()).then(|| Box::new((self.high.clone().unbind(), self.low.clone().unbind())))
    }
}

/// The integer a size (a non-negative int) compares against as against `v` (a checked
/// mark, >= 0): for `size > v` and `size <= v` its floor, for `size >= v` (`ceil`) its
/// ceiling; anything from `usize::MAX` up is `usize::MAX`, which no size reaches.
pub fn mark(v: &Bound<'_, PyAny>, ceil: bool) -> PyResult<usize> {
    let py = v.py();
    if let Ok(n) = v.extract::<usize>() {
        return Ok(n);
    }
    if v.ge(usize::MAX)? {
        return Ok(usize::MAX);
    }
    let math = py.import("math")?;
    let f = math.getattr(if ceil { "ceil" } else { "floor" })?;
    f.call1((v,))?.extract()
}

/// The limits `(low, high)` as `get_write_buffer_limits` returns them.
pub fn limits_tuple(
    py: Python<'_>,
    high: usize,
    low: usize,
    given: &Option<Box<GivenLimits>>,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    Ok(match given {
        Some(g) => (g.1.clone_ref(py), g.0.clone_ref(py)),
        None => (low.into_py_any(py)?, high.into_py_any(py)?),
    })
}

/// What a change of the buffered size asks of the protocol.
pub enum FlowChange {
    None,
    Pause,
    Resume,
}

impl FlowControl {
    /// The buffer grew to `size`: past the high mark, pause (once).
    pub fn grown(&mut self, size: usize) -> FlowChange {
        if !self.paused && size > self.high {
            self.paused = true;
            FlowChange::Pause
        } else {
            FlowChange::None
        }
    }

    /// The buffer shrank to `size`: at or under the low mark, resume (once).
    pub fn shrunk(&mut self, size: usize) -> FlowChange {
        if self.paused && size <= self.low {
            self.paused = false;
            FlowChange::Resume
        } else {
            FlowChange::None
        }
    }

    /// `set_write_buffer_limits(high, low)`: the stock defaults and ValueError.
    pub fn set_limits(
        &mut self,
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let limits = Limits::parse(py, high, low, DEFAULT_HIGH)?;
        let old = self.apply(&limits)?;
        drop(old);
        Ok(())
    }

    /// Take checked limits; returns the objects they replace, to drop with no state
    /// borrowed.
    pub fn apply(&mut self, limits: &Limits<'_>) -> PyResult<Option<Box<GivenLimits>>> {
        let high = mark(&limits.high, false)?;
        let low = mark(&limits.low, false)?;
        self.high = high;
        self.low = low;
        Ok(std::mem::replace(&mut self.given, limits.given()))
    }

    /// `get_write_buffer_limits()`: `(low, high)`.
    pub fn limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        limits_tuple(py, self.high, self.low, &self.given)
    }
}

/// Tell the protocol to pause or resume writing; its failure is reported, not raised
/// (but SystemExit and KeyboardInterrupt).
pub fn notify_flow(
    transport: &Bound<'_, PyAny>,
    change: FlowChange,
    lp: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = transport.py();
    let (method, message) = match change {
        FlowChange::None => return Ok(()),
        FlowChange::Pause => (
            intern!(py, "pause_writing"),
            "protocol.pause_writing() failed",
        ),
        FlowChange::Resume => (
            intern!(py, "resume_writing"),
            "protocol.resume_writing() failed",
        ),
    };
    let Some(p) = protocol.as_ref() else {
        return Ok(());
    };
    match p.bind(py).call_method0(method) {
        Ok(_) => Ok(()),
        Err(e) if must_propagate(py, &e) => Err(e),
        Err(e) => report(transport, lp, protocol, &e, message),
    }
}
