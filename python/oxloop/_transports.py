"""Construction of the Rust stream transports: sockets (TCP, Unix) and pipes.

The transport itself (reads, writes, flow control, closing) is `_oxloop.StreamTransport`;
these subclasses only name it, finish the set-up the stock transports do in their
constructors (extra info, TCP_NODELAY, `connection_made`, the waiter) and warn about a
transport dropped unclosed.
"""

from __future__ import annotations

import os
import socket
import stat
import warnings
from asyncio import constants, transports, trsock

from ._oxloop import StreamTransport

_SOCKET, _READ_PIPE, _WRITE_PIPE = 0, 1, 2
_INET = {socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET)}


def _set_result_unless_cancelled(fut, result) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class TransportMixin:
    """What every transport class adds to its Rust base: the stock repr, the
    `ResourceWarning` of a transport dropped unclosed, and `__class__` (see `virtual`)."""

    __slots__ = ()

    # A Rust class cannot also derive from asyncio.Transport (whose `__slots__` give it a
    # layout of its own), yet code checks `isinstance(t, asyncio.Transport)`. isinstance
    # consults `__class__` when the real type does not match, so each transport class
    # reports a namesake subclass of the asyncio class there; `type(t)` stays the real one.
    @property
    def __class__(self):
        return _VIRTUAL[type(self)]

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            info.append(self._state_repr())
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn) -> None:
        sock = self._sock
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()


_VIRTUAL = {}


def virtual(cls, *bases):
    """Give transport class `cls` its `__class__`: a namesake deriving from `bases`."""
    _VIRTUAL[cls] = type(cls.__name__, bases, {"__slots__": (), "__module__": cls.__module__})


class _Transport(TransportMixin, StreamTransport):
    __slots__ = ()


class _SocketTransport(_Transport):
    __slots__ = ()
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE


class TCPTransport(_SocketTransport):
    __slots__ = ()


class UnixTransport(_SocketTransport):
    __slots__ = ()


# The pipe transports keep an instance __dict__ (no __slots__): code wraps their methods
# per instance, e.g. the stock test_subprocess sets transport.pause_reading = Mock().
class ReadPipeTransport(_Transport):
    pass


class WritePipeTransport(_Transport):
    pass


virtual(TCPTransport, transports.Transport)
virtual(UnixTransport, transports.Transport)
virtual(ReadPipeTransport, transports.ReadTransport)
virtual(WritePipeTransport, transports.WriteTransport)


def _start(loop, transport, protocol, waiter, server, context=None) -> None:
    loop._claim_fd(transport._sock_fd, transport)
    if server is not None:
        server._attach(transport)
    # In the transport's own context (3.15, gh-140947), as its later callbacks; None: a
    # copy of the current one, as before.
    loop.call_soon(protocol.connection_made, transport, context=context)
    loop.call_soon(transport._start_reading, context=context)
    if waiter is not None:
        loop.call_soon(_set_result_unless_cancelled, waiter, None, context=context)


def socket_extra(sock, extra=None) -> dict:
    """The stock extra info of a socket transport: socket, sockname, peername."""
    extra = dict(extra) if extra else {}
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None
    return extra


def make_socket_transport(loop, sock, protocol, waiter=None, extra=None, server=None, context=None):
    """A transport over a connected stream socket, started as the stock loop starts it.

    `context` (3.15): the contextvars context every callback of the transport runs in
    (None: a copy of the current one at each, as before 3.15)."""
    # An IPv4 socket's extra info is kept compact in the transport (the addresses taken
    # now, the dict made when asked for): most connections never ask.
    lazy = sock.family == socket.AF_INET and (not extra or extra.keys() == {"peername"})
    if not lazy:
        extra = socket_extra(sock, extra)
    if sock.family in _INET:
        cls = TCPTransport
        if sock.type == socket.SOCK_STREAM and sock.proto == socket.IPPROTO_TCP:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        cls = UnixTransport
    transport = cls(loop, sock, protocol, _SOCKET, extra, server, lazy, context)
    _start(loop, transport, protocol, waiter, server, context)
    return transport


def _check_pipe(pipe, write: bool):
    fileno = pipe.fileno()
    mode = os.fstat(fileno).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError(
            "Pipe transport is only for pipes, sockets and character devices"
            if write
            else "Pipe transport is for pipes/sockets only."
        )
    os.set_blocking(fileno, False)
    return mode


def make_read_pipe_transport(loop, pipe, protocol, waiter=None, extra=None):
    _check_pipe(pipe, write=False)
    extra = dict(extra) if extra else {}
    extra["pipe"] = pipe
    transport = ReadPipeTransport(loop, pipe, protocol, _READ_PIPE, extra, None)
    _start(loop, transport, protocol, waiter, None)
    return transport


def make_write_pipe_transport(loop, pipe, protocol, waiter=None, extra=None):
    mode = _check_pipe(pipe, write=True)
    extra = dict(extra) if extra else {}
    extra["pipe"] = pipe
    transport = WritePipeTransport(loop, pipe, protocol, _WRITE_PIPE, extra, None)
    loop._claim_fd(transport._sock_fd, transport)
    loop.call_soon(protocol.connection_made, transport)
    # Readable means the reading end went away; a regular pipe only reports that on
    # Linux through its socket-like cousin, so watch sockets and pipes alike.
    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        loop.call_soon(transport._watch_readable, True)
    if waiter is not None:
        loop.call_soon(_set_result_unless_cancelled, waiter, None)
    return transport
