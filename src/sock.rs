//! The `sock_recv`/`sock_sendall` fast paths: the system calls and the wait for
//! readiness in Rust, for plain non-blocking `socket.socket` objects.
//!
//! `oxloop._sock` calls these first. They answer `NotImplemented` when the call is not
//! theirs to make (a socket subclass or a mock, a socket with a timeout, an argument of
//! another type, debug mode's checks), and the Python code then does what the stock loop
//! does. Otherwise they behave as `sock.recv(n)` / `sock.send(data)` would: the first try
//! at once (a would-block costs no exception), then, if needed, a reader or writer on the
//! loop that retries on readiness and completes a future from `loop.create_future()`.
//! Cancelling that future removes the reader or writer, as stock.

use std::io;
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyTuple, PyType};
use pyo3::{ffi, intern, PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::errors::must_propagate;
use crate::event_loop::LoopCore;
use crate::handles::Handle;
use crate::transport::{with_read_buf, MAX_READ};
use crate::wbuf::os_error;

static SOCKET_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The fd of `sock` if the fast path may stand in for its methods: not in debug mode
/// (its checks are Python's), exactly `socket.socket`, timeout 0 (so its methods never
/// wait), not closed.
fn plain_fd(lp: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    if lp.get().debug() {
        return Ok(None);
    }
    let socket_type = SOCKET_TYPE.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("socket")?
                .getattr("socket")?
                .cast_into::<PyType>()?
                .unbind(),
        )
    })?;
    if !sock.get_type().is(socket_type.bind(py)) {
        return Ok(None);
    }
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    match timeout.cast::<PyFloat>() {
        Ok(t) if t.value() == 0.0 => {}
        _ => return Ok(None),
    }
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    Ok((fd >= 0).then_some(fd))
}

/// What one system call did.
enum Outcome<T> {
    Done(T),
    WouldBlock,
}

/// Run `call` until it is not interrupted (running signal handlers in between, as the
/// socket methods do); a would-block is `WouldBlock`, any other error the Python one.
fn retry_eintr(
    py: Python<'_>,
    mut call: impl FnMut() -> PyResult<isize>,
) -> PyResult<Outcome<usize>> {
    loop {
        let n = call()?;
        if n >= 0 {
            return Ok(Outcome::Done(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => py.check_signals()?,
            Some(libc::EAGAIN) => return Ok(Outcome::WouldBlock),
            _ => return Err(os_error(&err)),
        }
    }
}

/// `sock.recv(n)` on a plain socket: a new `bytes` of what arrived. Up to `MAX_READ`
/// bytes are read into the shared read buffer and copied out (no large allocation that
/// a would-block throws away, none to shrink).
fn recv_once<'py>(py: Python<'py>, fd: RawFd, n: usize) -> PyResult<Outcome<Bound<'py, PyAny>>> {
    if n > MAX_READ {
        return recv_fresh(py, fd, n);
    }
    let mut data = None;
    let outcome = retry_eintr(py, || {
        with_read_buf(|buf| {
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, n, 0) };
            if got >= 0 {
                data = Some(PyBytes::new(py, &buf[..got as usize]));
            }
            got
        })
    })?;
    Ok(match (outcome, data) {
        (Outcome::Done(_), Some(data)) => Outcome::Done(data.into_any()),
        _ => Outcome::WouldBlock,
    })
}

/// `recv_once` for more than `MAX_READ` bytes: into a new `bytes` of n, then shrunk.
fn recv_fresh<'py>(py: Python<'py>, fd: RawFd, n: usize) -> PyResult<Outcome<Bound<'py, PyAny>>> {
    // SAFETY: a fresh bytes object of n bytes is ours to fill until it is shared; it is
    // shrunk to what arrived, or released on a would-block or an error.
    unsafe {
        let mut obj = ffi::PyBytes_FromStringAndSize(std::ptr::null(), n as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let buf = ffi::PyBytes_AsString(obj) as *mut libc::c_void;
        let got = match retry_eintr(py, || Ok(libc::recv(fd, buf, n, 0))) {
            Ok(Outcome::Done(got)) => got,
            other => {
                ffi::Py_DECREF(obj);
                return other.map(|_| Outcome::WouldBlock);
            }
        };
        if got != n && crate::capi::_PyBytes_Resize(&mut obj, got as ffi::Py_ssize_t) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Outcome::Done(Bound::from_owned_ptr(py, obj)))
    }
}

/// One `sock.send(data)` (flags 0, as the socket method).
fn send_once(py: Python<'_>, fd: RawFd, data: &[u8]) -> PyResult<Outcome<usize>> {
    retry_eintr(py, || unsafe {
        Ok(libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            0,
        ))
    })
}

/// What a waiting call does on readiness.
enum Op {
    Recv(usize),
    /// The data and how much of it has gone.
    Send(Py<PyBytes>, GilCell<usize>),
}

/// A `sock_recv`/`sock_sendall` waiting for its fd: the reader or writer callback
/// (called with no argument) and the future's done callback (called with the future).
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct SockWaiter {
    core: Py<LoopCore>,
    fut: Py<PyAny>,
    sock: Py<PyAny>,
    fd: RawFd,
    writer: bool,
    op: Op,
    handle: GilCell<Option<Py<Handle>>>,
}

impl SockWaiter {
    /// Wait for `fd` and complete a new future from `loop.create_future()`.
    fn start<'py>(
        lp: &Bound<'py, LoopCore>,
        sock: &Bound<'py, PyAny>,
        fd: RawFd,
        writer: bool,
        op: Op,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = lp.py();
        let fut = lp.call_method0(intern!(py, "create_future"))?;
        let waiter = Bound::new(
            py,
            SockWaiter {
                core: lp.clone().unbind(),
                fut: fut.clone().unbind(),
                sock: sock.clone().unbind(),
                fd,
                writer,
                op,
                handle: GilCell::new(None),
            },
        )?;
        // `loop._add_reader(fd, waiter)` (or `_add_writer`), without the method call.
        let fd_obj = fd.into_pyobject(py)?;
        let handle = LoopCore::set_reader_or_writer(
            lp,
            fd_obj.as_any(),
            waiter.as_any(),
            PyTuple::empty(py),
            writer,
        )?;
        *waiter.get().handle.try_mut()? = Some(handle);
        fut.call_method1(intern!(py, "add_done_callback"), (&waiter,))?;
        Ok(fut)
    }

    /// Try the call again; Ok(None) while it would still block.
    fn attempt<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let fd: RawFd = self
            .sock
            .bind(py)
            .call_method0(intern!(py, "fileno"))?
            .extract()?;
        if fd != self.fd {
            // Closed (or detached) meanwhile: what the socket method raises then.
            return Err(os_error(&io::Error::from_raw_os_error(libc::EBADF)));
        }
        match &self.op {
            Op::Recv(n) => match recv_once(py, self.fd, *n)? {
                Outcome::Done(data) => Ok(Some(data)),
                Outcome::WouldBlock => Ok(None),
            },
            Op::Send(data, pos) => {
                let bytes = data.as_bytes(py);
                let start = *pos.try_ref()?;
                let Outcome::Done(sent) = send_once(py, self.fd, &bytes[start..])? else {
                    return Ok(None);
                };
                *pos.try_mut()? = start + sent;
                Ok((start + sent == bytes.len()).then(|| py.None().into_bound(py)))
            }
        }
    }

    /// Stop watching the fd and settle the future (no done callback of ours left on it).
    fn finish(slf: &Bound<'_, Self>, outcome: PyResult<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let fut = this.fut.bind(py);
        fut.call_method1(intern!(py, "remove_done_callback"), (slf,))?;
        LoopCore::unwatch_fd(this.core.bind(py), this.fd, this.writer)?;
        match outcome {
            Ok(value) => fut.call_method1(intern!(py, "set_result"), (value,))?,
            Err(err) => fut.call_method1(intern!(py, "set_exception"), (err.value(py),))?,
        };
        Ok(())
    }
}

#[pymethods]
impl SockWaiter {
    #[pyo3(signature = (fut=None))]
    fn __call__(slf: &Bound<'_, Self>, fut: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if fut.is_some() {
            // The future is done (cancelled): remove our reader/writer unless another
            // one has replaced it meanwhile.
            let ours = match this.handle.try_ref()?.as_ref() {
                Some(h) => !h.get().is_cancelled(),
                None => false,
            };
            if ours {
                LoopCore::unwatch_fd(this.core.bind(py), this.fd, this.writer)?;
            }
            return Ok(());
        }
        if this
            .fut
            .bind(py)
            .call_method0(intern!(py, "done"))?
            .is_truthy()?
        {
            return Ok(()); // cancelled; the done callback removes the reader/writer
        }
        match this.attempt(py) {
            Ok(None) => Ok(()),
            Ok(Some(value)) => Self::finish(slf, Ok(value)),
            Err(err) if must_propagate(py, &err) => Err(err),
            Err(err) => Self::finish(slf, Err(err)),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.fut)?;
        visit.call(&self.sock)?;
        if let Some(h) = self.handle.peek() {
            if let Some(h) = h.as_ref() {
                visit.call(h)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // The future's own clear breaks the cycle through its callbacks.
        let h = self.handle.try_mut().ok().and_then(|mut h| h.take());
        drop(h);
    }
}

/// A non-negative exact int that fits a `Py_ssize_t`, else None.
fn size_arg(n: &Bound<'_, PyAny>) -> Option<usize> {
    let n = n.cast_exact::<PyInt>().ok()?.extract::<isize>().ok()?;
    usize::try_from(n).ok()
}

/// `sock.recv(n)` now: the `bytes`, a future of them if it would block, or
/// `NotImplemented` when the Python path must run.
#[pyfunction]
pub fn _sock_recv<'py>(
    lp: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let (Some(n), Some(fd)) = (size_arg(n), plain_fd(lp, sock)?) else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    match recv_once(py, fd, n)? {
        Outcome::Done(data) => Ok(data),
        Outcome::WouldBlock => SockWaiter::start(lp, sock, fd, false, Op::Recv(n)),
    }
}

/// `sock.send(data)` now: None if all of `data` went, else a future of the rest being
/// sent, or `NotImplemented` when the Python path must run (`data` not `bytes`, ...).
#[pyfunction]
pub fn _sock_sendall<'py>(
    lp: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let (Ok(bytes), Some(fd)) = (data.cast_exact::<PyBytes>(), plain_fd(lp, sock)?) else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    let buf = bytes.as_bytes();
    let sent = match send_once(py, fd, buf)? {
        Outcome::Done(sent) => sent,
        Outcome::WouldBlock => 0,
    };
    if sent == buf.len() {
        return Ok(py.None().into_bound(py));
    }
    let op = Op::Send(bytes.clone().unbind(), GilCell::new(sent));
    SockWaiter::start(lp, sock, fd, true, op)
}

/// Add the fast paths and the waiter type to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SockWaiter>()?;
    m.add_function(wrap_pyfunction!(_sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(_sock_sendall, m)?)?;
    Ok(())
}
