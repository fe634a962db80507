"""`loop.create_datagram_endpoint` and the construction of the Rust datagram transport.

The transport itself (sendto, receiving, flow control, closing) is
`_oxloop.DatagramTransport`; the subclass here names it, warns about a transport dropped
unclosed, and makes it an `asyncio.Transport`/`asyncio.DatagramTransport` for
`isinstance` (see `_TransportClass`). `DatagramMethods` is mixed into `oxloop.Loop`:
argument checks, messages and the order of the set-up follow the stock loop of the
running Python version.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import warnings
from asyncio.log import logger

from ._oxloop import DatagramTransport
from ._transports import TransportMixin, socket_extra, virtual

_PY311 = sys.version_info >= (3, 11)
_PY313 = sys.version_info >= (3, 13)
_HAS_IPV6 = hasattr(socket, "AF_INET6")
_HAS_UNIX = hasattr(socket, "AF_UNIX")

# 3.10's default for the deprecated `reuse_address` (gone from 3.11 on).
_UNSET = object()


def _set_result_unless_cancelled(fut, result) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class DatagramSocketTransport(TransportMixin, DatagramTransport):
    __slots__ = ()


virtual(DatagramSocketTransport, asyncio.Transport, asyncio.DatagramTransport)


def make_datagram_transport(loop, sock, protocol, address=None, waiter=None, extra=None):
    """A transport over a datagram socket, started as the stock loop starts it."""
    extra = socket_extra(sock, extra)
    transport = DatagramSocketTransport(
        loop, sock, protocol, address, extra, bool(extra["peername"])
    )
    loop.call_soon(protocol.connection_made, transport)
    # Reading starts only once connection_made() has run, the waiter wakes after it.
    loop.call_soon(transport._start_reading)
    if waiter is not None:
        loop.call_soon(_set_result_unless_cancelled, waiter, None)
    return transport


def _numeric_info(host, port, family, proto, extra):
    """The getaddrinfo() entry for a numeric host, or None if a lookup is needed."""
    if host is None or proto not in (0, socket.IPPROTO_UDP):
        return None
    if port is None or port == b"" or port == "":
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None  # a service name
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # inet_pton takes no zone index: let getaddrinfo resolve it
    if family == socket.AF_UNSPEC:
        families = [socket.AF_INET, socket.AF_INET6] if _HAS_IPV6 else [socket.AF_INET]
    else:
        families = [family]
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            flowinfo, scope_id = (tuple(extra) + (0, 0))[:2]
            return af, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (host, port, flowinfo, scope_id)
        return af, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (host, port)
    return None


def _set_reuse_port(sock) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


class DatagramMethods:
    """Mixed into `oxloop.Loop`; relies on its getaddrinfo, sock_connect and futures."""

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return make_datagram_transport(self, sock, protocol, address, waiter, extra)

    async def _resolve_datagram(self, address, family, proto, flags):
        host, port = address[:2]
        info = _numeric_info(host, port, family, proto, address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
        )

    def _check_datagram_sock(self, sock, opts) -> None:
        if _PY313:
            if sock.type == socket.SOCK_STREAM:
                raise ValueError(f"A datagram socket was expected, got {sock!r}")
        elif sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP Socket was expected, got {sock!r}")
        if any(v for k, v in opts.items() if k != "reuse_address"):
            problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
            raise ValueError(
                "socket modifier keyword arguments can not be used "
                f"when sock is specified. ({problems})"
            )

    async def _datagram_addresses(self, local_addr, remote_addr, family, proto, flags):
        """[((family, proto), (local address, remote address))] to try, in order."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if _HAS_UNIX and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr and local_addr[0] not in (0, "\x00"):
                # A stale socket file from an earlier run would make bind() fail.
                try:
                    if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                        os.remove(local_addr)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error(
                        "Unable to check or remove stale UNIX socket %r: %r", local_addr, err
                    )
            return [((family, proto), (local_addr, remote_addr))]
        by_key = {}  # (family, proto) -> [local, remote], in the resolver's order
        for idx, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                if _PY311:
                    raise TypeError("2-tuple is expected")
                raise AssertionError("2-tuple is expected")
            infos = await self._resolve_datagram(addr, family, proto, flags)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_key.setdefault((fam, pro), [None, None])[idx] = address
        pairs = [
            (key, pair)
            for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
        return pairs

    async def _datagram_endpoint(
        self,
        protocol_factory,
        local_addr,
        remote_addr,
        family,
        proto,
        flags,
        reuse_address,
        reuse_port,
        allow_broadcast,
        sock,
    ):
        r_addr = None
        if sock is not None:
            opts = dict(
                local_addr=local_addr,
                remote_addr=remote_addr,
                family=family,
                proto=proto,
                flags=flags,
            )
            if not _PY311:
                opts["reuse_address"] = reuse_address
            opts.update(reuse_port=reuse_port, allow_broadcast=allow_broadcast)
            self._check_datagram_sock(sock, opts)
            sock.setblocking(False)
        else:
            pairs = await self._datagram_addresses(local_addr, remote_addr, family, proto, flags)
            if reuse_address is not _UNSET:
                if reuse_address:
                    raise ValueError(
                        "Passing `reuse_address=True` is no longer supported, as the usage "
                        "of SO_REUSEPORT in UDP poses a significant security concern."
                    )
                warnings.warn(
                    "The *reuse_address* parameter has been deprecated as of 3.5.10 and "
                    "is scheduled for removal in 3.11.",
                    DeprecationWarning,
                    stacklevel=3,
                )
            errors = []
            for (fam, pro), (local_address, remote_address) in pairs:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                    if reuse_port:
                        _set_reuse_port(sock)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    errors.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                try:
                    raise errors[0]
                finally:
                    errors = None

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                logger.info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr,
                    remote_addr,
                    transport,
                    protocol,
                )
            else:
                logger.debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr,
                    transport,
                    protocol,
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    if _PY311:

        async def create_datagram_endpoint(
            self,
            protocol_factory,
            local_addr=None,
            remote_addr=None,
            *,
            family=0,
            proto=0,
            flags=0,
            reuse_port=None,
            allow_broadcast=None,
            sock=None,
        ):
            """Create a datagram endpoint: (transport, protocol)."""
            return await self._datagram_endpoint(
                protocol_factory,
                local_addr,
                remote_addr,
                family,
                proto,
                flags,
                _UNSET,
                reuse_port,
                allow_broadcast,
                sock,
            )

    else:

        async def create_datagram_endpoint(
            self,
            protocol_factory,
            local_addr=None,
            remote_addr=None,
            *,
            family=0,
            proto=0,
            flags=0,
            reuse_address=_UNSET,
            reuse_port=None,
            allow_broadcast=None,
            sock=None,
        ):
            """Create a datagram endpoint: (transport, protocol)."""
            return await self._datagram_endpoint(
                protocol_factory,
                local_addr,
                remote_addr,
                family,
                proto,
                flags,
                reuse_address,
                reuse_port,
                allow_broadcast,
                sock,
            )
