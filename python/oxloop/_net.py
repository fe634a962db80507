"""Connections, servers, pipes, TLS and sendfile: the loop methods that make transports.

Setting a connection up (resolving, trying addresses, binding, listening, accepting,
checking arguments) runs once per connection and stays in Python; the transports it
makes are the Rust `StreamTransport`s (`_transports`). TLS runs through the `ssl`
module's `MemoryBIO`/`SSLObject`, layered over the plain transport as the stock loop
does: on 3.11+ by oxloop's Rust SSL protocol (`_oxloop.TlsProtocol`, the semantics of
that version's `sslproto`), on 3.10 by asyncio's own `sslproto.SSLProtocol`; nothing of
`asyncio` or `ssl` is patched. Checks and messages follow the stock loop of each Python
version.
"""

from __future__ import annotations

import collections.abc
import contextvars
import errno
import itertools
import os
import socket
import stat
import sys
import warnings
from asyncio import (
    constants,
    exceptions,
    protocols,
    sslproto,
    staggered,
    streams,
    tasks,
    trsock,
)
from asyncio.log import logger

from . import _transports
from ._oxloop import TlsProtocol, TlsTransport
from ._server import Server

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - Python built without ssl
    _ssl = None

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)
_PY314 = sys.version_info >= (3, 14)
_PY315 = sys.version_info >= (3, 15)
# Seconds before accepting again after running out of fds (the stock delay).
_ACCEPT_RETRY_DELAY = 1
_HAS_IPV6 = hasattr(socket, "AF_INET6")


def _check_ssl_socket(sock) -> None:
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_ssl_timeouts(ssl, handshake, shutdown) -> None:
    if handshake is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _numeric_addrinfo(host, port, family, type_, proto, *rest):
    """The getaddrinfo entry for a numeric host, or None when a lookup is needed."""
    if not hasattr(socket, "inet_pton"):
        return None
    if proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP) or host is None:
        return None
    if type_ == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type_ == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None:
        port = 0
    elif isinstance(port, bytes) and port == b"":
        port = 0
    elif isinstance(port, str) and port == "":
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
    if family == socket.AF_UNSPEC:
        families = [socket.AF_INET] + ([socket.AF_INET6] if _HAS_IPV6 else [])
    else:
        families = [family]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # a scope name needs getaddrinfo
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            return af, type_, proto, "", (host, port, *rest)
        return af, type_, proto, "", (host, port)
    return None


def _interleave(infos, first_family_count=1):
    """Alternate address families (RFC 8305), starting with `first_family_count` of the
    first family."""
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    groups = list(by_family.values())
    out = []
    if first_family_count > 1:
        out.extend(groups[0][: first_family_count - 1])
        groups[0] = groups[0][first_family_count - 1 :]
    for row in itertools.zip_longest(*groups):
        out.extend(info for info in row if info is not None)
    return out


def _bind_error_text(err) -> str:
    # 3.13 quotes the whole error ("[errno 98] address already in use").
    return str(err).lower() if _PY313 else (err.strerror or str(err)).lower()


def _set_reuseport(sock) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        )


class _FallbackProtocol(protocols.Protocol):
    """Stands in for the user's protocol while sendfile writes by hand: waits for the
    transport to drain at the high water mark, then gives the protocol back."""

    def __init__(self, transport):
        self._transport = transport
        self._proto = transport.get_protocol()
        self._should_resume_reading = transport.is_reading()
        self._should_resume_writing = transport._protocol_paused
        transport.pause_reading()
        transport.set_protocol(self)
        loop = transport._loop
        if self._should_resume_writing:
            self._write_ready_fut = loop.create_future()
        else:
            self._write_ready_fut = None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is None:
            return
        await fut

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        if self._write_ready_fut is not None:
            if exc is None:
                self._write_ready_fut.set_exception(ConnectionError("Connection is closed by peer"))
            else:
                self._write_ready_fut.set_exception(exc)
        self._proto.connection_lost(exc)

    def pause_writing(self):
        if self._write_ready_fut is not None:
            return
        self._write_ready_fut = self._transport._loop.create_future()

    def resume_writing(self):
        if self._write_ready_fut is None:
            return
        self._write_ready_fut.set_result(False)
        self._write_ready_fut = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        if self._write_ready_fut is not None:
            # The transport is closed or writable again: tell the protocol.
            self._write_ready_fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()


# The two classes below have no __slots__: their instances take arbitrary attributes, as
# stock's do (the instance dict is only made when one is set).


class SSLProtocol(TlsProtocol, protocols.BufferedProtocol):
    """The SSL protocol of a TLS connection (3.11+): the Rust state machine, a real
    `asyncio.BufferedProtocol` (the plain transport reads straight into its buffer)."""

    # isinstance() against stock `asyncio.sslproto.SSLProtocol` holds, as on the stock
    # loop (code checks it); type() is the Rust-backed class.
    @property
    def __class__(self):
        return sslproto.SSLProtocol

    def __repr__(self) -> str:
        return f"<asyncio.sslproto.SSLProtocol object at {id(self):#x}>"

    @property
    def _state(self):
        """The state as stock's `SSLProtocolState` member (read-only)."""
        return sslproto.SSLProtocolState[self._state_name.rpartition(".")[2]]


class _SSLProtocolTransport(TlsTransport):
    """The transport the application protocol of a TLS connection sees (3.11+)."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    # isinstance() against stock `asyncio.sslproto._SSLProtocolTransport` (and so
    # `asyncio.Transport`) holds, as on the stock loop; type() is the Rust-backed class.
    @property
    def __class__(self):
        return sslproto._SSLProtocolTransport

    def __repr__(self) -> str:
        return f"<asyncio.sslproto._SSLProtocolTransport object at {id(self):#x}>"

    def __del__(self, _warn=warnings.warn) -> None:
        if not self._closed:
            self._closed = True
            _warn("unclosed transport <asyncio._SSLProtocolTransport object>", ResourceWarning)


def _ssl_protocol(
    loop,
    app_protocol,
    sslcontext,
    waiter,
    server_side=False,
    server_hostname=None,
    call_connection_made=True,
    ssl_handshake_timeout=None,
    ssl_shutdown_timeout=None,
):
    """The SSL protocol for a connection: the stock one on 3.10, oxloop's on 3.11+ (the
    stock constructor's checks, in its order, then the Rust state machine)."""
    if not _PY311:
        return sslproto.SSLProtocol(
            loop,
            app_protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=call_connection_made,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
    if _ssl is None:
        raise RuntimeError("stdlib ssl module not available")
    if ssl_handshake_timeout is None:
        ssl_handshake_timeout = constants.SSL_HANDSHAKE_TIMEOUT
    elif ssl_handshake_timeout <= 0:
        raise ValueError(
            f"ssl_handshake_timeout should be a positive number, got {ssl_handshake_timeout}"
        )
    if ssl_shutdown_timeout is None:
        ssl_shutdown_timeout = constants.SSL_SHUTDOWN_TIMEOUT
    elif ssl_shutdown_timeout <= 0:
        raise ValueError(
            f"ssl_shutdown_timeout should be a positive number, got {ssl_shutdown_timeout}"
        )
    if not sslcontext:
        sslcontext = sslproto._create_transport_context(server_side, server_hostname)
    if not server_hostname or server_side:
        server_hostname = None
    incoming = _ssl.MemoryBIO()
    outgoing = _ssl.MemoryBIO()
    sslobj = sslcontext.wrap_bio(
        incoming, outgoing, server_side=server_side, server_hostname=server_hostname
    )
    protocol = SSLProtocol(
        loop,
        app_protocol,
        sslcontext,
        waiter,
        call_connection_made,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        incoming,
        outgoing,
        sslobj,
        _PY313,
        server_side,
        server_hostname,
    )
    protocol._set_app_transport(_SSLProtocolTransport(loop, protocol))
    return protocol


class NetMethods:
    """Mixed into `oxloop.Loop`."""

    # ------------------------------------------------------------ resolving

    async def _resolve(self, address, *, family=0, type=socket.SOCK_STREAM, proto=0, flags=0):
        host, port = address[:2]
        info = _numeric_addrinfo(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    # ------------------------------------------------------------ transports

    def _make_socket_transport(
        self, sock, protocol, waiter=None, *, extra=None, server=None, context=None
    ):
        return _transports.make_socket_transport(
            self, sock, protocol, waiter, extra, server, context
        )

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        context=None,
    ):
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        _transports.make_socket_transport(self, rawsock, ssl_protocol, None, extra, server, context)
        return _app_transport(ssl_protocol)

    async def _connection_transport(
        self,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        server_side=False,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        # 3.15 (gh-140947): the connection's callbacks run in the context it was made in.
        context = contextvars.copy_context() if _PY315 else None
        try:
            sock.setblocking(False)
            protocol = protocol_factory()
            waiter = self.create_future()
            if ssl:
                sslcontext = None if isinstance(ssl, bool) else ssl
                if sslcontext is None:
                    sslcontext = _ssl.create_default_context()
                    if server_side:
                        raise ValueError("Server side SSL needs a valid SSLContext")
                transport = self._make_ssl_transport(
                    sock,
                    protocol,
                    sslcontext,
                    waiter,
                    server_side=server_side,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                    context=context,
                )
            else:
                transport = self._make_socket_transport(sock, protocol, waiter, context=context)
        except BaseException:
            # No transport owns the socket: close it, not leak it (as 3.14 does, gh-153133).
            sock.close()
            raise
        try:
            await waiter
        except BaseException:
            transport.close()
            waiter = None  # no cycle through the error's traceback (see start_tls)
            raise
        return transport, protocol

    # ------------------------------------------------------------ connecting

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        **kwargs,
    ):
        all_errors = kwargs.pop("all_errors", False)
        if kwargs or (all_errors and not _PY312):
            bad = next(iter(kwargs), "all_errors")
            raise TypeError(f"create_connection() got an unexpected keyword argument '{bad}'")
        if not _PY311 and ssl_shutdown_timeout is not None:
            raise TypeError(
                "create_connection() got an unexpected keyword argument 'ssl_shutdown_timeout'"
            )
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._resolve(
                (host, port), family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            local_infos = None
            if local_addr is not None:
                local_infos = await self._resolve(
                    local_addr,
                    family=family,
                    type=socket.SOCK_STREAM,
                    proto=proto,
                    flags=flags,
                )
                if not local_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave(infos, interleave)
            errors = []
            if happy_eyeballs_delay is None:
                for info in infos:
                    try:
                        sock = await self._connect_sock(errors, info, local_infos)
                        break
                    except OSError:
                        continue
            else:
                # Only the winner: the race's own error list would stay alive in this frame
                # (and the frame in the errors' tracebacks).
                sock = (
                    await staggered.staggered_race(
                        (
                            # Not functools.partial: it would keep `errors` (and its tracebacks)
                            # alive with the race.
                            lambda info=info: self._connect_sock(errors, info, local_infos)
                            for info in infos
                        ),
                        happy_eyeballs_delay,
                        loop=self,
                    )
                )[0]
            if sock is None:
                flat = [exc for group in errors for exc in group]
                try:
                    if all_errors:
                        raise ExceptionGroup("create_connection failed", flat)  # noqa: F821
                    if len(flat) == 1:
                        raise flat[0]
                    if not flat:
                        # No attempt failed with an error (all were cancelled): as stock.
                        raise TimeoutError("create_connection failed")
                    first = str(flat[0])
                    if all(str(exc) == first for exc in flat):
                        raise flat[0]
                    raise OSError(
                        "Multiple exceptions: {}".format(", ".join(str(exc) for exc in flat))
                    )
                finally:
                    flat = errors = None
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            sock = transport.get_extra_info("socket")
            logger.debug("%r connected to %s:%r: (%r, %r)", sock, host, port, transport, protocol)
        return transport, protocol

    async def _connect_sock(self, errors, addr_info, local_infos=None):
        """Connect a new socket to one address; its errors go to a list of `errors`."""
        mine = []
        errors.append(mine)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None:
                for lfamily, _, _, _, laddr in local_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = (
                            f"error while attempting to bind on address {laddr!r}: "
                            f"{_bind_error_text(exc)}"
                        )
                        mine.append(OSError(exc.errno, msg))
                else:
                    if mine:
                        raise mine.pop()
                    raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            mine.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            errors = mine = None

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        elif server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        _check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_ssl_socket(sock)
        transport, protocol = await self._connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            sock = transport.get_extra_info("socket")
            logger.debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol

    # ------------------------------------------------------------ serving

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        **kwargs,
    ):
        keep_alive = kwargs.pop("keep_alive", None)
        if kwargs or (keep_alive is not None and not _PY313):
            bad = next(iter(kwargs), "keep_alive")
            raise TypeError(f"create_server() got an unexpected keyword argument '{bad}'")
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            found = await tasks.gather(
                *[self._server_addrinfo(h, port, family, flags) for h in hosts]
            )
            infos = set(itertools.chain.from_iterable(found))
            sockets = []
            completed = False
            try:
                for af, socktype, proto, _, sa in infos:
                    try:
                        sock = socket.socket(af, socktype, proto)
                    except OSError:
                        if self.get_debug():
                            logger.warning(
                                "create_server() failed to create socket.socket(%r, %r, %r)",
                                af,
                                socktype,
                                proto,
                                exc_info=True,
                            )
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        _set_reuseport(sock)
                    if keep_alive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        msg = (
                            f"error while attempting to bind on address {sa!r}: "
                            f"{_bind_error_text(err)}"
                        )
                        if _PY313 and err.errno == errno.EADDRNOTAVAIL:
                            # The family is not enabled on this host: skip it.
                            sockets.pop()
                            sock.close()
                            if self.get_debug():
                                logger.warning(msg)
                            continue
                        raise OSError(err.errno, msg) from None
                if _PY313 and not sockets:
                    addrs = [info[4] for info in infos]
                    raise OSError(f"could not bind on any address out of {addrs!r}")
                completed = True
            finally:
                if not completed:
                    for s in sockets:
                        s.close()
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        server = await self._serve(
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
        )
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    async def _serve(self, sockets, protocol_factory, ssl, backlog, handshake, shutdown, start):
        """The `Server` over bound sockets, serving at once if `start`."""
        for s in sockets:
            s.setblocking(False)
        server = Server(self, sockets, protocol_factory, ssl, backlog, handshake, shutdown)
        if start:
            server._start_serving()
            # One iteration, so that the listening sockets' readers are in place.
            await tasks.sleep(0)
        return server

    async def _server_addrinfo(self, host, port, family, flags):
        infos = await self._resolve(
            (host, port), family=family, type=socket.SOCK_STREAM, flags=flags
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        **kwargs,
    ):
        if kwargs and (not _PY313 or set(kwargs) != {"cleanup_socket"}):
            bad = next(k for k in kwargs if k != "cleanup_socket" or not _PY313)
            raise TypeError(f"create_unix_server() got an unexpected keyword argument '{bad}'")
        cleanup_socket = kwargs.get("cleanup_socket", True)
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_ssl_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if path[0] not in (0, "\x00"):  # not an abstract socket: clear a stale one
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        if _PY313 and cleanup_socket:
            name = sock.getsockname()
            if name and name[0] not in (0, "\x00"):
                try:
                    self._unix_inodes[sock] = os.stat(name).st_ino
                except FileNotFoundError:
                    pass
        return await self._serve(
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
        )

    def _start_serving(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self.add_reader(
            sock.fileno(),
            self._accept_connections,
            protocol_factory,
            sock,
            sslcontext,
            server,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    def _stop_serving(self, sock) -> None:
        inode = self._unix_inodes.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        self.remove_reader(sock.fileno())
        sock.close()
        if path is not None:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    def _accept_connections(
        self,
        protocol_factory,
        sock,
        sslcontext,
        server,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
    ):
        # backlog + 1 tries, and an aborted connection skipped rather than ending the round:
        # as 3.14's accept loop (earlier ones stopped at an abort).
        for _ in range(backlog + 1):
            try:
                conn, addr = sock.accept()
                if self.get_debug():
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except ConnectionAbortedError:
                continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # Out of fds or memory: stop accepting for a while, keep serving.
                self.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                self.remove_reader(sock.fileno())
                self.call_later(
                    _ACCEPT_RETRY_DELAY,
                    self._start_serving,
                    protocol_factory,
                    sock,
                    sslcontext,
                    server,
                    backlog,
                    ssl_handshake_timeout,
                    ssl_shutdown_timeout,
                )
                return
            extra = {"peername": addr}
            # 3.15 (gh-140947): each connection in its own copy of the server's context.
            context = server._context
            if context is not None:
                context = context.copy()
            if sslcontext:
                accept = self._accept_tls(
                    protocol_factory,
                    conn,
                    extra,
                    sslcontext,
                    server,
                    ssl_handshake_timeout,
                    ssl_shutdown_timeout,
                    context,
                )
                if context is None:
                    self.create_task(accept)
                else:
                    self.create_task(accept, context=context)
            elif context is None:
                self._accept_plain(protocol_factory, conn, extra, server, None)
            else:
                context.run(self._accept_plain, protocol_factory, conn, extra, server, context)

    def _accept_plain(self, protocol_factory, conn, extra, server, context) -> None:
        protocol = transport = None
        try:
            protocol = protocol_factory()
            transport = _transports.make_socket_transport(
                self, conn, protocol, None, extra, server, context
            )
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._accept_failed(exc, conn, protocol, transport)

    async def _accept_tls(
        self, protocol_factory, conn, extra, sslcontext, server, handshake, shutdown, context
    ):
        protocol = transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(
                conn,
                protocol,
                sslcontext,
                waiter=waiter,
                server_side=True,
                extra=extra,
                server=server,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=shutdown,
                context=context,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                waiter = None  # no cycle through the error's traceback (see start_tls)
                # Let the transport finish closing before reporting the failure.
                await tasks.sleep(0)
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._accept_failed(exc, conn, protocol, transport)

    def _accept_failed(self, exc, conn, protocol, transport) -> None:
        # The socket is the transport's once it exists; before, no one would close it. The
        # stock loop reports these failures only in debug mode.
        if transport is None:
            conn.close()
        if self.get_debug():
            context = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            self.call_exception_handler(context)

    # ------------------------------------------------------------ pipes

    async def connect_read_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(
            protocol_factory, pipe, _transports.make_read_pipe_transport, "Read"
        )

    async def connect_write_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(
            protocol_factory, pipe, _transports.make_write_pipe_transport, "Write"
        )

    async def _connect_pipe(self, protocol_factory, pipe, make, kind):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("%s pipe %r connected: (%r, %r)", kind, pipe.fileno(), transport, protocol)
        return transport, protocol

    # ------------------------------------------------------------ TLS upgrade

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        if not _PY311 and ssl_shutdown_timeout is not None:
            raise TypeError("start_tls() got an unexpected keyword argument 'ssl_shutdown_timeout'")
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=False,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        # Hold reading until the TLS protocol is in place and has seen the transport.
        transport.pause_reading()
        if server_side and _PY311:
            # Bytes a StreamReader took in before the upgrade are the client's first TLS
            # record(s): the TLS layer reads them first (as 3.14 does, gh-142352; dropped
            # before).
            _hand_over_buffered(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            # The waiter holds the error, whose traceback holds this frame: no cycle (so a
            # failed upgrade frees the transport without the collector, as 3.14's does).
            waiter = None
            raise
        return _app_transport(ssl_protocol)

    # ------------------------------------------------------------ sendfile

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported for "
                f"transport {transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transport, file, offset, count):
        resume = transport.is_reading()
        transport.pause_reading()
        await transport._make_empty_waiter()
        try:
            return await self.sock_sendfile(transport._sock, file, offset, count, fallback=False)
        finally:
            transport._reset_empty_waiter()
            if resume:
                transport.resume_reading()

    async def _sendfile_fallback(self, transport, file, offset, count):
        # 3.14 starts from `offset` even when it is 0 (the file may have been read from).
        if offset or (_PY314 and hasattr(file, "seek")):
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total = 0
        proto = _FallbackProtocol(transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total
                if _PY314:
                    # 3.14 writes, then waits for the buffer to drain (the write copies `view`).
                    transport.write(view[:read])
                    await proto.drain()
                else:
                    await proto.drain()
                    transport.write(view[:read])
                total += read
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)
            await proto.restore()


def _hand_over_buffered(protocol, ssl_protocol) -> None:
    if isinstance(protocol, streams.StreamReaderProtocol):
        reader = getattr(protocol, "_stream_reader", None)
        buffer = reader._buffer if reader is not None else None
        if buffer:
            ssl_protocol._incoming.write(buffer)
            buffer.clear()


def _app_transport(ssl_protocol):
    get = getattr(ssl_protocol, "_get_app_transport", None)
    return get() if get is not None else ssl_protocol._app_transport
