//! `DatagramTransport`: the asyncio datagram transport over a UDP or Unix datagram socket.
//!
//! Behaves as the stock selector datagram transport: `sendto` tries the socket at once and
//! queues `(data, addr)` only when it would block (sent when the socket is writable, with
//! `pause_writing`/`resume_writing` at the high/low water marks); each readable event
//! receives one datagram for `protocol.datagram_received(data, addr)`; an `OSError` of a
//! send or receive goes to `protocol.error_received(exc)` and the transport stays open.
//! For AF_INET/AF_INET6 the system calls and the address conversions are done here (the
//! addresses as Python's socket module gives them); any other family, and any address
//! this module does not parse (host names, scope names), goes through the socket's own
//! Python `sendto`/`recvfrom`. The Python subclass (`oxloop._datagram`) adds the
//! construction glue, `__repr__` and `__del__`.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::RawFd;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::errors::must_propagate;
use crate::event_loop::LoopCore;
use crate::transport::{
    log_fatal_os_error, logger, loop_core, loop_object, notify_flow, report, with_read_buf,
    FlowChange, FlowControl, Links, LOG_THRESHOLD_FOR_CONNLOST_WRITES, MAX_READ,
};
use crate::wbuf::{is_retry, os_error, ByteView};

/// Per queued datagram, 3.13+ counts this much on top of the payload (the UDP header).
const HEADER_SIZE: usize = 8;

/// How one send or receive ended.
enum Outcome<T> {
    Done(T),
    /// EAGAIN/EINTR: try again when the socket is ready.
    Retry,
    /// An `OSError`: for `protocol.error_received`.
    OsError(PyErr),
    /// Anything else (a bad address given to the Python fallback): fatal.
    Fatal(PyErr),
}

fn classify<T>(py: Python<'_>, err: PyErr) -> PyResult<Outcome<T>> {
    if must_propagate(py, &err) {
        return Err(err);
    }
    if err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py) {
        return Ok(Outcome::Retry);
    }
    if err.is_instance_of::<PyOSError>(py) {
        return Ok(Outcome::OsError(err));
    }
    Ok(Outcome::Fatal(err))
}

fn from_io<T>(r: std::io::Result<T>) -> Outcome<T> {
    match r {
        Ok(v) => Outcome::Done(v),
        Err(e) if is_retry(&e) => Outcome::Retry,
        Err(e) => Outcome::OsError(os_error(&e)),
    }
}

/// A socket address built from a Python address tuple.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

// The C library's conversions, exactly what Python's socket module uses.
extern "C" {
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

fn pton(family: i32, host: &str, dst: *mut libc::c_void) -> bool {
    let Ok(c) = CString::new(host) else {
        return false;
    };
    unsafe { inet_pton(family, c.as_ptr(), dst) == 1 }
}

fn int_in<T: TryFrom<i64>>(obj: &Bound<'_, PyAny>, max: i64) -> Option<T> {
    if !obj.is_instance_of::<PyInt>() {
        return None;
    }
    let v: i64 = obj.extract().ok()?;
    if !(0..=max).contains(&v) {
        return None;
    }
    T::try_from(v).ok()
}

/// The sockaddr for a numeric `(host, port)` (AF_INET) or `(host, port[, flowinfo[,
/// scope_id]])` (AF_INET6) with every field in range; None for anything else, which the
/// socket's own `sendto` then resolves or rejects with the stock error.
fn parse_addr(family: i32, addr: &Bound<'_, PyAny>) -> Option<RawAddr> {
    let t = addr.cast::<PyTuple>().ok()?;
    let n = t.len();
    let host_obj = t.get_item(0).ok()?;
    let host = host_obj.cast::<PyString>().ok()?;
    let host = host.to_str().ok()?;
    let port: u16 = int_in(&t.get_item(1).ok()?, 0xffff)?;
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if family == libc::AF_INET && n == 2 {
        let sa = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        if !pton(
            libc::AF_INET,
            host,
            &mut sa.sin_addr as *mut _ as *mut libc::c_void,
        ) {
            return None;
        }
        return Some(RawAddr {
            storage,
            len: std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        });
    }
    if family == libc::AF_INET6 && (2..=4).contains(&n) {
        let flowinfo: u32 = if n > 2 {
            int_in(&t.get_item(2).ok()?, 0xfffff)?
        } else {
            0
        };
        let scope_id: u32 = if n > 3 {
            int_in(&t.get_item(3).ok()?, u32::MAX as i64)?
        } else {
            0
        };
        let sa = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        sa.sin6_flowinfo = flowinfo.to_be();
        sa.sin6_scope_id = scope_id;
        if !pton(
            libc::AF_INET6,
            host,
            &mut sa.sin6_addr as *mut _ as *mut libc::c_void,
        ) {
            return None;
        }
        return Some(RawAddr {
            storage,
            len: std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        });
    }
    None
}

fn ntop(family: i32, src: *const libc::c_void) -> String {
    let mut buf = [0 as libc::c_char; 64];
    let p = unsafe { inet_ntop(family, src, buf.as_mut_ptr(), buf.len() as libc::socklen_t) };
    if p.is_null() {
        return String::new();
    }
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A received sockaddr as Python's socket module gives it.
fn addr_to_py(
    py: Python<'_>,
    ss: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> PyResult<Py<PyAny>> {
    if len == 0 {
        return Ok(py.None());
    }
    match ss.ss_family as i32 {
        libc::AF_INET => {
            let sa = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let host = ntop(
                libc::AF_INET,
                &sa.sin_addr as *const _ as *const libc::c_void,
            );
            Ok((host, u16::from_be(sa.sin_port))
                .into_pyobject(py)?
                .into_any()
                .unbind())
        }
        libc::AF_INET6 => {
            let sa = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let host = ntop(
                libc::AF_INET6,
                &sa.sin6_addr as *const _ as *const libc::c_void,
            );
            Ok((
                host,
                u16::from_be(sa.sin6_port),
                u32::from_be(sa.sin6_flowinfo),
                sa.sin6_scope_id,
            )
                .into_pyobject(py)?
                .into_any()
                .unbind())
        }
        _ => Ok(py.None()),
    }
}

struct Queued {
    data: Py<PyBytes>,
    addr: Option<Py<PyAny>>,
}

struct State {
    loop_: Option<Py<LoopCore>>,
    sock: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    /// The `remote_addr` the endpoint was made for (sends go there).
    address: Option<Py<PyAny>>,
    protocol_connected: bool,
    conn_lost: u32,
    closing: bool,
    paused: bool,
    reading: bool,
    writing: bool,
    flow: FlowControl,
    queue: VecDeque<Queued>,
    queued_size: usize,
}

#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct DatagramTransport {
    fd: RawFd,
    family: i32,
    /// The socket had a peer when the transport was made: send without an address.
    connected: bool,
    /// 3.13+: empty datagrams are sent, and each queued one counts its header.
    py313: bool,
    st: GilCell<State>,
}

impl DatagramTransport {
    fn inet(&self) -> bool {
        self.family == libc::AF_INET || self.family == libc::AF_INET6
    }

    fn core<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        loop_core(py, &self.st.try_ref()?.loop_)
    }

    fn debug(&self, py: Python<'_>) -> bool {
        self.core(py).map(|c| c.get().debug()).unwrap_or(false)
    }

    fn entry_size(&self, data: usize) -> usize {
        if self.py313 {
            data + HEADER_SIZE
        } else {
            data
        }
    }

    fn watch(slf: &Bound<'_, Self>, writer: bool, on: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut st = this.st.try_mut()?;
        let flag = if writer {
            &mut st.writing
        } else {
            &mut st.reading
        };
        if *flag == on {
            return Ok(());
        }
        *flag = on;
        let core = loop_core(py, &st.loop_)?;
        drop(st);
        if on {
            let name = if writer {
                intern!(py, "_sendto_ready")
            } else {
                intern!(py, "_read_ready")
            };
            let cb = slf.getattr(name)?;
            LoopCore::watch_fd(&core, this.fd, &cb, writer, false, None)
        } else {
            LoopCore::unwatch_fd(&core, this.fd, writer)
        }
    }

    fn call_soon(slf: &Bound<'_, Self>, method: &str, arg: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get().core(py)?;
        let cb = slf.getattr(method)?;
        LoopCore::soon(&core, &cb, PyTuple::new(py, [arg])?, None)
    }

    fn protocol(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self
            .st
            .try_ref()?
            .protocol
            .as_ref()
            .map(|p| p.clone_ref(py)))
    }

    fn sock(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.st.try_ref()?.sock.as_ref().map(|s| s.clone_ref(py)))
    }

    /// `protocol.error_received(exc)`; its own errors propagate to the caller, as stock.
    fn error_received(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if let Some(p) = slf.get().protocol(py)? {
            p.bind(py)
                .call_method1(intern!(py, "error_received"), (err.into_value(py),))?;
        }
        Ok(())
    }

    /// A non-OSError of the socket: report it (OSErrors only in debug mode) and close.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        if err.is_instance_of::<PyOSError>(py) {
            if slf.get().debug(py) {
                log_fatal_os_error(slf, &err, message)?;
            }
        } else {
            Self::report(slf, &err, message)?;
        }
        Self::force_close(slf, Some(err.into_value(py).into_any()))
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let (had_queue, was_closing) = {
            let mut st = slf.get().st.try_mut()?;
            if st.conn_lost > 0 {
                return Ok(());
            }
            let had = !st.queue.is_empty();
            st.queue.clear();
            st.queued_size = 0;
            let was = st.closing;
            st.closing = true;
            st.conn_lost += 1;
            (had, was)
        };
        if had_queue {
            Self::watch(slf, true, false)?;
        }
        if !was_closing {
            Self::watch(slf, false, false)?;
        }
        Self::call_soon(
            slf,
            "_call_connection_lost",
            exc.unwrap_or_else(|| py.None()),
        )
    }

    /// One datagram out: a system call for AF_INET/AF_INET6, else the socket's `sendto`.
    fn send_one(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        bytes: &[u8],
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Outcome<usize>> {
        if !self.inet() {
            return self.send_py(py, data, addr);
        }
        let raw = if self.connected {
            None
        } else {
            match addr.and_then(|a| parse_addr(self.family, a)) {
                Some(raw) => Some(raw),
                None => return self.send_py(py, data, addr),
            }
        };
        let n = unsafe {
            let buf = bytes.as_ptr() as *const libc::c_void;
            match &raw {
                None => libc::send(self.fd, buf, bytes.len(), libc::MSG_NOSIGNAL),
                Some(a) => libc::sendto(
                    self.fd,
                    buf,
                    bytes.len(),
                    libc::MSG_NOSIGNAL,
                    &a.storage as *const _ as *const libc::sockaddr,
                    a.len,
                ),
            }
        };
        let r = if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
        Ok(from_io(r))
    }

    fn send_py(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Outcome<usize>> {
        let Some(sock) = self.sock(py)? else {
            return Ok(Outcome::Fatal(PyRuntimeError::new_err(
                "the transport is closed",
            )));
        };
        let sock = sock.bind(py);
        let r = if self.connected {
            sock.call_method1(intern!(py, "send"), (data,))
        } else {
            sock.call_method1(intern!(py, "sendto"), (data, addr))
        };
        match r {
            Ok(n) => Ok(Outcome::Done(n.extract().unwrap_or(0))),
            Err(e) => classify(py, e),
        }
    }

    /// One datagram in: `(data, addr)`.
    fn recv_one(&self, py: Python<'_>) -> PyResult<Outcome<(Py<PyAny>, Py<PyAny>)>> {
        if !self.inet() {
            let Some(sock) = self.sock(py)? else {
                return Ok(Outcome::Retry);
            };
            return match sock
                .bind(py)
                .call_method1(intern!(py, "recvfrom"), (MAX_READ,))
            {
                Ok(pair) => {
                    let (data, addr): (Py<PyAny>, Py<PyAny>) = pair.extract()?;
                    Ok(Outcome::Done((data, addr)))
                }
                Err(e) => classify(py, e),
            };
        }
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let got = with_read_buf(|buf| {
            let n = unsafe {
                libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut ss as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(PyBytes::new(py, &buf[..n as usize]).into_any().unbind())
            }
        })?;
        let data = match got {
            Ok(d) => d,
            Err(e) => return Ok(from_io(Err(e))),
        };
        Ok(Outcome::Done((data, addr_to_py(py, &ss, len)?)))
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let change = {
            let mut st = slf.get().st.try_mut()?;
            let size = st.queued_size;
            st.flow.grown(size)
        };
        Self::notify(slf, change)
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let change = {
            let mut st = slf.get().st.try_mut()?;
            let size = st.queued_size;
            st.flow.shrunk(size)
        };
        Self::notify(slf, change)
    }

    fn notify(slf: &Bound<'_, Self>, change: FlowChange) -> PyResult<()> {
        if matches!(change, FlowChange::None) {
            return Ok(());
        }
        let (lp, protocol) = slf.get().links(slf.py())?;
        notify_flow(slf, change, lp, protocol)
    }

    /// `loop.call_exception_handler` with the transport and protocol.
    fn report(slf: &Bound<'_, Self>, err: &PyErr, message: &str) -> PyResult<()> {
        let (lp, protocol) = slf.get().links(slf.py())?;
        report(slf, lp, protocol, err, message)
    }

    /// The loop and the protocol, for calls made without the state borrowed.
    fn links(&self, py: Python<'_>) -> PyResult<Links> {
        let st = self.st.try_ref()?;
        Ok((
            loop_object(py, &st.loop_),
            st.protocol.as_ref().map(|p| p.clone_ref(py)),
        ))
    }

    fn call_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, connected) = {
            let st = this.st.try_ref()?;
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.protocol_connected,
            )
        };
        let result = match protocol {
            Some(p) if connected => p
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
                .map(drop),
            _ => Ok(()),
        };
        let (sock, lp) = {
            let mut st = this.st.try_mut()?;
            st.protocol = None;
            (st.sock.take(), st.loop_.take())
        };
        if let Some(lp) = &lp {
            if let Ok(core) = lp.bind(py).cast::<LoopCore>() {
                core.get().note_transport(-1);
            }
        }
        let closed = match sock {
            Some(s) => s.bind(py).call_method0("close").map(drop),
            None => Ok(()),
        };
        drop(lp);
        result.and(closed)
    }
}

#[pymethods]
impl DatagramTransport {
    /// `address`: the remote address sends go to (None: each `sendto` names one);
    /// `connected`: the socket has a peer. The Python subclass finishes the set-up.
    #[new]
    #[pyo3(signature = (loop_, sock, protocol, address=None, extra=None, connected=false))]
    fn new(
        py: Python<'_>,
        loop_: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        address: Option<Py<PyAny>>,
        extra: Option<Bound<'_, PyDict>>,
        connected: bool,
    ) -> PyResult<Self> {
        let core = loop_.cast::<LoopCore>()?;
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let family: i32 = sock.getattr("family")?.extract()?;
        core.get().note_transport(1);
        Ok(DatagramTransport {
            fd,
            family,
            connected,
            py313: py.version_info() >= (3, 13),
            st: GilCell::new(State {
                loop_: Some(core.clone().unbind()),
                sock: Some(sock.clone().unbind()),
                protocol: Some(protocol.clone().unbind()),
                extra: Some(extra.unwrap_or_else(|| PyDict::new(py)).unbind()),
                address: address.filter(|a| !a.is_none(py)),
                protocol_connected: true,
                conn_lost: 0,
                closing: false,
                paused: false,
                reading: false,
                writing: false,
                flow: FlowControl::default(),
                queue: VecDeque::new(),
                queued_size: 0,
            }),
        })
    }

    /// Start reading, unless paused or closed meanwhile (scheduled after
    /// `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if !slf.get().is_reading()? {
            return Ok(());
        }
        Self::watch(slf, false, true)
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.st.try_ref()?.conn_lost > 0 {
            return Ok(());
        }
        match this.recv_one(py)? {
            Outcome::Retry => Ok(()),
            Outcome::OsError(e) => Self::error_received(slf, e),
            Outcome::Fatal(e) => {
                Self::fatal_error(slf, e, "Fatal read error on datagram transport")
            }
            Outcome::Done((data, addr)) => {
                if let Ok(core) = this.core(py) {
                    let n = data.bind(py).len().unwrap_or(0);
                    core.get().note_io(n, 0);
                }
                let Some(p) = this.protocol(py)? else {
                    return Ok(());
                };
                p.bind(py)
                    .call_method1(intern!(py, "datagram_received"), (data, addr))
                    .map(drop)
            }
        }
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        let view = ByteView::new(data)?;
        if view.as_slice().is_empty() && !this.py313 {
            return Ok(());
        }
        let mut addr = addr.filter(|a| !a.is_none());
        let address = this.st.try_ref()?.address.as_ref().map(|a| a.clone_ref(py));
        if let Some(address) = address {
            let address = address.bind(py);
            if address.is_truthy()? {
                if let Some(a) = &addr {
                    if !a.is(address) && !a.eq(address)? {
                        return Err(PyValueError::new_err(format!(
                            "Invalid address: must be None or {}",
                            address.str()?
                        )));
                    }
                }
                addr = Some(address.clone());
                let mut st = this.st.try_mut()?;
                if st.conn_lost > 0 {
                    if st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                        logger(py)?
                            .call_method1("warning", ("socket.send() raised exception.",))?;
                    }
                    st.conn_lost += 1;
                    return Ok(());
                }
            }
        }
        let (queue_empty, has_sock) = {
            let st = this.st.try_ref()?;
            (st.queue.is_empty(), st.sock.is_some())
        };
        if !has_sock {
            // After connection_lost: nothing can be sent any more.
            let mut st = this.st.try_mut()?;
            st.conn_lost += 1;
            return Ok(());
        }
        if queue_empty {
            match this.send_one(py, data, view.as_slice(), addr.as_ref())? {
                Outcome::Done(n) => {
                    if let Ok(core) = this.core(py) {
                        core.get().note_io(0, n);
                    }
                    return Ok(());
                }
                Outcome::Retry => Self::watch(slf, true, true)?,
                Outcome::OsError(e) => return Self::error_received(slf, e),
                Outcome::Fatal(e) => {
                    return Self::fatal_error(slf, e, "Fatal write error on datagram transport")
                }
            }
        }
        let bytes = PyBytes::new(py, view.as_slice()).unbind();
        drop(view);
        {
            let mut st = this.st.try_mut()?;
            let size = this.entry_size(bytes.as_bytes(py).len());
            st.queue.push_back(Queued {
                data: bytes,
                addr: addr.map(Bound::unbind),
            });
            st.queued_size += size;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn _sendto_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let item = {
                let mut st = this.st.try_mut()?;
                let Some(item) = st.queue.pop_front() else {
                    break;
                };
                st.queued_size -= this.entry_size(item.data.as_bytes(py).len());
                item
            };
            let data = item.data.bind(py);
            let addr = item.addr.as_ref().map(|a| a.bind(py).clone());
            match this.send_one(py, data.as_any(), data.as_bytes(), addr.as_ref())? {
                Outcome::Done(n) => {
                    if let Ok(core) = this.core(py) {
                        core.get().note_io(0, n);
                    }
                }
                Outcome::Retry => {
                    let mut st = this.st.try_mut()?;
                    st.queued_size += this.entry_size(item.data.as_bytes(py).len());
                    st.queue.push_front(item);
                    break;
                }
                Outcome::OsError(e) => return Self::error_received(slf, e),
                Outcome::Fatal(e) => {
                    return Self::fatal_error(slf, e, "Fatal write error on datagram transport")
                }
            }
        }
        Self::maybe_resume_protocol(slf)?;
        let (empty, closing) = {
            let st = this.st.try_ref()?;
            (st.queue.is_empty(), st.closing)
        };
        if empty {
            Self::watch(slf, true, false)?;
            if closing {
                let first = {
                    let mut st = this.st.try_mut()?;
                    st.conn_lost += 1;
                    st.conn_lost == 1
                };
                if first {
                    Self::call_connection_lost(slf, py.None())?;
                }
            }
        }
        Ok(())
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let lost = {
            let mut st = slf.get().st.try_mut()?;
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if st.queue.is_empty() {
                st.conn_lost += 1;
                true
            } else {
                false
            }
        };
        Self::watch(slf, false, false)?;
        if lost {
            Self::watch(slf, true, false)?;
            Self::call_soon(slf, "_call_connection_lost", slf.py().None())?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    #[pyo3(signature = (exc, message="Fatal error on transport"))]
    fn _fatal_error(slf: &Bound<'_, Self>, exc: &Bound<'_, PyAny>, message: &str) -> PyResult<()> {
        Self::fatal_error(slf, PyErr::from_value(exc.clone()), message)
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let exc = if exc.is_none(slf.py()) {
            None
        } else {
            Some(exc)
        };
        Self::force_close(slf, exc)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        Self::call_connection_lost(slf, exc)
    }

    fn is_closing(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.closing)
    }

    fn is_reading(&self) -> PyResult<bool> {
        let st = self.st.try_ref()?;
        Ok(!st.closing && !st.paused)
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if !this.is_reading()? {
            return Ok(());
        }
        this.st.try_mut()?.paused = true;
        Self::watch(slf, false, false)?;
        if this.debug(slf.py()) {
            logger(slf.py())?.call_method1("debug", ("%r pauses reading", slf))?;
        }
        Ok(())
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        {
            let mut st = this.st.try_mut()?;
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::watch(slf, false, true)?;
        if this.debug(slf.py()) {
            logger(slf.py())?.call_method1("debug", ("%r resumes reading", slf))?;
        }
        Ok(())
    }

    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut st = self.st.try_mut()?;
        st.protocol = Some(protocol.clone().unbind());
        st.protocol_connected = true;
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.protocol(py)?.unwrap_or_else(|| py.None()))
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = self.st.try_ref()?.extra.as_ref().map(|e| e.clone_ref(py));
        if let Some(extra) = extra {
            if let Some(v) = extra.bind(py).get_item(name)? {
                return Ok(v.unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    #[getter]
    fn _extra(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        Ok(self.st.try_ref()?.extra.as_ref().map(|e| e.clone_ref(py)))
    }

    fn get_write_buffer_size(&self) -> PyResult<usize> {
        Ok(self.st.try_ref()?.queued_size)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        self.st.try_ref()?.flow.limits(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<&Bound<'_, PyAny>>,
        low: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        slf.get()
            .st
            .try_mut()?
            .flow
            .set_limits(slf.py(), high, low)?;
        Self::maybe_pause_protocol(slf)
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.sock(py)
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(loop_object(py, &self.st.try_ref()?.loop_))
    }

    #[getter]
    fn _protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.get_protocol(py)
    }

    #[getter]
    fn _address(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.st.try_ref()?.address.as_ref().map(|a| a.clone_ref(py)))
    }

    #[getter]
    fn _conn_lost(&self) -> PyResult<u32> {
        Ok(self.st.try_ref()?.conn_lost)
    }

    #[getter]
    fn _closing(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.closing)
    }

    #[getter]
    fn _paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.paused)
    }

    #[getter]
    fn _protocol_paused(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.flow.paused)
    }

    /// `read=polling|idle write=<polling|idle, bufsize=N>`, as the stock repr shows.
    fn _state_repr(&self) -> PyResult<String> {
        let st = self.st.try_ref()?;
        Ok(format!(
            "read={} write=<{}, bufsize={}>",
            if st.reading { "polling" } else { "idle" },
            if st.writing { "polling" } else { "idle" },
            st.queued_size
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.st.peek() {
            if let Some(l) = &st.loop_ {
                visit.call(l)?;
            }
            for o in [&st.sock, &st.protocol, &st.address].into_iter().flatten() {
                visit.call(o)?;
            }
            if let Some(e) = &st.extra {
                visit.call(e)?;
            }
            for q in &st.queue {
                if let Some(a) = &q.addr {
                    visit.call(a)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = match self.st.try_mut() {
            Ok(mut st) => (
                st.loop_.take(),
                st.protocol.take(),
                st.extra.take(),
                st.address.take(),
                std::mem::take(&mut st.queue),
            ),
            Err(_) => return,
        };
        drop(taken);
    }
}
