//! `StreamTransport`: the asyncio stream transport over a connected socket (TCP or Unix)
//! or a pipe, as the stock selector transports behave.
//!
//! Reads go into one loop-wide reused buffer and reach the protocol as `bytes`
//! (`data_received`) or straight into the protocol's own buffer (`BufferedProtocol`).
//! Writes try the fd at once and queue only the rest (`WriteQueue`, sent vectored when
//! the fd is writable), with `pause_writing`/`resume_writing` at the high/low water
//! marks. Errors, messages and the order of protocol calls follow the stock transports.
//! The Python subclasses (`oxloop._transports`) add construction glue and `__del__`.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{intern, Borrowed, PyTraverseError, PyVisit};

use crate::cell::GilCell;
use crate::entries::{call_generic, guarded, into_ptr};
use crate::errors::must_propagate;
use crate::event_loop::install_method;
use crate::event_loop::LoopCore;
use crate::handles::{Args, Handle, Slots};
use crate::helpers;
use crate::sockaddr::Addr;
use crate::tls::TlsProtocol;
use crate::transport::{
    log_fatal_os_error, logger, loop_core, loop_object, notify_flow, read_bytes, recycle_bytes,
    report, FlowChange, FlowControl, Limits, Links, DEFAULT_HIGH,
    LOG_THRESHOLD_FOR_CONNLOST_WRITES, MAX_READ,
};
use crate::wbuf::{is_retry, os_error, send_once, ByteView, Sink, WriteQueue};

static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn is_buffered(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = protocol.py();
    let cls = BUFFERED_PROTOCOL.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("asyncio.protocols")?
                .getattr("BufferedProtocol")?
                .unbind(),
        )
    })?;
    protocol.is_instance(cls.bind(py))
}

static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The extra info of an IPv4 socket, kept compact: `socket` is made when asked for, and
/// the addresses were taken at construction, as stock.
struct LazyExtra {
    sockname: Addr,
    peername: Addr,
    /// The caller gave `peername` (accept): it comes first in the dict, as stock.
    peer_first: bool,
}

impl LazyExtra {
    /// `given`: the extra the caller passed (at most `peername`).
    fn new(
        sock: &Bound<'_, PyAny>,
        fd: RawFd,
        given: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let eager = |method: &str| match sock.call_method0(method) {
            Ok(v) => Ok(Addr::Obj(v.unbind())),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOSError>(sock.py()) => {
                Ok(Addr::Missing)
            }
            Err(e) => Err(e),
        };
        let sockname = match Addr::query(fd, false) {
            Some(a) => a,
            None => eager("getsockname")?,
        };
        let given = match given {
            Some(d) => d.get_item("peername")?,
            None => None,
        };
        let peer_first = given.is_some();
        let peername = match (given, Addr::query(fd, true)) {
            // The address accept() returned: the same as getpeername() gives.
            (Some(v), Some(a @ Addr::V4(..))) if v.is_instance_of::<PyTuple>() => a,
            (Some(v), _) => Addr::Obj(v.unbind()),
            (None, Some(a)) => a,
            (None, None) => eager("getpeername")?,
        };
        Ok(LazyExtra {
            sockname,
            peername,
            peer_first,
        })
    }

    fn build<'py>(
        &self,
        py: Python<'py>,
        sock: Option<&Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if self.peer_first {
            d.set_item("peername", self.peername.value(py)?)?;
        }
        if let Some(sock) = sock {
            let cls = TRANSPORT_SOCKET.import(py, "asyncio.trsock", "TransportSocket")?;
            d.set_item("socket", cls.call1((sock,))?)?;
        }
        d.set_item("sockname", self.sockname.value(py)?)?;
        if !self.peer_first {
            d.set_item("peername", self.peername.value(py)?)?;
        }
        Ok(d)
    }
}

/// What kind of fd the transport drives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Socket,
    /// The read end of a pipe (or a character device): read-only.
    ReadPipe,
    /// The write end of a pipe: write-only; readable means the reader went away.
    WritePipe,
}

struct State {
    loop_: Option<Py<LoopCore>>,
    sock: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    server: Option<Py<PyAny>>,
    extra: Option<Py<PyDict>>,
    /// A TCP socket's extra info until someone asks for it (then `extra`).
    lazy: Option<LazyExtra>,
    empty_waiter: Option<Py<PyAny>>,
    /// The context the transport's callbacks run in (3.15, gh-140947: given at creation),
    /// or None for a copy of the current one at each watch or call, as before 3.15.
    context: Option<Py<PyAny>>,
    buffered: bool,
    protocol_connected: bool,
    conn_lost: u32,
    closing: bool,
    paused: bool,
    eof: bool,
    reading: bool,
    writing: bool,
    /// Bumped by each start of watching: tells a queued event of an earlier watch.
    read_gen: u32,
    write_gen: u32,
    flow: FlowControl,
    wbuf: WriteQueue,
}

#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref)]
pub struct StreamTransport {
    fd: RawFd,
    kind: Kind,
    st: GilCell<State>,
}

impl StreamTransport {
    fn sink(&self) -> Sink {
        if self.kind == Kind::Socket {
            Sink::Socket
        } else {
            Sink::Pipe
        }
    }

    /// The extra info dict, built now if it was kept compact.
    fn extra_dict<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let built = {
            let st = self.st.try_ref()?;
            if let Some(e) = &st.extra {
                return Ok(Some(e.bind(py).clone()));
            }
            match &st.lazy {
                None => return Ok(None),
                Some(lazy) => lazy.build(py, st.sock.as_ref())?,
            }
        };
        let mut st = self.st.try_mut()?;
        st.lazy = None;
        st.extra = Some(built.clone().unbind());
        Ok(Some(built))
    }

    fn core<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        loop_core(py, &self.st.try_ref()?.loop_)
    }

    fn set_reading(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        Self::set_watching(slf, false, on)
    }

    fn set_writing(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        Self::set_watching(slf, true, on)
    }

    /// Start or stop watching the fd for readability (or writability). The loop calls
    /// the handler natively; in debug mode through a handle, as stock (which records
    /// where it was created).
    fn set_watching(slf: &Bound<'_, Self>, writer: bool, on: bool) -> PyResult<()> {
        let this = slf.get();
        let mut guard = this.st.try_mut()?;
        let st = &mut *guard;
        let (flag, gen) = if writer {
            (&mut st.writing, &mut st.write_gen)
        } else {
            (&mut st.reading, &mut st.read_gen)
        };
        if *flag == on {
            return Ok(());
        }
        *flag = on;
        *gen = gen.wrapping_add(on as u32);
        let gen = *gen;
        let core = loop_core(slf.py(), &st.loop_)?;
        let context = on
            .then(|| st.context.as_ref().map(|c| c.clone_ref(slf.py())))
            .flatten();
        drop(guard);
        if !on {
            LoopCore::unwatch_fd(&core, this.fd, writer)
        } else if core.get().debug() {
            let cb = slf.getattr(Self::handler_name(slf.py(), writer))?;
            LoopCore::watch_fd(&core, this.fd, &cb, writer, true, context)
        } else {
            LoopCore::watch_transport(&core, this.fd, slf, writer, gen, context)
        }
    }

    fn handler_name(py: Python<'_>, writer: bool) -> &Bound<'_, PyString> {
        if writer {
            intern!(py, "_write_ready")
        } else {
            intern!(py, "_read_ready")
        }
    }

    /// Whether a queued event of watch `gen` is still wanted (the loop's counterpart of
    /// a cancelled handle).
    #[inline]
    pub fn io_live(&self, writer: bool, gen: u32) -> bool {
        match self.st.try_ref() {
            Ok(st) if writer => st.writing && st.write_gen == gen,
            Ok(st) => st.reading && st.read_gen == gen,
            Err(_) => false,
        }
    }

    /// Run the read (or write) handler in `context`, as the handle of the event would:
    /// only `SystemExit`/`KeyboardInterrupt` come back as `Err`, any other exception goes
    /// to the loop's exception handler.
    pub fn run_io(
        slf: &Bound<'_, Self>,
        core: &Bound<'_, LoopCore>,
        writer: bool,
        context: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let result = if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
            Err(PyErr::fetch(py))
        } else {
            let r = if writer {
                Self::flush(slf)
            } else {
                Self::read_ready(slf)
            };
            unsafe { ffi::PyContext_Exit(context.as_ptr()) };
            r
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if must_propagate(py, &e) => Err(e),
            Err(e) => {
                let handle = Self::io_handle(slf, core, writer, context.clone().unbind())?;
                let cb = slf.getattr(Self::handler_name(py, writer))?;
                let source = helpers::get(py)?
                    .format_callback_source
                    .call1(py, (cb, PyTuple::empty(py), core.get().debug()))?;
                let ctx = PyDict::new(py);
                ctx.set_item("message", format!("Exception in callback {source}"))?;
                ctx.set_item("exception", e.value(py))?;
                ctx.set_item("handle", handle)?;
                core.call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
                Ok(())
            }
        }
    }

    /// `io_handle` for a stall report about an event of this transport's (in the
    /// current context: the report shows the callback, not its context).
    pub fn report_handle(slf: &Bound<'_, Self>, writer: bool) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get().core(py)?;
        let context =
            unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? }.unbind();
        Self::io_handle(slf, &core, writer, context)
    }

    /// The handle an event stands for (`<Handle TCPTransport._read_ready()>`), for
    /// reports and the watchdog.
    pub fn io_handle(
        slf: &Bound<'_, Self>,
        core: &Bound<'_, LoopCore>,
        writer: bool,
        context: Py<PyAny>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let cb = slf.getattr(Self::handler_name(py, writer))?;
        let slots = Slots::new(
            py,
            cb.unbind(),
            Args::Empty,
            Some(context),
            core.clone().unbind(),
            None,
        )?;
        Py::new(py, Handle::with_slots(slots))
    }

    fn call_soon(slf: &Bound<'_, Self>, method: &Bound<'_, PyAny>, arg: Py<PyAny>) -> PyResult<()> {
        let core = slf.get().core(slf.py())?;
        let args = PyTuple::new(slf.py(), [arg])?;
        LoopCore::soon(&core, method, args, slf.get().context(slf.py())?)
    }

    /// The context given at creation (3.15), for a callback to run in.
    fn context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.st.try_ref()?.context.as_ref().map(|c| c.clone_ref(py)))
    }

    fn debug(&self, py: Python<'_>) -> bool {
        self.core(py).map(|c| c.get().debug()).unwrap_or(false)
    }

    fn log_debug(slf: &Bound<'_, Self>, fmt: &str, exc: Option<&PyErr>) -> PyResult<()> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        if let Some(e) = exc {
            kwargs.set_item("exc_info", e.value(py))?;
        }
        logger(py)?.call_method("debug", (fmt, slf), Some(&kwargs))?;
        Ok(())
    }

    /// A protocol or I/O error: report it (OSErrors only in debug mode) and close.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let mut quiet = err.is_instance_of::<pyo3::exceptions::PyOSError>(py);
        if quiet && slf.get().kind == Kind::ReadPipe {
            // A read pipe reports every OSError but EIO (a closed pty).
            let errno = err.value(py).getattr("errno")?;
            quiet = errno.extract::<i32>().ok() == Some(libc::EIO);
        }
        if quiet {
            if slf.get().debug(py) {
                log_fatal_os_error(slf, &err, message)?;
            }
        } else {
            Self::report(slf, &err, message)?;
        }
        Self::force_close(slf, Some(err.into_value(py).into_any()))
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

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (had_buffer, was_closing) = {
            let mut st = this.st.try_mut()?;
            if st.conn_lost > 0 {
                return Ok(());
            }
            let had = !st.wbuf.is_empty();
            st.wbuf.clear();
            let was = st.closing;
            st.closing = true;
            st.conn_lost += 1;
            (had, was)
        };
        if had_buffer {
            Self::set_writing(slf, false)?;
        }
        if !was_closing {
            Self::set_reading(slf, false)?;
        }
        let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
        Self::call_soon(slf, &cb, exc.unwrap_or_else(|| py.None()))
    }

    fn read_error(&self) -> &'static str {
        if self.kind == Kind::Socket {
            "Fatal read error on socket transport"
        } else {
            "Fatal read error on pipe transport"
        }
    }

    fn write_error(&self) -> &'static str {
        if self.kind == Kind::Socket {
            "Fatal write error on socket transport"
        } else {
            "Fatal write error on pipe transport"
        }
    }

    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, buffered, core) = {
            let st = this.st.try_ref()?;
            if st.conn_lost > 0 {
                return Ok(());
            }
            let Some(p) = st.protocol.as_ref() else {
                return Ok(());
            };
            let core = st.loop_.as_ref().map(|l| l.bind(py).clone());
            (p.bind(py).clone(), st.buffered, core)
        };
        if this.kind == Kind::WritePipe {
            // The reader closed its end: nothing more can be written.
            let err = pyo3::exceptions::PyBrokenPipeError::new_err(());
            let had_buffer = !this.st.try_ref()?.wbuf.is_empty();
            if had_buffer {
                return Self::force_close(slf, Some(err.into_value(py).into_any()));
            }
            return Self::close_impl(slf);
        }
        if buffered {
            Self::read_buffered(slf, &protocol)
        } else {
            Self::read_data(slf, &protocol, core)
        }
    }

    fn read_data(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        core: Option<Bound<'_, LoopCore>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = read_bytes(py, this.fd)?;
        match result {
            Err(e) if is_retry(&e) => Ok(()),
            Err(e) => Self::fatal_error(slf, os_error(&e), this.read_error()),
            Ok(None) => Self::on_eof(slf, protocol),
            Ok(Some((n, data))) => {
                if let Some(core) = core {
                    core.get().note_io(n, 0);
                    if n == MAX_READ {
                        // Maybe more to read: have the poll report the fd again.
                        core.get().rearm_fd(this.fd)?;
                    }
                }
                let r = protocol.call_method1(intern!(py, "data_received"), (&data,));
                let r = Self::protocol_call(
                    slf,
                    r,
                    "Fatal error: protocol.data_received() call failed.",
                );
                recycle_bytes(data);
                r.map(drop)
            }
        }
    }

    fn read_buffered(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // The native read hook: for oxloop's own SSL protocol, its `get_buffer` (the
        // shared buffer) and `buffer_updated` without a Python call each.
        if let Some((tls, ptr, room)) = TlsProtocol::native_target(protocol) {
            // SAFETY: the shared buffer is `room` bytes and lives for the process;
            // nothing else uses it until `buffer_updated` has fed what was read in.
            let n = unsafe { libc::read(this.fd, ptr as *mut libc::c_void, room) };
            return Self::buffered_read_done(slf, protocol, n, room, |n| {
                TlsProtocol::native_updated(tls, n)
            });
        }
        let got = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|buf| {
                let view = ByteView::writable(&buf)?;
                if view.as_slice().is_empty() {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                Ok(view)
            });
        let Some(view) =
            Self::protocol_call(slf, got, "Fatal error: protocol.get_buffer() call failed.")?
        else {
            return Ok(());
        };
        let room = view.as_slice().len();
        let n = unsafe { libc::read(this.fd, view.ptr() as *mut libc::c_void, room) };
        drop(view);
        Self::buffered_read_done(slf, protocol, n, room, |n| {
            protocol
                .call_method1(intern!(py, "buffer_updated"), (n,))
                .map(drop)
        })
    }

    /// After a read of up to `room` bytes into a buffered protocol's buffer (`n` what
    /// `read` returned): the error, EOF, or `updated(n)` (its `buffer_updated`).
    fn buffered_read_done(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
        n: isize,
        room: usize,
        updated: impl FnOnce(isize) -> PyResult<()>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if is_retry(&e) {
                return Ok(());
            }
            return Self::fatal_error(slf, os_error(&e), this.read_error());
        }
        if n == 0 {
            return Self::on_eof(slf, protocol);
        }
        if let Ok(core) = this.core(py) {
            core.get().note_io(n as usize, 0);
            if n as usize == room {
                core.get().rearm_fd(this.fd)?;
            }
        }
        let r = updated(n);
        Self::protocol_call(
            slf,
            r,
            "Fatal error: protocol.buffer_updated() call failed.",
        )
        .map(drop)
    }

    /// Take a protocol callback's result; its failure becomes a fatal error with
    /// `message` (but SystemExit and KeyboardInterrupt, which propagate).
    fn protocol_call<T>(
        slf: &Bound<'_, Self>,
        result: PyResult<T>,
        message: &str,
    ) -> PyResult<Option<T>> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if must_propagate(slf.py(), &e) => Err(e),
            Err(e) => {
                Self::fatal_error(slf, e, message)?;
                Ok(None)
            }
        }
    }

    fn on_eof(slf: &Bound<'_, Self>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            Self::log_debug(slf, "%r received EOF", None)?;
        }
        if slf.get().kind == Kind::ReadPipe {
            // A pipe's EOF ends it: the stock read pipe closes without asking.
            {
                let mut st = slf.get().st.try_mut()?;
                st.closing = true;
            }
            Self::set_reading(slf, false)?;
            let cb = protocol.getattr(intern!(py, "eof_received"))?;
            Self::call_soon_noarg(slf, &cb)?;
            let lost = slf.getattr(intern!(py, "_call_connection_lost"))?;
            return Self::call_soon(slf, &lost, py.None());
        }
        let r = protocol.call_method0(intern!(py, "eof_received"));
        let Some(keep_open) =
            Self::protocol_call(slf, r, "Fatal error: protocol.eof_received() call failed.")?
        else {
            return Ok(());
        };
        if keep_open.is_truthy()? {
            Self::set_reading(slf, false)
        } else {
            Self::close_impl(slf)
        }
    }

    fn call_soon_noarg(slf: &Bound<'_, Self>, method: &Bound<'_, PyAny>) -> PyResult<()> {
        let core = slf.get().core(slf.py())?;
        let context = slf.get().context(slf.py())?;
        LoopCore::soon(&core, method, PyTuple::empty(slf.py()), context)
    }

    fn close_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lost = {
            let mut st = slf.get().st.try_mut()?;
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            if st.wbuf.is_empty() {
                st.conn_lost += 1;
                true
            } else {
                false
            }
        };
        Self::set_reading(slf, false)?;
        if lost {
            Self::set_writing(slf, false)?;
            let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
            Self::call_soon(slf, &cb, py.None())?;
        }
        Ok(())
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let change = {
            let mut st = slf.get().st.try_mut()?;
            let size = st.wbuf.len();
            st.flow.grown(size)
        };
        Self::notify(slf, change)
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let change = {
            let mut st = slf.get().st.try_mut()?;
            let size = st.wbuf.len();
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

    /// What `write` and `writelines` refuse: after `write_eof()` or during `sendfile`.
    fn write_allowed(&self, what: &str) -> PyResult<()> {
        let st = self.st.try_ref()?;
        if st.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {what}; sendfile is in progress"
            )));
        }
        Ok(())
    }

    /// A write once the connection is lost (or a write pipe closes) is dropped, counted,
    /// and past a few logged. Ok(true): dropped.
    fn write_dropped(&self, py: Python<'_>) -> PyResult<bool> {
        let mut st = self.st.try_mut()?;
        if st.conn_lost > 0 || (self.kind == Kind::WritePipe && st.closing) {
            if st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                let msg = if self.kind == Kind::Socket {
                    "socket.send() raised exception."
                } else {
                    "pipe closed by peer or os.write(pipe, data) raised exception."
                };
                logger(py)?.call_method1("warning", (msg,))?;
            }
            st.conn_lost += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// `write(data)`, in the stock order: the type, `write_eof`/`sendfile`, nothing to
    /// write, a lost connection; then a send at once if nothing is queued.
    fn write_impl(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let view = ByteView::new(data)?;
        this.write_allowed("write")?;
        let bytes = view.as_slice();
        if bytes.is_empty() || this.write_dropped(py)? {
            return Ok(());
        }
        let first = if this.st.try_ref()?.wbuf.is_empty() {
            Some(send_once(this.fd, bytes, this.sink()))
        } else {
            None
        };
        Self::write_rest(slf, data, bytes, first)
    }

    /// The rest of a `write` of `bytes` (the contents of `data`) after its first send
    /// (`first`; None when something was queued already): count what was sent, queue
    /// what was not and watch for writability, pause the protocol past the high mark.
    fn write_rest(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        bytes: &[u8],
        first: Option<std::io::Result<usize>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(first) = first else {
            this.st.try_mut()?.wbuf.push(data, bytes, 0);
            return Self::maybe_pause_protocol(slf);
        };
        let offset = match first {
            Ok(n) => {
                this.note_written(py, n);
                if n == bytes.len() {
                    return Ok(());
                }
                n
            }
            Err(e) if is_retry(&e) => 0,
            Err(e) => return Self::fatal_error(slf, os_error(&e), this.write_error()),
        };
        this.st.try_mut()?.wbuf.push(data, bytes, offset);
        Self::set_writing(slf, true)?;
        Self::maybe_pause_protocol(slf)
    }

    fn note_written(&self, py: Python<'_>, n: usize) {
        if let Ok(st) = self.st.try_ref() {
            if let Some(core) = &st.loop_ {
                core.bind(py).get().note_io(0, n);
            }
        }
    }

    /// Send what is queued; on the queue running dry finish a close or write_eof.
    fn flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let result = {
            let mut st = this.st.try_mut()?;
            if st.conn_lost > 0 {
                return Ok(());
            }
            st.wbuf.flush(py, this.fd, this.sink())
        };
        match result {
            Err(e) => {
                let waiter = {
                    let mut st = this.st.try_mut()?;
                    st.wbuf.clear();
                    st.empty_waiter.as_ref().map(|w| w.clone_ref(py))
                };
                Self::set_writing(slf, false)?;
                let err = os_error(&e);
                let value = err.value(py).clone();
                Self::fatal_error(slf, err, this.write_error())?;
                if let Some(w) = waiter {
                    w.bind(py).call_method1("set_exception", (value,))?;
                }
                return Ok(());
            }
            Ok(n) => {
                if n > 0 {
                    if let Ok(core) = this.core(py) {
                        core.get().note_io(0, n);
                    }
                }
            }
        }
        Self::maybe_resume_protocol(slf)?;
        let (empty, waiter, closing, eof) = {
            let st = this.st.try_ref()?;
            (
                st.wbuf.is_empty(),
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.closing,
                st.eof,
            )
        };
        if !empty {
            return Self::set_writing(slf, true);
        }
        Self::set_writing(slf, false)?;
        if let Some(w) = waiter {
            w.bind(py).call_method1("set_result", (py.None(),))?;
        }
        if closing {
            {
                this.st.try_mut()?.conn_lost += 1;
            }
            Self::call_connection_lost(slf, py.None())?;
        } else if eof {
            this.shutdown_write(py)?;
        }
        Ok(())
    }

    fn shutdown_write(&self, py: Python<'_>) -> PyResult<()> {
        if self.kind != Kind::Socket {
            return Ok(());
        }
        let sock = self.st.try_ref()?.sock.as_ref().map(|s| s.clone_ref(py));
        if let Some(s) = sock {
            s.bind(py).call_method1("shutdown", (libc::SHUT_WR,))?;
        }
        Ok(())
    }

    fn call_connection_lost(slf: &Bound<'_, Self>, exc: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // Nothing may watch the fd once it is closed below.
        let (reading, writing) = {
            let st = this.st.try_ref()?;
            (
                st.reading && st.loop_.is_some(),
                st.writing && st.loop_.is_some(),
            )
        };
        if reading {
            Self::set_reading(slf, false)?;
        }
        if writing {
            Self::set_writing(slf, false)?;
        }
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
        // The socket goes away below: what the extra info needs of it is taken first.
        this.extra_dict(py)?;
        let (sock, server, waiter, lp) = {
            let mut st = this.st.try_mut()?;
            st.protocol = None;
            (
                st.sock.take(),
                st.server.take(),
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.loop_.take(),
            )
        };
        if let Some(lp) = &lp {
            if let Ok(core) = lp.bind(py).cast::<LoopCore>() {
                core.get().note_transport(-1);
                core.get().release_fd(this.fd);
            }
        }
        let closed = match sock {
            Some(s) => s.bind(py).call_method0("close").map(drop),
            None => Ok(()),
        };
        let detached = match server {
            Some(s) => s.bind(py).call_method1("_detach", (slf,)).map(drop),
            None => Ok(()),
        };
        if let Some(w) = waiter {
            let exc = pyo3::exceptions::PyConnectionError::new_err("Connection is closed by peer");
            w.bind(py)
                .call_method1("set_exception", (exc.into_value(py),))?;
        }
        drop(lp);
        result.and(closed).and(detached)
    }
}

#[pymethods]
impl StreamTransport {
    /// `kind`: 0 socket, 1 read pipe, 2 write pipe. The Python subclass finishes the
    /// set-up (extra info, `connection_made`, the waiter). `context`: what the transport's
    /// callbacks run in (3.15 gives each connection its own), None for the current one.
    #[new]
    #[pyo3(signature = (loop_, sock, protocol, kind=0, extra=None, server=None, lazy_extra=false, context=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        loop_: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        kind: u8,
        extra: Option<Bound<'_, PyDict>>,
        server: Option<Py<PyAny>>,
        lazy_extra: bool,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let core = loop_.cast::<LoopCore>()?;
        let fd: RawFd = sock.call_method0("fileno")?.extract()?;
        let kind = match kind {
            0 => Kind::Socket,
            1 => Kind::ReadPipe,
            2 => Kind::WritePipe,
            _ => return Err(PyValueError::new_err("bad transport kind")),
        };
        let buffered = is_buffered(protocol)?;
        let (extra, lazy) = if lazy_extra {
            (None, Some(LazyExtra::new(sock, fd, extra.as_ref())?))
        } else {
            (
                Some(extra.unwrap_or_else(|| PyDict::new(py)).unbind()),
                None,
            )
        };
        core.get().note_transport(1);
        Ok(StreamTransport {
            fd,
            kind,
            st: GilCell::new(State {
                loop_: Some(core.clone().unbind()),
                sock: Some(sock.clone().unbind()),
                protocol: Some(protocol.clone().unbind()),
                server: server.filter(|s| !s.is_none(py)),
                extra,
                lazy,
                empty_waiter: None,
                context: context.filter(|c| !c.is_none(py)),
                buffered,
                protocol_connected: true,
                conn_lost: 0,
                closing: false,
                paused: false,
                eof: false,
                reading: false,
                writing: false,
                read_gen: 0,
                write_gen: 0,
                flow: FlowControl::default(),
                wbuf: WriteQueue::default(),
            }),
        })
    }

    /// Start reading, unless paused or closed meanwhile (scheduled after
    /// `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if !slf.get().is_reading()? {
            return Ok(());
        }
        Self::set_reading(slf, true)
    }

    /// Stop and start watching for readability without touching the pause state
    /// (write pipes watch for their reader going away).
    fn _watch_readable(slf: &Bound<'_, Self>, on: bool) -> PyResult<()> {
        Self::set_reading(slf, on)
    }

    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_ready(slf)
    }

    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush(slf)
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_impl(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // The stock TypeErrors: 3.12+ takes a memoryview of each item, older versions
        // join the items into one bytes.
        let modern = py.version_info() >= (3, 12);
        let items: Vec<Bound<'_, PyAny>> = match list_of_data.try_iter() {
            Ok(it) => it.collect::<PyResult<_>>()?,
            Err(e) if modern => return Err(e),
            Err(_) => return Err(PyTypeError::new_err("can only join an iterable")),
        };
        let mut views = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match ByteView::any_buffer(item) {
                Some(v) => views.push(v?),
                None => {
                    let kind = item.get_type().name()?;
                    return Err(PyTypeError::new_err(if modern {
                        format!("memoryview: a bytes-like object is required, not '{kind}'")
                    } else {
                        format!("sequence item {i}: expected a bytes-like object, {kind} found")
                    }));
                }
            }
        }
        // Before 3.12 writelines() is write(b"".join(...)), with write()'s messages.
        this.write_allowed(if modern { "writelines" } else { "write" })?;
        if this.write_dropped(py)? {
            return Ok(());
        }
        let was_empty = {
            let mut st = this.st.try_mut()?;
            let was_empty = st.wbuf.is_empty();
            for (item, view) in items.iter().zip(&views) {
                st.wbuf.push(item, view.as_slice(), 0);
            }
            if st.wbuf.is_empty() {
                return Ok(());
            }
            was_empty
        };
        drop(views);
        if was_empty {
            Self::flush(slf)?;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.kind == Kind::ReadPipe {
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(()));
        }
        if this.kind == Kind::WritePipe {
            // A pipe has no half-close: its EOF closes the write end once the queue is
            // written (see `flush`).
            let empty = {
                let mut st = this.st.try_mut()?;
                if st.closing {
                    return Ok(());
                }
                st.closing = true;
                if st.wbuf.is_empty() {
                    st.conn_lost += 1;
                }
                st.wbuf.is_empty()
            };
            if empty {
                Self::set_reading(slf, false)?;
                let cb = slf.getattr(intern!(py, "_call_connection_lost"))?;
                Self::call_soon(slf, &cb, py.None())?;
            }
            return Ok(());
        }
        let empty = {
            let mut st = this.st.try_mut()?;
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            st.wbuf.is_empty()
        };
        if empty {
            this.shutdown_write(py)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        self.kind != Kind::ReadPipe
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_impl(slf)
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
        Self::set_reading(slf, false)?;
        if this.debug(slf.py()) {
            Self::log_debug(slf, "%r pauses reading", None)?;
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
        Self::set_reading(slf, true)?;
        if this.debug(slf.py()) {
            Self::log_debug(slf, "%r resumes reading", None)?;
        }
        Ok(())
    }

    fn set_protocol(&self, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = is_buffered(protocol)?;
        let mut st = self.st.try_mut()?;
        st.protocol = Some(protocol.clone().unbind());
        st.buffered = buffered;
        st.protocol_connected = true;
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .st
            .try_ref()?
            .protocol
            .as_ref()
            .map_or_else(|| py.None(), |p| p.clone_ref(py)))
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(extra) = self.extra_dict(py)? {
            if let Some(v) = extra.get_item(name)? {
                return Ok(v.unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    #[getter]
    fn _extra(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        Ok(self.extra_dict(py)?.map(Bound::unbind))
    }

    fn get_write_buffer_size(&self) -> PyResult<usize> {
        Ok(self.st.try_ref()?.wbuf.len())
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
        // Checked with no state borrowed (the comparisons may run Python code); the
        // replaced marks are dropped after the borrow.
        let limits = Limits::parse(slf.py(), high, low, DEFAULT_HIGH)?;
        let old = slf.get().st.try_mut()?.flow.apply(&limits)?;
        drop(old);
        Self::maybe_pause_protocol(slf)
    }

    /// For sendfile: a future done once everything queued is written.
    fn _make_empty_waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut st = self.st.try_mut()?;
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let lp = st
            .loop_
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the transport is closed"))?;
        let waiter = lp.bind(py).call_method0("create_future")?;
        if st.wbuf.is_empty() {
            waiter.call_method1("set_result", (py.None(),))?;
        }
        st.empty_waiter = Some(waiter.clone().unbind());
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self) -> PyResult<()> {
        self.st.try_mut()?.empty_waiter = None;
        Ok(())
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.st.try_ref()?.sock.as_ref().map(|s| s.clone_ref(py)))
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
    fn _server(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.st.try_ref()?.server.as_ref().map(|s| s.clone_ref(py)))
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
    fn _eof(&self) -> PyResult<bool> {
        Ok(self.st.try_ref()?.eof)
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
            st.wbuf.len()
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.st.peek() {
            if let Some(l) = &st.loop_ {
                visit.call(l)?;
            }
            for o in [
                &st.sock,
                &st.protocol,
                &st.server,
                &st.empty_waiter,
                &st.context,
            ]
            .into_iter()
            .flatten()
            {
                visit.call(o)?;
            }
            if let Some(e) = &st.extra {
                visit.call(e)?;
            }
            if let Some(lazy) = &st.lazy {
                for a in [&lazy.sockname, &lazy.peername] {
                    if let Addr::Obj(o) = a {
                        visit.call(o)?;
                    }
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
                st.server.take(),
                st.empty_waiter.take(),
                st.extra.take(),
                st.lazy.take(),
                st.context.take(),
            ),
            Err(_) => return,
        };
        drop(taken);
    }
}

/// The methods as PyO3 generated them, for the calls the direct entries leave to them.
static WRITE_GENERIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static IS_CLOSING_GENERIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Replace the two transport methods a protocol calls per message by direct entries
/// (no PyO3 trampoline, argument parser or second type check):
///
/// * `write`, entered with `METH_FASTCALL`: bytes-like data with nothing queued and
///   nothing in the way is sent there and then; anything else (other types, queued data,
///   a closed transport, keywords, a wrong count) goes to the generated method, so
///   results and errors stay the same. A partial send continues in `write_rest`.
/// * `is_closing` (asyncio streams ask it on every `drain()`): `METH_NOARGS`.
pub fn install_fast_paths(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<StreamTransport>();
    let dict = ty.getattr(intern!(py, "__dict__"))?;
    let _ = WRITE_GENERIC.set(py, dict.get_item("write")?.unbind());
    let _ = IS_CLOSING_GENERIC.set(py, dict.get_item("is_closing")?.unbind());
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"write".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: write_fast,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"write($self, data)\n--\n\n".as_ptr(),
        },
    )?;
    install_method(
        &ty,
        ffi::PyMethodDef {
            ml_name: c"is_closing".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: is_closing_fast,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"is_closing($self)\n--\n\n".as_ptr(),
        },
    )
}

/// What the direct `write` entry did.
enum Attempt {
    /// Not its case: the generated method takes the call.
    Generic,
    /// All sent.
    Done,
    /// The first send of a `bytes` was partial, would block or failed.
    Rest(std::io::Result<usize>),
}

impl StreamTransport {
    /// The direct part of `write(data)`: non-empty bytes-like data with nothing queued,
    /// the transport open, no `write_eof` and no `sendfile` under way (the checks of
    /// `write_impl`, none of which can fail here) is sent now. Drops no Python object.
    fn write_now(&self, data: &Bound<'_, PyAny>) -> Attempt {
        let p = data.as_ptr();
        if unsafe { ffi::PyBytes_CheckExact(p) } != 0 {
            // SAFETY: an exact bytes, alive for this call.
            let bytes = unsafe {
                std::slice::from_raw_parts(ffi::PyBytes_AS_STRING(p) as *const u8, {
                    ffi::Py_SIZE(p) as usize
                })
            };
            return self.send_now(bytes);
        }
        if !ByteView::accepts(data) {
            return Attempt::Generic;
        }
        match ByteView::new(data) {
            Ok(view) => self.send_now(view.as_slice()),
            Err(_) => Attempt::Generic,
        }
    }

    fn send_now(&self, bytes: &[u8]) -> Attempt {
        let Ok(st) = self.st.try_ref() else {
            return Attempt::Generic;
        };
        if bytes.is_empty()
            || st.eof
            || st.empty_waiter.is_some()
            || st.conn_lost > 0
            || (self.kind == Kind::WritePipe && st.closing)
            || !st.wbuf.is_empty()
        {
            return Attempt::Generic;
        }
        match send_once(self.fd, bytes, self.sink()) {
            Ok(n) if n == bytes.len() => {
                if let Some(core) = &st.loop_ {
                    core.get().note_io(0, n);
                }
                Attempt::Done
            }
            other => Attempt::Rest(other),
        }
    }
}

unsafe extern "C" fn write_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) };
    if nargs != 1 || !kwnames.is_null() {
        return unsafe { call_generic(&WRITE_GENERIC, slf, args, nargsf, kwnames) };
    }
    unsafe {
        guarded(|| {
            // The method descriptor checked that `slf` is a StreamTransport; the GIL is
            // held.
            let py = Python::assume_attached();
            let data = Borrowed::from_ptr(py, *args);
            let any = Borrowed::from_ptr(py, slf);
            let this = any.cast_unchecked::<StreamTransport>();
            match this.get().write_now(&data) {
                Attempt::Done => ffi::Py_NewRef(ffi::Py_None()),
                Attempt::Generic => call_generic(&WRITE_GENERIC, slf, args, nargsf, kwnames),
                Attempt::Rest(first) => Python::attach(|py| {
                    let r = ByteView::new(&data).and_then(|view| {
                        StreamTransport::write_rest(&this, &data, view.as_slice(), Some(first))
                    });
                    into_ptr(py, r.map(|()| py.None()))
                }),
            }
        })
    }
}

/// `is_closing()`. No PyO3 trampoline: reading a flag drops nothing and cannot fail but
/// on a busy state, which the generated method reports.
unsafe extern "C" fn is_closing_fast(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        guarded(|| {
            // The method descriptor checked that `slf` is a StreamTransport; the GIL is
            // held.
            let py = Python::assume_attached();
            let any = Borrowed::from_ptr(py, slf);
            let this = any.cast_unchecked::<StreamTransport>();
            let closing = this.get().st.peek().map(|st| st.closing);
            match closing {
                Some(true) => ffi::Py_NewRef(ffi::Py_True()),
                Some(false) => ffi::Py_NewRef(ffi::Py_False()),
                None => call_generic(&IS_CLOSING_GENERIC, slf, &args, 0, std::ptr::null_mut()),
            }
        })
    }
}
