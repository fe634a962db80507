//! A TCP transport's `sockname`/`peername`, taken at construction as the stock transports
//! take them but kept as a few bytes, and turned into the Python values (equal to what
//! `socket.getsockname()`/`getpeername()` gave) only when `get_extra_info` asks.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use pyo3::prelude::*;

/// One address of the extra info.
pub enum Addr {
    /// The call failed: the stock value is None.
    Missing,
    /// An IPv4 address and port: `(str(ip), port)`.
    V4([u8; 4], u16),
    /// Any other value, kept as given.
    Obj(Py<PyAny>),
}

impl Addr {
    /// `getsockname` (`peer`: `getpeername`) of `fd`; only IPv4 is kept compact, other
    /// families are left to the caller (None).
    pub fn query(fd: RawFd, peer: bool) -> Option<Addr> {
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let p = (&mut sa as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
        let rc = unsafe {
            if peer {
                libc::getpeername(fd, p, &mut len)
            } else {
                libc::getsockname(fd, p, &mut len)
            }
        };
        if rc != 0 {
            return Some(Addr::Missing);
        }
        if sa.sin_family as i32 != libc::AF_INET
            || len as usize > std::mem::size_of::<libc::sockaddr_in>()
        {
            return None;
        }
        Some(Addr::V4(
            sa.sin_addr.s_addr.to_ne_bytes(),
            u16::from_be(sa.sin_port),
        ))
    }

    /// The Python value.
    pub fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Addr::Missing => py.None(),
            Addr::V4(ip, port) => (Ipv4Addr::from(*ip).to_string(), *port)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            Addr::Obj(o) => o.clone_ref(py),
        })
    }
}
