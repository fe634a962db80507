//! `WriteQueue`: the bytes a transport could not write at once, sent later with one
//! vectored system call per writable event.
//!
//! `bytes` are immutable, so the queue keeps a reference to the object and an offset
//! (no copy); anything else (bytearray, memoryview) may change after `write()` returns
//! and is copied. Also the buffer-protocol view used to read any bytes-like object.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Most iovecs one `writev`/`sendmsg` takes (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// A contiguous read-only view of a bytes-like object (released on drop).
pub struct ByteView {
    view: ffi::Py_buffer,
    /// Whether the view came from the buffer protocol and must be released (an exact
    /// `bytes` is read in place).
    held: bool,
}

impl ByteView {
    /// The bytes of a `bytes`, `bytearray` or `memoryview` (what the stock `write` and
    /// `sendto` take), or their `TypeError` for anything else.
    pub fn new(obj: &Bound<'_, PyAny>) -> PyResult<ByteView> {
        let p = obj.as_ptr();
        if unsafe { ffi::PyBytes_CheckExact(p) } != 0 {
            // SAFETY: an all-zero Py_buffer is a valid (empty) value; `obj` outlives
            // the view, as with a buffer-protocol view.
            let mut view: ffi::Py_buffer = unsafe { std::mem::zeroed() };
            unsafe {
                view.buf = ffi::PyBytes_AS_STRING(p) as *mut _;
                view.len = ffi::Py_SIZE(p);
            }
            return Ok(ByteView { view, held: false });
        }
        if !ByteView::accepts(obj) {
            // Stock's stream transports' words for it, which 3.14 made precise.
            let what = if cfg!(Py_3_14) {
                "a bytes, bytearray, or memoryview object"
            } else {
                "a bytes-like object"
            };
            return Err(PyTypeError::new_err(format!(
                "data argument must be {what}, not '{}'",
                obj.get_type().name()?
            )));
        }
        ByteView::with_flags(obj, ffi::PyBUF_SIMPLE)
    }

    /// Whether `new` takes `obj`: a `bytes`, `bytearray` or `memoryview` (or subclass).
    #[inline]
    pub fn accepts(obj: &Bound<'_, PyAny>) -> bool {
        let p = obj.as_ptr();
        unsafe {
            ffi::PyBytes_Check(p) != 0
                || ffi::PyByteArray_Check(p) != 0
                || ffi::PyMemoryView_Check(p) != 0
        }
    }

    /// The bytes of any object with the buffer protocol (`memoryview(obj)`); None for
    /// one without (the caller words the error).
    pub fn any_buffer(obj: &Bound<'_, PyAny>) -> Option<PyResult<ByteView>> {
        if unsafe { ffi::PyBytes_CheckExact(obj.as_ptr()) } != 0 {
            return Some(ByteView::new(obj));
        }
        if unsafe { ffi::PyObject_CheckBuffer(obj.as_ptr()) } == 0 {
            return None;
        }
        Some(ByteView::with_flags(obj, ffi::PyBUF_SIMPLE))
    }

    /// A writable view (for `BufferedProtocol.get_buffer()`'s result).
    pub fn writable(obj: &Bound<'_, PyAny>) -> PyResult<ByteView> {
        ByteView::with_flags(obj, ffi::PyBUF_WRITABLE)
    }

    fn with_flags(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<ByteView> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(ByteView {
            view: unsafe { view.assume_init() },
            held: true,
        })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.view.buf as *mut u8
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        if self.held {
            unsafe { ffi::PyBuffer_Release(&mut self.view) };
        }
    }
}

enum Chunk {
    Shared(Py<PyBytes>),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Chunk::Shared(b) => b.as_bytes(py),
            Chunk::Owned(v) => v,
        }
    }
}

/// Which system call sends: `sendmsg` (sockets: MSG_NOSIGNAL) or `writev` (pipes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Socket,
    Pipe,
}

#[derive(Default)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    head: usize,
    size: usize,
}

impl WriteQueue {
    pub fn len(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head = 0;
        self.size = 0;
    }

    /// Queue `data[offset..]` of a bytes-like object.
    pub fn push(&mut self, data: &Bound<'_, PyAny>, view: &[u8], offset: usize) {
        let rest = view.len() - offset;
        if rest == 0 {
            return;
        }
        if let Ok(b) = data.cast::<PyBytes>() {
            if self.chunks.is_empty() {
                self.head = offset;
                self.chunks.push_back(Chunk::Shared(b.clone().unbind()));
                self.size += rest;
                return;
            }
            if offset == 0 && rest > 4096 {
                self.chunks.push_back(Chunk::Shared(b.clone().unbind()));
                self.size += rest;
                return;
            }
        }
        // Small pieces join the last owned chunk: fewer iovecs per send.
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            if last.len() < 64 * 1024 {
                last.extend_from_slice(&view[offset..]);
                self.size += rest;
                return;
            }
        }
        if self.chunks.is_empty() {
            self.head = 0;
        }
        self.chunks.push_back(Chunk::Owned(view[offset..].to_vec()));
        self.size += rest;
    }

    /// Send as much as the fd takes. Ok(n) bytes sent (0 if it would block).
    pub fn flush(&mut self, py: Python<'_>, fd: RawFd, sink: Sink) -> io::Result<usize> {
        if self.size == 0 {
            return Ok(0);
        }
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(self.chunks.len().min(IOV_MAX));
        for (i, c) in self.chunks.iter().take(IOV_MAX).enumerate() {
            let b = c.bytes(py);
            let b = if i == 0 { &b[self.head..] } else { b };
            iov.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
        let n = match send_vectored(fd, &iov, sink) {
            Ok(n) => n,
            Err(e) if is_retry(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        self.consume(py, n);
        Ok(n)
    }

    fn consume(&mut self, py: Python<'_>, mut n: usize) {
        self.size -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes(py).len() - self.head;
            if n >= left {
                n -= left;
                self.chunks.pop_front();
                self.head = 0;
            } else {
                self.head += n;
                n = 0;
            }
        }
        if self.size == 0 {
            self.chunks.clear();
            self.head = 0;
        }
    }
}

pub fn is_retry(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

/// One `write`/`send` of a single buffer.
pub fn send_once(fd: RawFd, data: &[u8], sink: Sink) -> io::Result<usize> {
    let n = unsafe {
        match sink {
            Sink::Socket => libc::send(
                fd,
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_NOSIGNAL,
            ),
            Sink::Pipe => libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()),
        }
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send_vectored(fd: RawFd, iov: &[libc::iovec], sink: Sink) -> io::Result<usize> {
    let n = unsafe {
        match sink {
            Sink::Socket => {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            }
            Sink::Pipe => libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int),
        }
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The Python exception for an errno: `OSError(errno, strerror)`, which Python turns
/// into its subclass (ConnectionResetError, BrokenPipeError, ...), `errno` set.
pub fn os_error(e: &io::Error) -> PyErr {
    let code = e.raw_os_error().unwrap_or(libc::EIO);
    let msg = unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }
        .to_string_lossy()
        .into_owned();
    pyo3::exceptions::PyOSError::new_err((code, msg))
}
