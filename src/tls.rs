//! TLS over a stream transport: asyncio's SSL protocol/transport pair (the 3.11+
//! `sslproto` semantics) driving CPython's own `ssl` objects.
//!
//! `TlsProtocol` is the protocol of the underlying (plain) transport and `TlsTransport`
//! the transport the application protocol sees. The TLS work is done by the user's
//! `ssl.SSLContext` through the `ssl.SSLObject` it makes over two `ssl.MemoryBIO`s, so
//! certificates, callbacks and session reuse stay CPython's. What is ours is the state
//! machine (handshake, wrapped, flushing, shutdown), flow control both ways and the
//! moving of bytes between the BIOs, the transports and the application, with no Python
//! frame on the read and write paths of a wrapped connection.

use std::collections::VecDeque;

use pyo3::exceptions::{
    PyAssertionError, PyAttributeError, PyConnectionAbortedError, PyConnectionResetError,
    PyException, PyNotImplementedError, PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{intern, IntoPyObjectExt, PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::errors::must_propagate;
use crate::transport::{
    limits_tuple, logger, mark, new_bytes, recycle_bytes, report, Limits,
    LOG_THRESHOLD_FOR_CONNLOST_WRITES,
};

/// Largest read from the TLS object into the application, as stock (`max_size`).
const MAX_SIZE: usize = 256 * 1024;
/// From how many waiting encrypted bytes a read decrypts straight into a new `bytes`
/// rather than through the shared buffer and a copy.
const FRESH_MIN: usize = 4096;
/// The stock default water marks, in KiB (`constants.FLOW_CONTROL_HIGH_WATER_SSL_*`).
const HIGH_WATER_SSL_READ_KB: i64 = 256;
const HIGH_WATER_SSL_WRITE_KB: i64 = 512;

/// The `ssl` and `asyncio` classes the state machine tells errors apart by.
struct Classes {
    want_read: Py<PyAny>,
    syscall: Py<PyAny>,
    ssl_error: Py<PyAny>,
    cert_error: Py<PyAny>,
    cancelled: Py<PyAny>,
    buffered_protocol: Py<PyAny>,
    ssl_object: Py<PyAny>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let ssl = py.import("ssl")?;
        Ok(Classes {
            want_read: ssl.getattr("SSLWantReadError")?.unbind(),
            syscall: ssl.getattr("SSLSyscallError")?.unbind(),
            ssl_error: ssl.getattr("SSLError")?.unbind(),
            cert_error: ssl.getattr("CertificateError")?.unbind(),
            cancelled: py
                .import("asyncio.exceptions")?
                .getattr("CancelledError")?
                .unbind(),
            buffered_protocol: py
                .import("asyncio.protocols")?
                .getattr("BufferedProtocol")?
                .unbind(),
            ssl_object: ssl.getattr("SSLObject")?.unbind(),
        })
    })
}

/// `ssl.SSLWantReadError` or `ssl.SSLSyscallError` (stock `SSLAgainErrors`).
fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    let c = classes(py)?;
    Ok(err.is_instance(py, c.want_read.bind(py)) || err.is_instance(py, c.syscall.bind(py)))
}

fn is_ssl_error(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    Ok(err.is_instance(py, classes(py)?.ssl_error.bind(py)))
}

/// What `except Exception` catches.
fn is_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyException>(py)
}

/// A failed stock `assert`: an AssertionError, unless Python runs with -O (which
/// strips asserts).
fn check_assert(py: Python<'_>) -> PyResult<()> {
    let optimize: i64 = py
        .import("sys")?
        .getattr("flags")?
        .getattr("optimize")?
        .extract()?;
    if optimize > 0 {
        Ok(())
    } else {
        Err(PyAssertionError::new_err(()))
    }
}

/// The AttributeError stock raises when it reaches through an attribute set to None.
fn none_attr(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("'NoneType' object has no attribute '{name}'"))
}

/// A process-wide buffer exposed to Python as a memoryview: the underlying transport
/// reads into one (`get_buffer`), the TLS object decrypts into the other. Each is used
/// from start to end of one synchronous step with no Python code of ours in between, and
/// only by the thread holding the GIL.
struct SharedBuf {
    ptr: *mut u8,
    view: Py<PyAny>,
}

// SAFETY: the memory is leaked (lives for the process) and only touched with the GIL held.
unsafe impl Send for SharedBuf {}
unsafe impl Sync for SharedBuf {}

static IN_BUF: PyOnceLock<SharedBuf> = PyOnceLock::new();
static OUT_BUF: PyOnceLock<SharedBuf> = PyOnceLock::new();
/// Whether OUT_BUF is being read into (a TLS callback that runs Python code during a
/// read could start another read): the second one takes the stock path.
static OUT_BUSY: GilCell<bool> = GilCell::new(false);

fn shared_buf<'a>(py: Python<'_>, cell: &'a PyOnceLock<SharedBuf>) -> PyResult<&'a SharedBuf> {
    cell.get_or_try_init(py, || {
        // Page-aligned, as the transports' read buffer (the kernel copies into it).
        let layout = std::alloc::Layout::from_size_align(MAX_SIZE, 4096)
            .map_err(|_| PyRuntimeError::new_err("bad buffer layout"))?;
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        let view = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyMemoryView_FromMemory(
                    ptr as *mut std::os::raw::c_char,
                    MAX_SIZE as ffi::Py_ssize_t,
                    ffi::PyBUF_WRITE,
                ),
            )?
        };
        Ok(SharedBuf {
            ptr,
            view: view.unbind(),
        })
    })
}

/// `_PyBytes_Resize` of a `bytes` only we hold.
fn resize_bytes(obj: Bound<'_, PyAny>, size: usize) -> PyResult<Bound<'_, PyAny>> {
    let py = obj.py();
    let mut p = obj.into_ptr();
    // SAFETY: `p` is a bytes with a reference count of one, which we own; on failure
    // _PyBytes_Resize frees it and sets p to NULL.
    unsafe {
        if crate::capi::_PyBytes_Resize(&mut p, size as ffi::Py_ssize_t) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, p))
    }
}

static MAX_SIZE_INT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `MAX_SIZE` as a Python int, made once (it is past the small ints CPython keeps).
fn max_size_int(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    MAX_SIZE_INT
        .get_or_try_init(py, || MAX_SIZE.into_py_any(py))
        .map(|n| n.bind(py))
}

/// A read-only memoryview of the first `n` bytes of `buf`.
fn view_of<'py>(py: Python<'py>, buf: &SharedBuf, n: usize) -> PyResult<Bound<'py, PyAny>> {
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyMemoryView_FromMemory(
                buf.ptr as *mut std::os::raw::c_char,
                n as ffi::Py_ssize_t,
                ffi::PyBUF_READ,
            ),
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unwrapped,
    Handshake,
    Wrapped,
    Flushing,
    Shutdown,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Unwrapped => "SSLProtocolState.UNWRAPPED",
            State::Handshake => "SSLProtocolState.DO_HANDSHAKE",
            State::Wrapped => "SSLProtocolState.WRAPPED",
            State::Flushing => "SSLProtocolState.FLUSHING",
            State::Shutdown => "SSLProtocolState.SHUTDOWN",
        }
    }

    fn closed_for_writes(self) -> bool {
        matches!(self, State::Flushing | State::Shutdown | State::Unwrapped)
    }
}

/// The application protocol's side: INIT -connection_made-> CON_MADE [-eof-> EOF]
/// -connection_lost-> CON_LOST.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AppState {
    Init,
    ConMade,
    Eof,
    ConLost,
}

/// The `ssl._SSLSocket` under an exact `ssl.SSLObject`: its bound methods, called
/// without the Python wrapper (which only forwards to them).
struct Fast {
    read: Py<PyAny>,
    write: Py<PyAny>,
    pending: Py<PyAny>,
}

struct Tls {
    loop_: Py<PyAny>,
    app_protocol: Option<Py<PyAny>>,
    app_get_buffer: Option<Py<PyAny>>,
    app_buffer_updated: Option<Py<PyAny>>,
    app_is_buffer: bool,
    app_transport: Option<Py<TlsTransport>>,
    app_transport_created: bool,
    transport: Option<Py<PyAny>>,
    waiter: Option<Py<PyAny>>,
    extra: Py<PyDict>,
    sslcontext: Py<PyAny>,
    server_side: bool,
    server_hostname: Py<PyAny>,
    handshake_timeout: Py<PyAny>,
    shutdown_timeout: Py<PyAny>,
    handshake_start: Option<Py<PyAny>>,
    handshake_handle: Option<Py<PyAny>>,
    shutdown_handle: Option<Py<PyAny>>,
    incoming: Py<PyAny>,
    outgoing: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    sslobj: Py<PyAny>,
    fast: Option<Fast>,
    state: State,
    app_state: AppState,
    conn_lost: u32,
    backlog: VecDeque<Py<PyAny>>,
    write_buffer_size: i64,
    ssl_writing_paused: bool,
    app_reading_paused: bool,
    ssl_reading_paused: bool,
    eof_received: bool,
    app_writing_paused: bool,
    /// The read (incoming) and write (outgoing) water marks.
    inm: Marks,
    outm: Marks,
    /// Python 3.13's `_abort(exc)` (force-closes the transport) rather than 3.11/3.12's
    /// `_abort()` (aborts it).
    abort_with_exc: bool,
    /// Encrypted bytes `buffer_updated` fed in for the read it starts (0 otherwise).
    fed: usize,
    /// Whether the underlying transport is one of oxloop's stream transports, which
    /// call `get_buffer`, read and call `buffer_updated` in one synchronous step and so
    /// may share `IN_BUF`. Any other transport reads into `own_in`.
    shared_in: bool,
    /// This protocol's own read buffer (a memoryview of a `bytearray`), made on first use.
    own_in: Option<Py<PyAny>>,
}

/// Water marks as integers the sizes compare against as against the given ones (stock:
/// `size >= high`, `size <= low`), and the given ones when they are not plain ints.
struct Marks {
    high: i64,
    low: i64,
    given: Option<Box<(Py<PyAny>, Py<PyAny>)>>,
}

impl Marks {
    /// The stock default: `kb` KiB high, a quarter of it low.
    fn default_kb(kb: i64) -> Self {
        Marks {
            high: kb * 1024,
            low: kb * 256,
            given: None,
        }
    }

    /// The stock `add_flowcontrol_defaults(high, low, kb * 1024)` and its checks.
    fn parse(
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
        kb: i64,
    ) -> PyResult<Self> {
        let limits = Limits::parse(py, high, low, (kb * 1024) as usize)?;
        let clamp = |n: usize| n.min(i64::MAX as usize) as i64;
        Ok(Marks {
            high: clamp(mark(&limits.high, true)?),
            low: clamp(mark(&limits.low, false)?),
            given: limits.given(),
        })
    }

    /// `(low, high)` as the `get_*_buffer_limits` of stock return them.
    fn tuple(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        limits_tuple(py, self.high as usize, self.low as usize, &self.given)
    }
}

#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct TlsProtocol {
    st: GilCell<Tls>,
}

/// `Ok(v)` or, for an error `except Exception` catches, the error as a value.
enum Caught<T> {
    Ok(T),
    Err(PyErr),
}

fn catch<T>(py: Python<'_>, r: PyResult<T>) -> PyResult<Caught<T>> {
    match r {
        Ok(v) => Ok(Caught::Ok(v)),
        Err(e) if is_exception(py, &e) => Ok(Caught::Err(e)),
        Err(e) => Err(e),
    }
}

impl TlsProtocol {
    fn state(&self) -> PyResult<State> {
        Ok(self.st.try_ref()?.state)
    }

    fn set_state(&self, new: State) -> PyResult<()> {
        let mut st = self.st.try_mut()?;
        let old = st.state;
        let allowed = matches!(
            (old, new),
            (_, State::Unwrapped)
                | (State::Unwrapped, State::Handshake)
                | (State::Handshake, State::Wrapped)
                | (State::Wrapped, State::Flushing)
                | (State::Flushing, State::Shutdown)
        );
        if !allowed {
            return Err(PyRuntimeError::new_err(format!(
                "cannot switch state from {} to {}",
                old.name(),
                new.name()
            )));
        }
        st.state = new;
        Ok(())
    }

    fn loop_obj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.st.try_ref()?.loop_.bind(py).clone())
    }

    fn debug(&self, py: Python<'_>) -> PyResult<bool> {
        self.loop_obj(py)?
            .call_method0(intern!(py, "get_debug"))?
            .is_truthy()
    }

    fn transport<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self
            .st
            .try_ref()?
            .transport
            .as_ref()
            .map(|t| t.bind(py).clone()))
    }

    fn transport_or_err<'py>(&self, py: Python<'py>, attr: &str) -> PyResult<Bound<'py, PyAny>> {
        self.transport(py)?.ok_or_else(|| none_attr(attr))
    }

    fn sslobj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.st.try_ref()?.sslobj.bind(py).clone())
    }

    /// A method of the TLS object: the `_SSLSocket`'s own (fast path) or looked up on
    /// the user's `sslobject_class` (with no state borrowed).
    fn sslobj_method(
        &self,
        py: Python<'_>,
        fast: fn(&Fast) -> &Py<PyAny>,
        name: &Bound<'_, pyo3::types::PyString>,
    ) -> PyResult<Py<PyAny>> {
        let sslobj = {
            let st = self.st.try_ref()?;
            if let Some(f) = &st.fast {
                return Ok(fast(f).clone_ref(py));
            }
            st.sslobj.clone_ref(py)
        };
        sslobj.getattr(py, name)
    }

    fn call_soon(
        &self,
        py: Python<'_>,
        cb: &Bound<'_, PyAny>,
        args: Vec<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let mut all = vec![cb.clone().unbind()];
        all.extend(args);
        Ok(self
            .loop_obj(py)?
            .call_method1(intern!(py, "call_soon"), PyTuple::new(py, all)?)?
            .unbind())
    }

    fn log_debug(slf: &Bound<'_, Self>, fmt: &str, args: Vec<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let mut all: Vec<Py<PyAny>> = vec![fmt.into_py_any(py)?, slf.clone().into_any().unbind()];
        all.extend(args);
        logger(py)?.call_method1("debug", PyTuple::new(py, all)?)?;
        Ok(())
    }

    fn wakeup_waiter(&self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let waiter = match &self.st.try_ref()?.waiter {
            Some(w) => w.clone_ref(py),
            None => return Ok(()),
        };
        let w = waiter.bind(py);
        if !w.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            match exc {
                Some(e) => w.call_method1(intern!(py, "set_exception"), (e,))?,
                None => w.call_method1(intern!(py, "set_result"), (py.None(),))?,
            };
        }
        // Dropped once the state is no longer borrowed (a finalizer may run).
        let old = self.st.try_mut()?.waiter.take();
        drop(old);
        Ok(())
    }

    fn cancel_handle(&self, py: Python<'_>, shutdown: bool) -> PyResult<()> {
        let h = {
            let mut st = self.st.try_mut()?;
            if shutdown {
                st.shutdown_handle.take()
            } else {
                st.handshake_handle.take()
            }
        };
        if let Some(h) = h {
            h.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    fn set_app_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = protocol.py();
        let is_buffer = protocol.hasattr(intern!(py, "get_buffer"))?
            && protocol.is_instance(classes(py)?.buffered_protocol.bind(py))?;
        let (gb, bu) = if is_buffer {
            (
                Some(protocol.getattr(intern!(py, "get_buffer"))?.unbind()),
                Some(protocol.getattr(intern!(py, "buffer_updated"))?.unbind()),
            )
        } else {
            (None, None)
        };
        // The replaced objects are dropped after the borrow ends: their finalizers may
        // touch the transport.
        let old = {
            let mut st = self.st.try_mut()?;
            let old_protocol = st.app_protocol.replace(protocol.clone().unbind());
            st.app_is_buffer = is_buffer;
            if is_buffer {
                let g = std::mem::replace(&mut st.app_get_buffer, gb);
                let u = std::mem::replace(&mut st.app_buffer_updated, bu);
                (old_protocol, g, u)
            } else {
                (old_protocol, None, None)
            }
        };
        drop(old);
        Ok(())
    }

    fn get_app_transport(&self, py: Python<'_>) -> PyResult<Py<TlsTransport>> {
        let st = self.st.try_ref()?;
        match &st.app_transport {
            Some(t) => Ok(t.clone_ref(py)),
            None if st.app_transport_created => Err(PyRuntimeError::new_err(
                "Creating _SSLProtocolTransport twice",
            )),
            None => Err(PyRuntimeError::new_err("the TLS transport is not set")),
        }
    }

    fn mark_app_transport_closed(&self, py: Python<'_>) -> PyResult<()> {
        let t = self
            .st
            .try_ref()?
            .app_transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        if let Some(t) = t {
            t.get().tr.try_mut()?.closed = true;
        }
        Ok(())
    }

    // -- handshake

    fn start_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let start = if this.debug(py)? {
            Self::log_debug(slf, "%r starts SSL handshake", vec![])?;
            Some(
                this.loop_obj(py)?
                    .call_method0(intern!(py, "time"))?
                    .unbind(),
            )
        } else {
            None
        };
        let old = std::mem::replace(&mut this.st.try_mut()?.handshake_start, start);
        drop(old);
        this.set_state(State::Handshake)?;
        let timeout = this.st.try_ref()?.handshake_timeout.clone_ref(py);
        let cb = slf.getattr(intern!(py, "_check_handshake_timeout"))?;
        let h = this
            .loop_obj(py)?
            .call_method1(intern!(py, "call_later"), (timeout, cb))?;
        let old = this.st.try_mut()?.handshake_handle.replace(h.unbind());
        drop(old);
        Self::do_handshake(slf)
    }

    fn do_handshake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let sslobj = slf.get().sslobj(py)?;
        match sslobj.call_method0(intern!(py, "do_handshake")) {
            Ok(_) => Self::on_handshake_complete(slf, None),
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e)? => Self::on_handshake_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    fn on_handshake_complete(slf: &Bound<'_, Self>, exc: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.cancel_handle(py, false)?;
        let sslobj = this.sslobj(py)?;
        let checked = match exc {
            Some(e) => Err(e),
            None => this
                .set_state(State::Wrapped)
                .and_then(|_| sslobj.call_method0(intern!(py, "getpeercert"))),
        };
        let peercert = match catch(py, checked)? {
            Caught::Ok(p) => p,
            Caught::Err(e) => {
                this.set_state(State::Unwrapped)?;
                let msg = if e.is_instance(py, classes(py)?.cert_error.bind(py)) {
                    "SSL handshake failed on verifying the certificate"
                } else {
                    "SSL handshake failed"
                };
                let value = e.value(py).clone().into_any();
                Self::fatal_error(slf, e, msg)?;
                return this.wakeup_waiter(py, Some(&value));
            }
        };
        let start = this
            .st
            .try_ref()?
            .handshake_start
            .as_ref()
            .map(|s| s.clone_ref(py));
        if this.debug(py)? {
            let now = this.loop_obj(py)?.call_method0(intern!(py, "time"))?;
            let start = start.unwrap_or_else(|| py.None());
            let ms = now.sub(start)?.mul(1e3)?;
            Self::log_debug(slf, "%r: SSL handshake took %.1f ms", vec![ms.unbind()])?;
        }
        let extra = this.st.try_ref()?.extra.clone_ref(py);
        let extra = extra.bind(py);
        extra.set_item("peercert", peercert)?;
        extra.set_item("cipher", sslobj.call_method0(intern!(py, "cipher"))?)?;
        extra.set_item(
            "compression",
            sslobj.call_method0(intern!(py, "compression"))?,
        )?;
        extra.set_item("ssl_object", &sslobj)?;
        let made = {
            let mut st = this.st.try_mut()?;
            if st.app_state == AppState::Init {
                st.app_state = AppState::ConMade;
                st.app_protocol.as_ref().map(|p| p.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(p) = made {
            let t = this.get_app_transport(py)?;
            p.bind(py)
                .call_method1(intern!(py, "connection_made"), (t,))?;
        }
        this.wakeup_waiter(py, None)?;
        Self::do_read(slf)
    }

    // -- shutdown

    fn start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let state = this.state()?;
        if matches!(state, State::Flushing | State::Shutdown | State::Unwrapped) {
            return Ok(());
        }
        this.mark_app_transport_closed(py)?;
        if state == State::Handshake {
            return Self::abort(slf, None);
        }
        this.set_state(State::Flushing)?;
        Self::arm_shutdown_timeout(slf)?;
        Self::do_flush(slf)
    }

    /// `call_later(ssl_shutdown_timeout, _check_shutdown_timeout)`, kept as the shutdown
    /// handle.
    fn arm_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let timeout = this.st.try_ref()?.shutdown_timeout.clone_ref(py);
        let cb = slf.getattr(intern!(py, "_check_shutdown_timeout"))?;
        let h = this
            .loop_obj(py)?
            .call_method1(intern!(py, "call_later"), (timeout, cb))?;
        let old = this.st.try_mut()?.shutdown_handle.replace(h.unbind());
        drop(old);
        Ok(())
    }

    fn do_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)?;
        slf.get().set_state(State::Shutdown)?;
        Self::do_shutdown(slf)
    }

    fn do_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let r = if this.st.try_ref()?.eof_received {
            Ok(())
        } else {
            this.sslobj(py)?
                .call_method0(intern!(py, "unwrap"))
                .map(drop)
        };
        match r {
            Ok(()) => {
                Self::process_outgoing(slf)?;
                Self::call_eof_received(slf)?;
                Self::on_shutdown_complete(slf, None)
            }
            Err(e) if is_again(py, &e)? => Self::process_outgoing(slf),
            Err(e) if is_ssl_error(py, &e)? => Self::on_shutdown_complete(slf, Some(e)),
            Err(e) => Err(e),
        }
    }

    fn on_shutdown_complete(slf: &Bound<'_, Self>, exc: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match exc {
            Some(e) => {
                this.cancel_handle(py, true)?;
                Self::fatal_error(slf, e, "Fatal error on transport")
            }
            None => {
                if cfg!(Py_3_14) {
                    // 3.14: closing the transport flushes its buffer first, which a peer
                    // that does not read delays forever: the shutdown timeout stays (or
                    // starts, when the peer began the shutdown) until connection_lost.
                    if this.st.try_ref()?.shutdown_handle.is_none() {
                        Self::arm_shutdown_timeout(slf)?;
                    }
                } else {
                    this.cancel_handle(py, true)?;
                }
                let close = this
                    .transport_or_err(py, "close")?
                    .getattr(intern!(py, "close"))?;
                this.call_soon(py, &close, vec![]).map(drop)
            }
        }
    }

    /// 3.11/3.12 `_abort()` (`exc` ignored: the transport is aborted) or 3.13's
    /// `_abort(exc)` (the transport is force-closed with `exc`).
    fn abort(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.set_state(State::Unwrapped)?;
        let with_exc = this.st.try_ref()?.abort_with_exc;
        if let Some(t) = this.transport(py)? {
            if with_exc {
                t.call_method1(intern!(py, "_force_close"), (exc,))?;
            } else {
                t.call_method0(intern!(py, "abort"))?;
            }
        }
        Ok(())
    }

    // -- outgoing

    fn write_appdata<'py>(
        slf: &Bound<'py, Self>,
        items: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.st.try_mut()?;
            if st.state.closed_for_writes() {
                if st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                    drop(st);
                    logger(py)?.call_method1("warning", ("SSL connection is closed",))?;
                    st = this.st.try_mut()?;
                }
                st.conn_lost += 1;
                return Ok(());
            }
        }
        for item in items {
            // Queued before its len() is taken, as stock (an item without one stays
            // queued and fails the next write).
            let item = item?;
            this.st.try_mut()?.backlog.push_back(item.clone().unbind());
            let n = item.len()? as i64;
            this.st.try_mut()?.write_buffer_size += n;
        }
        let r = if this.state()? == State::Wrapped {
            Self::do_write(slf)
        } else {
            Ok(())
        };
        match catch(py, r)? {
            Caught::Ok(()) => Ok(()),
            Caught::Err(e) => Self::fatal_error(slf, e, "Fatal error on SSL protocol"),
        }
    }

    fn do_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let Some(data) = this.st.try_ref()?.backlog.front().map(|d| d.clone_ref(py)) else {
                break;
            };
            let write = this.sslobj_method(py, |f| &f.write, intern!(py, "write"))?;
            let data = data.bind(py);
            let count = match write.bind(py).call1((data,)) {
                Ok(c) => c,
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            };
            let len = data.len()? as i64;
            // `SSLObject.write` returns an int.
            let count: i64 = count.extract()?;
            let rest = if count < len {
                Some((
                    data.get_item(pyo3::types::PySlice::new(py, count as isize, isize::MAX, 1))?,
                    count,
                ))
            } else {
                None
            };
            let mut st = this.st.try_mut()?;
            let done = match rest {
                Some((rest, count)) => {
                    st.write_buffer_size -= count;
                    st.backlog
                        .front_mut()
                        .map(|front| std::mem::replace(front, rest.unbind()))
                }
                None => {
                    st.write_buffer_size -= len;
                    st.backlog.pop_front()
                }
            };
            // Released after the borrow: a buffer exporter's release may run Python code.
            drop(st);
            drop(done);
        }
        Self::process_outgoing(slf)
    }

    fn process_outgoing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let read = {
            let st = this.st.try_ref()?;
            (!st.ssl_writing_paused).then(|| st.outgoing_read.clone_ref(py))
        };
        // The outgoing BIO is known empty when it was just read out and no code ran since.
        let mut drained = false;
        if let Some(read) = read {
            let data = read.bind(py).call0()?;
            if data.len()? > 0 {
                this.transport_or_err(py, "write")?
                    .call_method1(intern!(py, "write"), (data,))?;
            } else {
                drained = true;
            }
        }
        let size = if drained {
            this.st.try_ref()?.write_buffer_size
        } else {
            this.write_buffer_size(py)?
        };
        Self::control_app_writing_at(slf, size)
    }

    fn write_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        let (outgoing, size) = {
            let st = self.st.try_ref()?;
            (st.outgoing.clone_ref(py), st.write_buffer_size)
        };
        let pending: i64 = outgoing
            .bind(py)
            .getattr(intern!(py, "pending"))?
            .extract()?;
        Ok(pending + size)
    }

    fn read_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        let incoming = self.st.try_ref()?.incoming.clone_ref(py);
        let pending = incoming.bind(py).getattr(intern!(py, "pending"))?;
        pending.extract()
    }

    fn control_app_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        let size = slf.get().write_buffer_size(slf.py())?;
        Self::control_app_writing_at(slf, size)
    }

    /// `_control_app_writing` with the write buffer size (`_get_write_buffer_size()`).
    fn control_app_writing_at(slf: &Bound<'_, Self>, size: i64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (method, message) = {
            let mut st = this.st.try_mut()?;
            if size >= st.outm.high && !st.app_writing_paused {
                st.app_writing_paused = true;
                (
                    intern!(py, "pause_writing"),
                    "protocol.pause_writing() failed",
                )
            } else if size <= st.outm.low && st.app_writing_paused {
                st.app_writing_paused = false;
                (
                    intern!(py, "resume_writing"),
                    "protocol.resume_writing() failed",
                )
            } else {
                return Ok(());
            }
        };
        let (protocol, app_transport, lp) = {
            let st = this.st.try_ref()?;
            (
                st.app_protocol.as_ref().map(|p| p.clone_ref(py)),
                st.app_transport
                    .as_ref()
                    .map(|t| t.clone_ref(py).into_any()),
                st.loop_.clone_ref(py),
            )
        };
        let r = match &protocol {
            Some(p) => p.bind(py).call_method0(method).map(drop),
            None => Err(none_attr(&method.to_string())),
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if must_propagate(py, &e) => Err(e),
            Err(e) => {
                let t = app_transport.unwrap_or_else(|| py.None());
                report(
                    t.bind(py),
                    Some(lp),
                    Some(slf.clone().into_any().unbind()),
                    &e,
                    message,
                )
            }
        }
    }

    // -- incoming

    fn do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !matches!(this.state()?, State::Wrapped | State::Flushing) {
            return Ok(());
        }
        let r = (|| {
            let (paused, buffered) = {
                let st = this.st.try_ref()?;
                (st.app_reading_paused, st.app_is_buffer)
            };
            if !paused {
                if buffered {
                    Self::read_buffered(slf)?;
                } else {
                    Self::read_copied(slf)?;
                }
                if this.st.try_ref()?.backlog.is_empty() {
                    Self::process_outgoing(slf)?;
                } else {
                    Self::do_write(slf)?;
                }
            }
            Self::control_ssl_reading(slf)
        })();
        match catch(py, r)? {
            Caught::Ok(()) => Ok(()),
            Caught::Err(e) => Self::fatal_error(slf, e, "Fatal error on SSL protocol"),
        }
    }

    /// Whether a further read would only raise SSLWantReadError: no encrypted byte
    /// waits in the incoming BIO and no decrypted one in the TLS object. Only asked
    /// after a read that returned data (so no close_notify was seen), with the fast path.
    fn drained(&self, py: Python<'_>) -> PyResult<bool> {
        if self.read_buffer_size(py)? != 0 {
            return Ok(false);
        }
        let pending = {
            let st = self.st.try_ref()?;
            match &st.fast {
                Some(f) => f.pending.clone_ref(py),
                None => return Ok(false),
            }
        };
        let n: i64 = pending.bind(py).call0()?.extract()?;
        Ok(n == 0)
    }

    /// `sslobj.read(n, buf)` -> count, or None for SSLWantReadError/SSLSyscallError.
    fn read_into<'py, N: IntoPyObject<'py>>(
        &self,
        py: Python<'py>,
        n: N,
        buf: &Bound<'py, PyAny>,
    ) -> PyResult<Option<usize>> {
        let read = self.sslobj_method(py, |f| &f.read, intern!(py, "read"))?;
        match read.bind(py).call1((n, buf)) {
            Ok(c) => Ok(Some(c.extract()?)),
            Err(e) if is_again(py, &e)? => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_buffered(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (get_buffer, updated) = {
            let st = this.st.try_ref()?;
            match (&st.app_get_buffer, &st.app_buffer_updated) {
                (Some(g), Some(u)) => (g.clone_ref(py), u.clone_ref(py)),
                _ => return Ok(()),
            }
        };
        let size = this.read_buffer_size(py)?;
        let buf = get_buffer.bind(py).call1((size,))?;
        let wants = buf.len()?;
        let mut offset = 0usize;
        let mut count = 1usize;
        if let Some(c) = this.read_into(py, wants, &buf)? {
            count = c;
            if c > 0 {
                offset = c;
                loop {
                    if offset >= wants {
                        let cb = slf.getattr(intern!(py, "_do_read"))?;
                        this.call_soon(py, &cb, vec![])?;
                        break;
                    }
                    if this.drained(py)? {
                        break;
                    }
                    let rest = buf.get_item(pyo3::types::PySlice::new(
                        py,
                        offset as isize,
                        isize::MAX,
                        1,
                    ))?;
                    match this.read_into(py, wants - offset, &rest)? {
                        Some(c) if c > 0 => {
                            count = c;
                            offset += c;
                        }
                        Some(c) => {
                            count = c;
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
        if offset > 0 {
            updated.bind(py).call1((offset,))?;
        }
        if count == 0 {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    fn read_copied(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let fast = this.st.try_ref()?.fast.is_some();
        let mut busy = OUT_BUSY.try_mut()?;
        if !fast || *busy {
            drop(busy);
            return Self::read_copied_stock(slf);
        }
        *busy = true;
        drop(busy);
        let r = Self::read_copied_fast(slf);
        *OUT_BUSY.try_mut()? = false;
        let (data, eof) = r?;
        let protocol = this
            .st
            .try_ref()?
            .app_protocol
            .as_ref()
            .map(|p| p.clone_ref(py));
        if let Some(data) = data {
            let p = protocol.ok_or_else(|| none_attr("data_received"))?;
            p.bind(py)
                .call_method1(intern!(py, "data_received"), (&data,))?;
            recycle_bytes(data);
        }
        if eof {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    /// Decrypt all there is: (the data, whether close_notify came). Small amounts go
    /// through the shared buffer into a reused `bytes`; from `FRESH_MIN` encrypted bytes
    /// on, straight into a new `bytes` (one copy less).
    #[allow(clippy::type_complexity)]
    fn read_copied_fast<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool)> {
        let py = slf.py();
        let this = slf.get();
        // How much `buffer_updated` just fed in: the size of the new bytes to decrypt
        // into (grown if the TLS object holds more). Other callers take the shared buffer.
        let fed = std::mem::take(&mut this.st.try_mut()?.fed);
        if fed >= FRESH_MIN {
            return Self::read_fresh(slf, fed);
        }
        let out = shared_buf(py, &OUT_BUF)?;
        let view = out.view.bind(py);
        let mut acc: Option<Vec<u8>> = None;
        let mut first = 0usize;
        let mut eof = false;
        loop {
            match this.read_into(py, max_size_int(py)?, view)? {
                None => break,
                Some(0) => {
                    eof = true;
                    break;
                }
                Some(n) => {
                    match acc.as_mut() {
                        Some(a) => {
                            a.extend_from_slice(unsafe { std::slice::from_raw_parts(out.ptr, n) })
                        }
                        None => first = n,
                    }
                    if this.drained(py)? {
                        break;
                    }
                    if acc.is_none() {
                        // The next read overwrites the buffer: keep the first chunk.
                        acc = Some(unsafe { std::slice::from_raw_parts(out.ptr, first) }.to_vec());
                    }
                }
            }
        }
        let data = match acc {
            Some(v) if !v.is_empty() => Some(new_bytes(py, &v)),
            Some(_) => None,
            None if first > 0 => Some(new_bytes(py, unsafe {
                std::slice::from_raw_parts(out.ptr, first)
            })),
            None => None,
        };
        Ok((data, eof))
    }

    /// Decrypt into a new `bytes` of `cap` bytes (the encrypted size: the plain text is
    /// smaller), grown if the TLS object held more, cut to what came.
    #[allow(clippy::type_complexity)]
    fn read_fresh<'py>(
        slf: &Bound<'py, Self>,
        mut cap: usize,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, bool)> {
        let py = slf.py();
        let this = slf.get();
        let mut obj = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), cap as ffi::Py_ssize_t),
            )?
        };
        let mut offset = 0usize;
        let mut eof = false;
        loop {
            if offset == cap {
                if this.drained(py)? {
                    break;
                }
                cap *= 2;
                obj = resize_bytes(obj, cap)?;
            }
            // SAFETY: the new bytes is ours alone (no other reference, no hash yet) until
            // it is returned; the view is dropped before any resize.
            let view = unsafe {
                let at =
                    (ffi::PyBytes_AS_STRING(obj.as_ptr()) as *mut std::os::raw::c_char).add(offset);
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyMemoryView_FromMemory(
                        at,
                        (cap - offset) as ffi::Py_ssize_t,
                        ffi::PyBUF_WRITE,
                    ),
                )?
            };
            let got = this.read_into(py, (cap - offset).min(MAX_SIZE), &view)?;
            drop(view);
            match got {
                None => break,
                Some(0) => {
                    eof = true;
                    break;
                }
                Some(n) => {
                    offset += n;
                    if offset < cap && this.drained(py)? {
                        break;
                    }
                }
            }
        }
        if offset == 0 {
            return Ok((None, eof));
        }
        let obj = resize_bytes(obj, offset)?;
        Ok((Some(obj.cast_into::<PyBytes>()?), eof))
    }

    /// The stock `_do_read__copied`, through `SSLObject.read` (a custom
    /// `sslobject_class`, or a nested read).
    fn read_copied_stock(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let sslobj = this.sslobj(py)?;
        let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut eof = false;
        loop {
            match sslobj.call_method1(intern!(py, "read"), (MAX_SIZE,)) {
                Ok(chunk) => {
                    if !chunk.is_truthy()? {
                        eof = true;
                        break;
                    }
                    chunks.push(chunk);
                }
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            }
        }
        let protocol = this
            .st
            .try_ref()?
            .app_protocol
            .as_ref()
            .map(|p| p.clone_ref(py));
        if !chunks.is_empty() {
            let data = if chunks.len() == 1 {
                chunks.pop().unwrap_or_else(|| py.None().into_bound(py))
            } else {
                pyo3::types::PyBytes::new(py, b"").call_method1(intern!(py, "join"), (chunks,))?
            };
            let p = protocol.ok_or_else(|| none_attr("data_received"))?;
            p.bind(py)
                .call_method1(intern!(py, "data_received"), (data,))?;
        }
        if eof {
            Self::call_eof_received(slf)?;
            Self::start_shutdown(slf)?;
        }
        Ok(())
    }

    fn call_eof_received(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let mut st = this.st.try_mut()?;
            if st.app_state != AppState::ConMade {
                return Ok(());
            }
            st.app_state = AppState::Eof;
            st.app_protocol.as_ref().map(|p| p.clone_ref(py))
        };
        let r = protocol
            .ok_or_else(|| none_attr("eof_received"))
            .and_then(|p| p.bind(py).call_method0(intern!(py, "eof_received")))
            .and_then(|keep| keep.is_truthy());
        match r {
            Ok(true) => {
                logger(py)?.call_method1(
                    "warning",
                    ("returning true from eof_received() has no effect when using ssl",),
                )?;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) if must_propagate(py, &e) => Err(e),
            Err(e) => Self::fatal_error(slf, e, "Error calling eof_received()"),
        }
    }

    fn control_ssl_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let size = this.read_buffer_size(py)?;
        let method = {
            let mut st = this.st.try_mut()?;
            if size >= st.inm.high && !st.ssl_reading_paused {
                st.ssl_reading_paused = true;
                intern!(py, "pause_reading")
            } else if size <= st.inm.low && st.ssl_reading_paused {
                st.ssl_reading_paused = false;
                intern!(py, "resume_reading")
            } else {
                return Ok(());
            }
        };
        this.transport_or_err(py, &method.to_string())?
            .call_method0(method)?;
        Ok(())
    }

    /// Stock `_fatal_error` where stock calls it from an `except` block handling `err`.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let value = err.value(slf.py()).clone().into_any();
        Self::fatal_value(slf, &value, message, true)
    }

    /// Stock `_fatal_error(exc, message)`; `handled`: whether stock would be handling
    /// `exc` in an `except` block (its debug log's `exc_info=True` then shows it; else
    /// it shows whatever Python is handling at the time).
    fn fatal_value(
        slf: &Bound<'_, Self>,
        exc: &Bound<'_, PyAny>,
        message: &str,
        handled: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(t) = this.transport(py)? {
            t.call_method1(intern!(py, "_force_close"), (exc,))?;
        }
        if exc.is_instance_of::<PyOSError>() {
            if this.debug(py)? {
                let kwargs = PyDict::new(py);
                if handled {
                    kwargs.set_item("exc_info", exc)?;
                } else {
                    kwargs.set_item("exc_info", true)?;
                }
                logger(py)?.call_method("debug", ("%r: %s", slf, message), Some(&kwargs))?;
            }
        } else if !exc.is_instance(classes(py)?.cancelled.bind(py))? {
            let ctx = PyDict::new(py);
            ctx.set_item("message", message)?;
            ctx.set_item("exception", exc)?;
            ctx.set_item("transport", this.transport(py)?)?;
            ctx.set_item("protocol", slf)?;
            this.loop_obj(py)?
                .call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Ok(())
    }

    fn resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        match slf.get().state()? {
            State::Wrapped => Self::do_read(slf),
            State::Flushing => Self::do_flush(slf),
            State::Shutdown => Self::do_shutdown(slf),
            _ => Ok(()),
        }
    }
}

/// `oxloop._net.SSLProtocol`, the class of the SSL protocols oxloop makes.
static OWN_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl TlsProtocol {
    /// For the stream transports' native read hook: `protocol` as oxloop's own SSL
    /// protocol, if it is exactly one (not a subclass, whose `get_buffer` or
    /// `buffer_updated` could differ) reading through the shared buffer; and where
    /// `get_buffer` would have the transport read to (the buffer and its size). None
    /// (the transport then calls the Python methods, which behave the same) whenever
    /// anything is amiss.
    pub(crate) fn native_target<'a, 'py>(
        protocol: &'a Bound<'py, PyAny>,
    ) -> Option<(&'a Bound<'py, TlsProtocol>, *mut u8, usize)> {
        let py = protocol.py();
        let cls = OWN_CLASS
            .get_or_try_init(py, || {
                py.import("oxloop._net")?
                    .getattr("SSLProtocol")
                    .map(Bound::unbind)
            })
            .ok()?;
        if !protocol.get_type().is(cls.bind(py)) {
            return None;
        }
        let proto = protocol.cast::<TlsProtocol>().ok()?;
        if !proto.get().st.try_ref().ok()?.shared_in {
            return None;
        }
        Some((proto, shared_buf(py, &IN_BUF).ok()?.ptr, MAX_SIZE))
    }

    /// For the native read hook: `buffer_updated(n)` with no Python call.
    pub(crate) fn native_updated(proto: &Bound<'_, TlsProtocol>, n: isize) -> PyResult<()> {
        Self::buffer_updated(proto, n)
    }
}

#[pymethods]
impl TlsProtocol {
    /// The Python side (`oxloop._net`) checks the arguments, makes the BIOs and the
    /// `SSLObject` (`sslcontext.wrap_bio`), then sets the app transport.
    #[new]
    #[pyo3(signature = (loop_, app_protocol, sslcontext, waiter, call_connection_made,
                        handshake_timeout, shutdown_timeout, incoming, outgoing, sslobj,
                        abort_with_exc, server_side=false, server_hostname=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        loop_: Py<PyAny>,
        app_protocol: &Bound<'_, PyAny>,
        sslcontext: &Bound<'_, PyAny>,
        waiter: Option<Py<PyAny>>,
        call_connection_made: bool,
        handshake_timeout: Py<PyAny>,
        shutdown_timeout: Py<PyAny>,
        incoming: &Bound<'_, PyAny>,
        outgoing: &Bound<'_, PyAny>,
        sslobj: &Bound<'_, PyAny>,
        abort_with_exc: bool,
        server_side: bool,
        server_hostname: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let c = classes(py)?;
        let fast = if sslobj.get_type().is(c.ssl_object.bind(py)) {
            let inner = sslobj.getattr("_sslobj")?;
            Some(Fast {
                read: inner.getattr("read")?.unbind(),
                write: inner.getattr("write")?.unbind(),
                pending: inner.getattr("pending")?.unbind(),
            })
        } else {
            None
        };
        let extra = PyDict::new(py);
        extra.set_item("sslcontext", sslcontext)?;
        let proto = TlsProtocol {
            st: GilCell::new(Tls {
                loop_,
                app_protocol: None,
                app_get_buffer: None,
                app_buffer_updated: None,
                app_is_buffer: false,
                app_transport: None,
                app_transport_created: false,
                transport: None,
                waiter: waiter.filter(|w| !w.is_none(py)),
                extra: extra.unbind(),
                sslcontext: sslcontext.clone().unbind(),
                server_side,
                server_hostname: server_hostname.unwrap_or_else(|| py.None()),
                handshake_timeout,
                shutdown_timeout,
                handshake_start: None,
                handshake_handle: None,
                shutdown_handle: None,
                incoming: incoming.clone().unbind(),
                outgoing: outgoing.clone().unbind(),
                incoming_write: incoming.getattr("write")?.unbind(),
                outgoing_read: outgoing.getattr("read")?.unbind(),
                sslobj: sslobj.clone().unbind(),
                fast,
                state: State::Unwrapped,
                app_state: if call_connection_made {
                    AppState::Init
                } else {
                    AppState::ConMade
                },
                conn_lost: 0,
                backlog: VecDeque::new(),
                write_buffer_size: 0,
                ssl_writing_paused: false,
                app_reading_paused: false,
                ssl_reading_paused: false,
                eof_received: false,
                app_writing_paused: false,
                inm: Marks::default_kb(HIGH_WATER_SSL_READ_KB),
                outm: Marks::default_kb(HIGH_WATER_SSL_WRITE_KB),
                abort_with_exc,
                fed: 0,
                shared_in: false,
                own_in: None,
            }),
        };
        proto.set_app_protocol(app_protocol)?;
        Ok(proto)
    }

    /// Set once, right after construction.
    fn _set_app_transport(&self, transport: &Bound<'_, TlsTransport>) -> PyResult<()> {
        let mut st = self.st.try_mut()?;
        if st.app_transport_created {
            return Err(PyRuntimeError::new_err(
                "Creating _SSLProtocolTransport twice",
            ));
        }
        st.app_transport = Some(transport.clone().unbind());
        st.app_transport_created = true;
        Ok(())
    }

    fn _get_app_transport(&self, py: Python<'_>) -> PyResult<Py<TlsTransport>> {
        self.get_app_transport(py)
    }

    fn _set_app_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_app_protocol(protocol)
    }

    #[getter]
    fn _app_protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .st
            .try_ref()?
            .app_protocol
            .as_ref()
            .map_or_else(|| py.None(), |p| p.clone_ref(py)))
    }

    #[getter]
    fn _app_transport(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .st
            .try_ref()?
            .app_transport
            .as_ref()
            .map_or_else(|| py.None(), |t| t.clone_ref(py).into_any()))
    }

    #[getter]
    fn _transport(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .transport(py)?
            .map_or_else(|| py.None(), |t| t.unbind()))
    }

    /// The incoming `MemoryBIO` (`start_tls` hands it bytes that arrived before it).
    #[getter]
    fn _incoming(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.st.try_ref()?.incoming.clone_ref(py))
    }

    #[getter]
    fn _sslobj(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.sslobj(py)?.unbind())
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.loop_obj(py)?.unbind())
    }

    /// Stock's `_extra`: `sslcontext`, then, once the handshake is done, `peercert`,
    /// `cipher`, `compression` and `ssl_object` (the same dict, as stock's).
    #[getter]
    fn _extra(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        Ok(self.st.try_ref()?.extra.clone_ref(py))
    }

    #[getter]
    fn _sslcontext(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.st.try_ref()?.sslcontext.clone_ref(py))
    }

    #[getter]
    fn _server_side(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.server_side)
    }

    #[getter]
    fn _server_hostname(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.st.try_ref()?.server_hostname.clone_ref(py))
    }

    #[getter]
    fn _waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .st
            .try_ref()?
            .waiter
            .as_ref()
            .map_or_else(|| py.None(), |w| w.clone_ref(py)))
    }

    /// The state's name, as stock's `SSLProtocolState` values.
    #[getter]
    fn _state_name(&self) -> PyResult<&'static str> {
        Ok(self.state()?.name())
    }

    fn connection_made(slf: &Bound<'_, Self>, transport: Py<PyAny>) -> PyResult<()> {
        let shared = transport
            .bind(slf.py())
            .is_instance_of::<crate::stream::StreamTransport>();
        let old = {
            let mut st = slf.get().st.try_mut()?;
            st.shared_in = shared;
            st.transport.replace(transport)
        };
        drop(old);
        Self::start_handshake(slf)
    }

    #[pyo3(signature = (exc))]
    fn connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (outgoing_read, backlog) = {
            let mut st = this.st.try_mut()?;
            (
                st.outgoing_read.clone_ref(py),
                std::mem::take(&mut st.backlog),
            )
        };
        drop(backlog);
        outgoing_read.bind(py).call0()?;
        this.st.try_mut()?.conn_lost += 1;
        this.mark_app_transport_closed(py)?;
        let lost = {
            let mut st = this.st.try_mut()?;
            if st.state != State::Handshake
                && matches!(st.app_state, AppState::ConMade | AppState::Eof)
            {
                st.app_state = AppState::ConLost;
                st.app_protocol.as_ref().map(|p| p.clone_ref(py))
            } else {
                None
            }
        };
        if let Some(p) = lost {
            let cb = p.bind(py).getattr(intern!(py, "connection_lost"))?;
            this.call_soon(py, &cb, vec![exc.clone_ref(py)])?;
        }
        this.set_state(State::Unwrapped)?;
        let dropped = {
            let mut st = this.st.try_mut()?;
            (
                st.transport.take(),
                st.app_transport.take(),
                st.app_protocol.take(),
            )
        };
        drop(dropped);
        let exc = exc.bind(py);
        this.wakeup_waiter(py, (!exc.is_none()).then_some(exc))?;
        this.cancel_handle(py, true)?;
        this.cancel_handle(py, false)
    }

    #[pyo3(signature = (n))]
    fn get_buffer(&self, py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let _ = n;
        if self.st.try_ref()?.shared_in {
            return Ok(shared_buf(py, &IN_BUF)?.view.clone_ref(py));
        }
        if let Some(v) = &self.st.try_ref()?.own_in {
            return Ok(v.clone_ref(py));
        }
        let buf = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyByteArray_FromStringAndSize(std::ptr::null(), MAX_SIZE as ffi::Py_ssize_t),
            )?
        };
        let view = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(buf.as_ptr()))?
        };
        self.st.try_mut()?.own_in = Some(view.clone().unbind());
        Ok(view.unbind())
    }

    fn buffer_updated(slf: &Bound<'_, Self>, nbytes: isize) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let n = if nbytes < 0 {
            (MAX_SIZE as isize + nbytes).max(0) as usize
        } else {
            (nbytes as usize).min(MAX_SIZE)
        };
        let (write, own) = {
            let st = this.st.try_ref()?;
            let own = if st.shared_in {
                None
            } else {
                st.own_in.as_ref().map(|v| v.clone_ref(py))
            };
            (st.incoming_write.clone_ref(py), own)
        };
        let view = match own {
            Some(v) => v
                .bind(py)
                .get_item(pyo3::types::PySlice::new(py, 0, n as isize, 1))?,
            None => view_of(py, shared_buf(py, &IN_BUF)?, n)?,
        };
        write.bind(py).call1((&view,))?;
        drop(view);
        this.st.try_mut()?.fed = n;
        let r = match this.state()? {
            State::Handshake => Self::do_handshake(slf),
            State::Wrapped => Self::do_read(slf),
            State::Flushing => Self::do_flush(slf),
            State::Shutdown => Self::do_shutdown(slf),
            State::Unwrapped => Ok(()),
        };
        this.st.try_mut()?.fed = 0;
        r
    }

    fn eof_received(slf: &Bound<'_, Self>) -> PyResult<Option<bool>> {
        let py = slf.py();
        let this = slf.get();
        this.st.try_mut()?.eof_received = true;
        let r = (|| -> PyResult<Option<bool>> {
            if this.debug(py)? {
                Self::log_debug(slf, "%r received EOF", vec![])?;
            }
            match this.state()? {
                State::Handshake => {
                    Self::on_handshake_complete(slf, Some(PyConnectionResetError::new_err(())))?;
                }
                State::Wrapped => {
                    this.set_state(State::Flushing)?;
                    if this.st.try_ref()?.app_reading_paused {
                        return Ok(Some(true));
                    }
                    Self::do_flush(slf)?;
                }
                State::Flushing => {
                    Self::do_write(slf)?;
                    this.set_state(State::Shutdown)?;
                    Self::do_shutdown(slf)?;
                }
                State::Shutdown => Self::do_shutdown(slf)?,
                State::Unwrapped => {}
            }
            Ok(None)
        })();
        match r {
            Err(e) if is_exception(py, &e) => {
                if let Some(t) = this.transport(py)? {
                    t.call_method0(intern!(py, "close"))?;
                }
                Err(e)
            }
            r => r,
        }
    }

    fn pause_writing(&self, py: Python<'_>) -> PyResult<()> {
        if self.st.try_ref()?.ssl_writing_paused {
            check_assert(py)?;
        }
        self.st.try_mut()?.ssl_writing_paused = true;
        Ok(())
    }

    fn resume_writing(slf: &Bound<'_, Self>) -> PyResult<()> {
        if !slf.get().st.try_ref()?.ssl_writing_paused {
            check_assert(slf.py())?;
        }
        slf.get().st.try_mut()?.ssl_writing_paused = false;
        Self::process_outgoing(slf)
    }

    fn _check_handshake_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.state()? != State::Handshake {
            return Ok(());
        }
        let timeout = this.st.try_ref()?.handshake_timeout.clone_ref(py);
        let msg = format!(
            "SSL handshake is taking longer than {} seconds: aborting the connection",
            timeout.bind(py).str()?
        );
        let exc = PyConnectionAbortedError::new_err(msg).into_value(py);
        Self::fatal_value(slf, exc.bind(py), "Fatal error on transport", false)
    }

    fn _check_shutdown_timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !matches!(this.state()?, State::Flushing | State::Shutdown) {
            return Ok(());
        }
        let exc = PyTimeoutError::new_err("SSL shutdown timed out");
        this.transport_or_err(py, "_force_close")?
            .call_method1(intern!(py, "_force_close"), (exc.value(py),))?;
        Ok(())
    }

    fn _do_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::do_read(slf)
    }

    /// What `_resume_reading` schedules.
    fn _resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::resume(slf)
    }

    fn _start_shutdown(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_shutdown(slf)
    }

    #[pyo3(signature = (exc=None))]
    fn _abort(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        Self::abort(slf, exc)
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_value(slf, exc, message, false)
    }

    #[pyo3(signature = (name, default=None))]
    fn _get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = self.st.try_ref()?.extra.clone_ref(py);
        if let Some(v) = extra.bind(py).get_item(name)? {
            return Ok(v.unbind());
        }
        let default = default.unwrap_or_else(|| py.None());
        match self.transport(py)? {
            Some(t) => Ok(t
                .call_method1(intern!(py, "get_extra_info"), (name, default))?
                .unbind()),
            None => Ok(default),
        }
    }

    fn _get_write_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        self.write_buffer_size(py)
    }

    fn _get_read_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        self.read_buffer_size(py)
    }

    #[getter]
    fn _app_reading_paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.app_reading_paused)
    }

    #[getter]
    fn _app_writing_paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.app_writing_paused)
    }

    #[getter]
    fn _ssl_writing_paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.ssl_writing_paused)
    }

    #[getter]
    fn _ssl_reading_paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.ssl_reading_paused)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.st.peek() {
            visit.call(&st.loop_)?;
            for o in [
                &st.app_protocol,
                &st.app_get_buffer,
                &st.app_buffer_updated,
                &st.transport,
                &st.waiter,
                &st.handshake_start,
                &st.handshake_handle,
                &st.shutdown_handle,
            ]
            .into_iter()
            .flatten()
            {
                visit.call(o)?;
            }
            if let Some(t) = &st.app_transport {
                visit.call(t)?;
            }
            visit.call(&st.extra)?;
            for o in [
                &st.sslobj,
                &st.sslcontext,
                &st.server_hostname,
                &st.handshake_timeout,
                &st.shutdown_timeout,
                &st.incoming,
                &st.outgoing,
                &st.incoming_write,
                &st.outgoing_read,
            ] {
                visit.call(o)?;
            }
            if let Some(f) = &st.fast {
                visit.call(&f.read)?;
                visit.call(&f.write)?;
                visit.call(&f.pending)?;
            }
            if let Some(o) = &st.own_in {
                visit.call(o)?;
            }
            for o in &st.backlog {
                visit.call(o)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // The objects that are not optional are replaced by None (a fresh dict for
        // `extra`); all are dropped after the borrow ends.
        Python::attach(|py| {
            let taken = match self.st.try_mut() {
                Ok(mut st) => {
                    let none = |o: &mut Py<PyAny>| std::mem::replace(o, py.None());
                    let kept = [
                        none(&mut st.loop_),
                        none(&mut st.sslobj),
                        none(&mut st.sslcontext),
                        none(&mut st.server_hostname),
                        none(&mut st.handshake_timeout),
                        none(&mut st.shutdown_timeout),
                        none(&mut st.incoming),
                        none(&mut st.outgoing),
                        none(&mut st.incoming_write),
                        none(&mut st.outgoing_read),
                    ];
                    (
                        kept,
                        std::mem::replace(&mut st.extra, PyDict::new(py).unbind()),
                        st.fast.take(),
                        [
                            st.own_in.take(),
                            st.handshake_start.take(),
                            st.app_protocol.take(),
                            st.app_get_buffer.take(),
                            st.app_buffer_updated.take(),
                            st.transport.take(),
                            st.waiter.take(),
                            st.handshake_handle.take(),
                            st.shutdown_handle.take(),
                        ],
                        st.app_transport.take(),
                        std::mem::take(&mut st.backlog),
                    )
                }
                Err(_) => return,
            };
            drop(taken);
        });
    }
}

struct TrState {
    proto: Option<Py<TlsProtocol>>,
    closed: bool,
}

/// The transport the application protocol sees (stock `_SSLProtocolTransport`).
#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct TlsTransport {
    loop_: Py<PyAny>,
    tr: GilCell<TrState>,
}

impl TlsTransport {
    /// `set_read_buffer_limits` (`read`) or `set_write_buffer_limits`, then the flow
    /// control they change.
    fn set_limits(
        &self,
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
        read: bool,
    ) -> PyResult<()> {
        let p = self.proto(
            py,
            if read {
                "_set_read_buffer_limits"
            } else {
                "_set_write_buffer_limits"
            },
        )?;
        let kb = if read {
            HIGH_WATER_SSL_READ_KB
        } else {
            HIGH_WATER_SSL_WRITE_KB
        };
        let marks = Marks::parse(py, high, low, kb)?;
        let old = {
            let mut st = p.get().st.try_mut()?;
            std::mem::replace(if read { &mut st.inm } else { &mut st.outm }, marks)
        };
        drop(old);
        if read {
            TlsProtocol::control_ssl_reading(&p)
        } else {
            TlsProtocol::control_app_writing(&p)
        }
    }

    fn proto<'py>(&self, py: Python<'py>, attr: &str) -> PyResult<Bound<'py, TlsProtocol>> {
        match &self.tr.try_ref()?.proto {
            Some(p) => Ok(p.bind(py).clone()),
            None => Err(none_attr(attr)),
        }
    }
}

#[pymethods]
impl TlsTransport {
    #[new]
    fn new(loop_: Py<PyAny>, ssl_protocol: Py<TlsProtocol>) -> Self {
        TlsTransport {
            loop_,
            tr: GilCell::new(TrState {
                proto: Some(ssl_protocol),
                closed: false,
            }),
        }
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.proto(py, "_get_extra_info")?
            .get()
            ._get_extra_info(py, name, default)
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.proto(py, "_set_app_protocol")?
            .get()
            .set_app_protocol(protocol)
    }

    fn get_protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.proto(py, "_app_protocol")?.get()._app_protocol(py)
    }

    /// Closed, or (3.14) over a transport that is closing.
    fn is_closing(&self, py: Python<'_>) -> PyResult<bool> {
        let tr = self.tr.try_ref()?;
        if tr.closed || !cfg!(Py_3_14) {
            return Ok(tr.closed);
        }
        let Some(proto) = tr.proto.as_ref().map(|p| p.clone_ref(py)) else {
            return Ok(false);
        };
        drop(tr);
        match proto.get().transport(py)? {
            Some(t) => t.call_method0(intern!(py, "is_closing"))?.is_truthy(),
            None => Ok(false),
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let proto = {
            let mut tr = self.tr.try_mut()?;
            if tr.closed {
                let old = tr.proto.take();
                drop(tr);
                drop(old);
                return Ok(());
            }
            tr.closed = true;
            tr.proto.as_ref().map(|p| p.clone_ref(py))
        };
        match proto {
            Some(p) => TlsProtocol::start_shutdown(p.bind(py)),
            None => Err(none_attr("_start_shutdown")),
        }
    }

    #[getter]
    fn _closed(&self) -> PyResult<bool> {
        Ok(self.tr.try_ref()?.closed)
    }

    #[setter(_closed)]
    fn set_closed_flag(&self, value: bool) -> PyResult<()> {
        self.tr.try_mut()?.closed = value;
        Ok(())
    }

    #[getter]
    fn _ssl_protocol(&self, py: Python<'_>) -> PyResult<Option<Py<TlsProtocol>>> {
        Ok(self.tr.try_ref()?.proto.as_ref().map(|p| p.clone_ref(py)))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    fn is_reading(&self, py: Python<'_>) -> PyResult<bool> {
        let p = self.proto(py, "_app_reading_paused")?;
        let paused = p.get().st.try_ref()?.app_reading_paused;
        Ok(!paused)
    }

    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.proto(py, "_pause_reading")?;
        p.get().st.try_mut()?.app_reading_paused = true;
        Ok(())
    }

    fn resume_reading(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.proto(py, "_resume_reading")?;
        let this = p.get();
        {
            let mut st = this.st.try_mut()?;
            if !st.app_reading_paused {
                return Ok(());
            }
            st.app_reading_paused = false;
        }
        let cb = p.getattr(intern!(py, "_resume"))?;
        this.call_soon(py, &cb, vec![]).map(drop)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.set_limits(py, high, low, false)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let p = self.proto(py, "_outgoing_low_water")?;
        let st = p.get().st.try_ref()?;
        st.outm.tuple(py)
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        self.proto(py, "_get_write_buffer_size")?
            .get()
            .write_buffer_size(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_read_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.set_limits(py, high, low, true)
    }

    fn get_read_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let p = self.proto(py, "_incoming_low_water")?;
        let st = p.get().st.try_ref()?;
        st.inm.tuple(py)
    }

    fn get_read_buffer_size(&self, py: Python<'_>) -> PyResult<i64> {
        self.proto(py, "_get_read_buffer_size")?
            .get()
            .read_buffer_size(py)
    }

    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> PyResult<bool> {
        let p = self.proto(py, "_app_writing_paused")?;
        let paused = p.get().st.try_ref()?.app_writing_paused;
        Ok(paused)
    }

    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        let p = data.as_ptr();
        let bytes_like = unsafe {
            ffi::PyBytes_Check(p) != 0
                || ffi::PyByteArray_Check(p) != 0
                || ffi::PyMemoryView_Check(p) != 0
        };
        if !bytes_like {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !data.is_truthy()? {
            return Ok(());
        }
        let proto = self.proto(py, "_write_appdata")?;
        TlsProtocol::write_appdata(&proto, std::iter::once(Ok(data.clone())))
    }

    fn writelines(&self, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = list_of_data.py();
        let proto = self.proto(py, "_write_appdata")?;
        // Iterated only when the connection takes writes, as stock.
        if proto.get().state()?.closed_for_writes() {
            return TlsProtocol::write_appdata(&proto, std::iter::empty());
        }
        let items = list_of_data.try_iter()?;
        TlsProtocol::write_appdata(&proto, items)
    }

    fn write_eof(&self) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(()))
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let proto = {
            let mut tr = self.tr.try_mut()?;
            tr.closed = true;
            tr.proto.as_ref().map(|p| p.clone_ref(py))
        };
        match proto {
            Some(p) => TlsProtocol::abort(p.bind(py), None),
            None => Ok(()),
        }
    }

    fn _force_close(&self, py: Python<'_>, exc: Py<PyAny>) -> PyResult<()> {
        let proto = {
            let mut tr = self.tr.try_mut()?;
            tr.closed = true;
            tr.proto.as_ref().map(|p| p.clone_ref(py))
        };
        match proto {
            Some(p) => TlsProtocol::abort(p.bind(py), (!exc.is_none(py)).then_some(exc)),
            None => Ok(()),
        }
    }

    #[allow(non_snake_case)]
    fn _test__append_write_backlog(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = self.proto(data.py(), "_write_backlog")?;
        let n = data.len()? as i64;
        let mut st = p.get().st.try_mut()?;
        st.backlog.push_back(data.clone().unbind());
        st.write_buffer_size += n;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Some(tr) = self.tr.peek() {
            if let Some(p) = &tr.proto {
                visit.call(p)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = match self.tr.try_mut() {
            Ok(mut tr) => tr.proto.take(),
            Err(_) => return,
        };
        drop(taken);
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TlsProtocol>()?;
    m.add_class::<TlsTransport>()?;
    Ok(())
}
