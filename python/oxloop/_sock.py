"""The `sock_*` coroutines: operations on non-blocking sockets the caller owns.

Each tries the system call at once and only on EAGAIN waits for readiness through a
reader or writer on the loop, removed again when the future finishes (by success, error
or cancellation). Semantics, checks and messages follow the stock selector loop.
`sock_recv` and `sock_sendall` on a plain non-blocking `socket.socket` (with `bytes` to
send) do all of that in Rust (`src/sock.rs`) and fall back to the code here otherwise.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from asyncio import exceptions

from ._oxloop import _sock_recv, _sock_sendall

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

# 3.14's sendfile leaves the file's position right on every exit, and its fallback reads
# from `offset` even when it is 0.
_PY314 = sys.version_info >= (3, 14)
_FALLBACK_BLOCK = 256 * 1024
_INET_FAMILIES = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))


def _check_not_ssl(sock) -> None:
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _numeric_address(host, port, family, type_, proto, extra):
    """The resolved address for a numeric host and port, or None if a lookup is needed."""
    if not isinstance(port, int) and not (isinstance(port, (str, bytes)) and str(port).isdigit()):
        return None
    if isinstance(host, bytes):
        host = host.decode("idna")
    if not isinstance(host, str) or not host:
        return None
    try:
        socket.inet_pton(family, host.partition("%")[0])
    except (OSError, ValueError):
        return None
    port = int(port)
    if family == socket.AF_INET6:
        flowinfo, scope_id = (tuple(extra) + (0, 0))[:2]
        if "%" in host:
            return None  # let getaddrinfo resolve the scope name
        return (host, port, flowinfo, scope_id)
    return (host, port)


class SockMethods:
    """Mixed into `oxloop.Loop`; relies on its readers, writers and futures."""

    def _sock_checks(self, sock) -> None:
        _check_not_ssl(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _wait_fd(self, fut, fd, writer: bool, callback, *args) -> None:
        """Call `callback(*args)` whenever fd is ready, until `fut` is done."""
        if writer:
            handle = self._add_writer(fd, callback, *args)
            remove = self._remove_writer
        else:
            handle = self._add_reader(fd, callback, *args)
            remove = self._remove_reader
        fut.add_done_callback(functools.partial(_unwatch, remove, fd, handle))

    async def _try_or_wait(self, sock, writer: bool, method: str, *args):
        """`sock.<method>(*args)` now, or once the socket is ready if it would block."""
        self._sock_checks(sock)
        try:
            return getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        self._wait_fd(fut, sock.fileno(), writer, _retry, fut, sock, method, *args)
        return await fut

    async def sock_recv(self, sock, n):
        # Plain non-blocking sockets: the call and any wait in Rust (src/sock.rs).
        result = _sock_recv(self, sock, n)
        if result.__class__ is bytes:
            return result
        if result is NotImplemented:
            return await self._try_or_wait(sock, False, "recv", n)
        return await result

    async def sock_recv_into(self, sock, buf):
        return await self._try_or_wait(sock, False, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize):
        return await self._try_or_wait(sock, False, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        return await self._try_or_wait(sock, False, "recvfrom_into", buf, nbytes or len(buf))

    async def sock_sendall(self, sock, data):
        # Plain non-blocking sockets and bytes: the calls and any wait in Rust (src/sock.rs).
        result = _sock_sendall(self, sock, data)
        if result is None:
            return None
        if result is NotImplemented:
            return await self._sendall(sock, data)
        return await result

    async def _sendall(self, sock, data):
        self._sock_checks(sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            return None
        fut = self.create_future()
        view = memoryview(data).cast("B")
        self._wait_fd(fut, sock.fileno(), True, _send_rest, fut, sock, view, [sent])
        return await fut

    async def sock_sendto(self, sock, data, address):
        return await self._try_or_wait(sock, True, "sendto", data, address)

    async def sock_connect(self, sock, address):
        self._sock_checks(sock)
        if sock.family in _INET_FAMILIES:
            address = await self._resolve_for(sock, address)
        fut = self.create_future()
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            self._wait_fd(fut, sock.fileno(), True, _connect_done, fut, sock, address)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        try:
            return await fut
        finally:
            fut = None  # break the cycle through the traceback

    async def _resolve_for(self, sock, address):
        host, port = address[:2]
        numeric = _numeric_address(host, port, sock.family, sock.type, sock.proto, address[2:])
        if numeric is not None:
            return numeric
        infos = await self.getaddrinfo(
            host, port, family=sock.family, type=sock.type, proto=sock.proto
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos[0][4]

    async def sock_accept(self, sock):
        self._sock_checks(sock)
        fut = self.create_future()
        if not _accept(fut, sock):
            self._wait_fd(fut, sock.fileno(), False, _accept, fut, sock)
        return await fut

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        _check_not_ssl(sock)
        _check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
        except (AttributeError, OSError) as exc:
            raise exceptions.SendfileNotAvailableError("not a regular file") from exc
        try:
            size = os.fstat(fileno).st_size
        except OSError as exc:
            raise exceptions.SendfileNotAvailableError("not a regular file") from exc
        block = count if count else size
        if not block:
            return 0
        total = 0
        waited = False
        try:
            while True:
                want = min(count - total, block) if count else block
                if want <= 0:
                    break
                try:
                    sent = os.sendfile(sock.fileno(), fileno, offset + total, want)
                except (BlockingIOError, InterruptedError):
                    waited = True
                    await self._writable(sock)
                    continue
                except OSError as exc:
                    if waited and exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        new = ConnectionError("socket is not connected", errno.ENOTCONN)
                        raise new from exc
                    if total == 0:
                        raise exceptions.SendfileNotAvailableError(
                            "os.sendfile call failed"
                        ) from exc
                    raise
                if sent == 0:
                    break  # end of file
                total += sent
            return total
        finally:
            # The file's position ends past what was sent; 3.14 sets it on every exit.
            if total > 0 or _PY314:
                os.lseek(fileno, offset + total, os.SEEK_SET)

    def _writable(self, sock):
        fut = self.create_future()
        self._wait_fd(fut, sock.fileno(), True, _set_once, fut)
        return fut

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset or (_PY314 and hasattr(file, "seek")):
            file.seek(offset)
        block = min(count, _FALLBACK_BLOCK) if count else _FALLBACK_BLOCK
        buf = bytearray(block)
        total = 0
        try:
            while True:
                if count:
                    block = min(count - total, block)
                    if block <= 0:
                        break
                view = memoryview(buf)[:block]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break
                await self.sock_sendall(sock, view[:read])
                total += read
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)


def _check_sendfile_params(sock, file, offset, count) -> None:
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


def _unwatch(remove, fd, handle, fut) -> None:
    # Remove only our own reader/writer: a later add_* may have replaced it.
    if handle is None or not handle.cancelled():
        remove(fd)


def _retry(fut, sock, method: str, *args) -> None:
    # The method is looked up on every try, as stock does (tests swap it on mocks).
    if fut.done():
        return
    try:
        result = getattr(sock, method)(*args)
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _set_once(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _send_rest(fut, sock, view, pos) -> None:
    if fut.done():
        return
    start = pos[0]
    try:
        sent = sock.send(view[start:])
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
        return
    start += sent
    if start == len(view):
        fut.set_result(None)
    else:
        pos[0] = start


def _connect_done(fut, sock, address) -> None:
    if fut.done():
        return
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Connect call failed {address}")
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(None)
    finally:
        fut = None  # the error's traceback holds this frame: no cycle through the future


def _accept(fut, sock) -> bool:
    """Try one accept; True when `fut` got its outcome."""
    if fut.done():
        return True
    try:
        conn, address = sock.accept()
        conn.setblocking(False)
    except (BlockingIOError, InterruptedError):
        return False
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result((conn, address))
    return True
