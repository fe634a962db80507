"""`Server`: what `create_server` and `create_unix_server` return.

Listening sockets, the count of live connections, `close`/`wait_closed`/`serve_forever`
and the async context manager, with the semantics of the stock server of each Python
version (3.13 adds `close_clients`/`abort_clients`; 3.12.1 fixed `wait_closed`).
The accept loop itself is the loop's (`NetMethods._accept_connections`).
"""

from __future__ import annotations

import contextvars
import sys
from asyncio import events, exceptions, tasks, trsock

_PY312 = sys.version_info >= (3, 12)
# 3.14: a cancelled serve_forever() also closes the clients (gh-123720), so that its
# wait_closed() does not wait for them forever.
_PY314 = sys.version_info >= (3, 14)
_PY315 = sys.version_info >= (3, 15)


class Server(events.AbstractServer):
    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        ssl_context,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout=None,
    ):
        self._loop = loop
        self._sockets = sockets
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None
        # 3.15 (gh-140947): each connection's callbacks run in a copy of the context the
        # server was made in (None before: they run in copies of the current one).
        self._context = contextvars.copy_context() if _PY315 else None

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    def _attach(self, transport=None) -> None:
        self._active_count += 1

    def _detach(self, transport=None) -> None:
        self._active_count -= 1
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(
                self._protocol_factory,
                sock,
                self._ssl_context,
                self,
                self._backlog,
                self._ssl_handshake_timeout,
                self._ssl_shutdown_timeout,
            )

    def get_loop(self):
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._loop._stop_serving(sock)
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    if sys.version_info >= (3, 13):

        def close_clients(self) -> None:
            for transport in self._clients():
                transport.close()

        def abort_clients(self) -> None:
            for transport in self._clients():
                transport.abort()

    def _clients(self) -> list:
        # The open connections: the loop's transports that name this server until they
        # finish (the loop tracks them already; no per-connection entry here).
        return [t for t in self._loop._claimed_transports() if getattr(t, "_server", None) is self]

    async def start_serving(self) -> None:
        self._start_serving()
        # One iteration, so that the listening sockets' readers are in place.
        await tasks.sleep(0)

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                if _PY314:
                    self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        # 3.12.1+: wait until closed and every connection is gone. Before, it returned at
        # once on a server already closed.
        if self._waiters is None or (not _PY312 and self._sockets is None):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
