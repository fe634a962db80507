"""Tests of the stream transports: TCP and Unix sockets, servers, streams, sendfile.

Most tests run on oxloop and on the stock asyncio loop (`any_loop`): the assertions are the
stock loop's behaviour on each Python version.
"""

import array
import asyncio
import errno
import gc
import os
import socket
import sys
import uuid
import warnings

import pytest
from support import is_stock, open_fds, run, run_python

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
PY314 = sys.version_info >= (3, 14)
# 3.12.1 made Server.wait_closed() wait for the connections of a closed server.
WAIT_CLOSED_WAITS = sys.version_info >= (3, 12, 1)


# -- helpers -------------------------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """A protocol that records what the transport tells it."""

    def __init__(self, eof_result=None):
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.flow = []
        self.made = self.loop.create_future()
        self.eof = self.loop.create_future()
        self.lost = self.loop.create_future()
        self.eof_result = eof_result
        self._more = None

    def _event(self, name):
        if not (name == "data" and self.events and self.events[-1] == "data"):
            self.events.append(name)

    def _wake(self):
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def connection_made(self, transport):
        self._event("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        self._event("data")
        self.data += data
        self._wake()

    def eof_received(self):
        self._event("eof")
        self.eof.set_result(None)
        self._wake()
        return self.eof_result

    def connection_lost(self, exc):
        self._event("lost")
        self.lost.set_result(exc)
        self._wake()

    def pause_writing(self):
        self.flow.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.flow.append(("resume", self.transport.get_write_buffer_size()))

    async def wait_bytes(self, n):
        """Wait until `n` bytes came in (or the connection ended); return them all."""
        while len(self.data) < n and not self.lost.done() and not self.eof.done():
            self._more = self.loop.create_future()
            await self._more
        return bytes(self.data)

    async def wait_eof(self):
        """Wait for EOF or the end of the connection; return all data received."""
        while not self.lost.done() and not self.eof.done():
            self._more = self.loop.create_future()
            await self._more
        return bytes(self.data)


class Echo(asyncio.Protocol):
    """Echoes everything back; closes (after flushing) on EOF."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(65536)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self):
        return None


class BufferedCollector(asyncio.BufferedProtocol):
    """Receives into a small buffer, so one read never takes all that is there."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray(100)
        self.data = bytearray()
        self.hints = set()
        self.done = self.loop.create_future()
        self.lost = self.loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.add(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.done.set_result(bytes(self.data))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def tcp_socketpair(small=False):
    """Two connected non-blocking TCP sockets over the loopback.

    `small`: small kernel buffers (set before the handshake, so the advertised window
    matches), so that a big write stays mostly in the transport's buffer.
    """
    with socket.socket() as listener:
        if small:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.socket()
        if small:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def unix_socketpair(small=False):
    a, b = socket.socketpair()
    if small:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


PAIRS = {"tcp": tcp_socketpair, "unix": unix_socketpair}


def _pair(kind, small):
    a, b = PAIRS[kind](small)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(params=["tcp", "unix"])
def sockpair(request):
    """A connected pair (transport side, raw peer side) of TCP or Unix stream sockets."""
    yield from _pair(request.param, False)


@pytest.fixture(params=["tcp", "unix"])
def small_pair(request):
    """Like `sockpair`, with small kernel buffers: big writes stay in the transport."""
    yield from _pair(request.param, True)


@pytest.fixture
def tcp_pair():
    yield from _pair("tcp", False)


@pytest.fixture
def small_tcp_pair():
    yield from _pair("tcp", True)


async def transport_over(loop, sock, proto=None):
    proto = proto if proto is not None else Recorder()
    transport, _ = await loop.create_connection(lambda: proto, sock=sock)
    return transport, proto


async def recv_exactly(loop, sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, min(n - len(got), 1 << 20))
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def recv_all(loop, sock):
    """Everything up to EOF (or a reset: then what came before it)."""
    got = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


async def spin(n=5):
    """Let a few loop iterations run."""
    for _ in range(n):
        await asyncio.sleep(0)


async def settle(loop):
    """A short real wait before checking that something did NOT happen (not a timing check:
    a broken transport fails it whatever the machine's speed)."""
    await asyncio.sleep(0.05)


def payload(n, seed=0):
    """`n` bytes that are not a repeat of a short pattern."""
    import random

    return random.Random(seed).randbytes(n)


def check_exc_handler(loop):
    """Collect exception-handler contexts of `loop` in a list."""
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


# -- echo ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_proto", [Echo, BufferedEcho])
def test_echo_over_tcp_server(any_loop, server_proto):
    async def main():
        server = await any_loop.create_server(server_proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        msg = payload(100_000)
        transport.write(msg)
        assert await proto.wait_bytes(len(msg)) == msg
        transport.close()
        assert await proto.lost is None
        server.close()
        await server.wait_closed()
        return proto.events

    assert run(any_loop, main()) == ["made", "data", "lost"]


def test_echo_with_buffered_protocol_client(any_loop):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(BufferedCollector, "127.0.0.1", port)
        msg = payload(50_000, seed=1)
        transport.write(msg)
        transport.write_eof()
        got = await proto.done
        # Echo's eof_received returns None: the server closes after flushing.
        assert await proto.lost is None
        server.close()
        await server.wait_closed()
        return got == msg, proto.hints

    same, hints = run(any_loop, main())
    assert same
    assert hints == {-1}


def test_echo_over_unix_server(any_loop, tmp_path):
    path = str(tmp_path / "echo.sock")

    async def main():
        server = await any_loop.create_unix_server(Echo, path)
        transport, proto = await any_loop.create_unix_connection(Recorder, path)
        assert transport.get_extra_info("peername") == path
        msg = payload(70_000, seed=2)
        transport.write(msg)
        assert await proto.wait_bytes(len(msg)) == msg
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(any_loop, main())


# -- write / writelines --------------------------------------------------------------------------


def test_write_accepts_bytes_likes(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        transport.write(b"ab")
        transport.write(bytearray(b"cd"))
        transport.write(memoryview(b"xefx")[1:3])
        transport.write(b"")
        transport.writelines([b"gh", bytearray(b"ij"), memoryview(b"kl")])
        transport.writelines([])
        transport.writelines(iter([b"m", b"n"]))
        transport.close()
        return await recv_all(any_loop, b)

    assert run(any_loop, main()) == b"abcdefghijklmn"


def test_bytearray_mutated_after_write_is_sent_as_written(any_loop, small_pair):
    if is_stock(any_loop) and PY312:
        pytest.skip("stock 3.12+ queues the caller's bytearray itself: later mutations are sent")
    a, b = small_pair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        big = payload(1 << 20)
        transport.write(big)
        assert transport.get_write_buffer_size() > 0  # what follows is queued, not sent
        ba1, ba2, ba3 = bytearray(b"hello"), bytearray(b"world"), bytearray(b"12345")
        transport.write(ba1)
        transport.write(memoryview(ba2))
        transport.writelines([ba3])
        ba1[:] = b"HELLO"
        ba2[:] = b"WORLD"
        ba3[:] = b"ABCDE"
        transport.close()
        got = await recv_all(any_loop, b)
        return got == big + b"helloworld12345", got[len(big) :]

    same, tail = run(any_loop, main())
    assert same, tail


def test_large_write_arrives_intact(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        msg = payload(8 << 20, seed=3)
        transport.write(msg)
        got = await recv_exactly(any_loop, b, len(msg))
        # Every byte checked, not only the length.
        assert got == msg
        assert transport.get_write_buffer_size() == 0
        transport.close()
        assert await proto.lost is None

    run(any_loop, main())


def test_many_small_writes_keep_order(any_loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        parts = [str(i).encode() + b"," for i in range(20000)]
        for i, part in enumerate(parts):
            if i % 3 == 0:
                transport.write(part)
            elif i % 3 == 1:
                transport.write(bytearray(part))
            else:
                transport.writelines([memoryview(part)])
        transport.close()
        return await recv_all(any_loop, b), b"".join(parts)

    got, want = run(any_loop, main())
    assert got == want


# Not any buffer: the stock write() takes bytes, bytearray and memoryview only.
@pytest.mark.parametrize("bad", ["str", None, 1, [b"x"], array.array("b", b"xy")])
def test_write_rejects_non_bytes(any_loop, sockpair, bad):
    a, b = sockpair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        try:
            with pytest.raises(TypeError) as info:
                transport.write(bad)
            return str(info.value)
        finally:
            transport.close()

    msg = run(any_loop, main())
    # 3.14 names the accepted types.
    what = "a bytes, bytearray, or memoryview object" if PY314 else "a bytes-like object"
    assert msg == f"data argument must be {what}, not {type(bad).__name__!r}"


@pytest.mark.parametrize(
    "bad, old, new",
    [
        (["x"], "sequence item 0: expected a bytes-like object, str found", None),
        ([b"a", "x"], "sequence item 1: expected a bytes-like object, str found", None),
        (5, "can only join an iterable", "'int' object is not iterable"),
    ],
)
def test_writelines_rejects_non_bytes(any_loop, sockpair, bad, old, new):
    if is_stock(any_loop) and sys.version_info >= (3, 15) and bad == [b"a", "x"]:
        pytest.skip(
            "stock 3.15 queues the items before the bad one, with no writer armed: they and "
            "every later write stay queued (its writelines buffers item by item)"
        )
    a, b = sockpair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        try:
            with pytest.raises(TypeError) as info:
                transport.writelines(bad)
            transport.write(b"after")
        finally:
            transport.close()
        return str(info.value), await recv_all(any_loop, b)

    msg, sent = run(any_loop, main())
    if PY312:
        assert msg == (new or "memoryview: a bytes-like object is required, not 'str'")
    else:
        assert msg == old
    # Nothing of a rejected writelines() is sent.
    assert sent == b"after"


def test_write_after_write_eof_raises(request, any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        assert transport.can_write_eof()
        transport.write(b"data")
        transport.write_eof()
        transport.write_eof()  # a second one is a no-op
        with pytest.raises(RuntimeError) as w:
            transport.write(b"more")
        with pytest.raises(RuntimeError) as wl:
            transport.writelines([b"more"])
        got = await recv_all(any_loop, b)
        transport.close()
        return str(w.value), str(wl.value), got

    w, wl, got = run(any_loop, main())
    assert w == "Cannot call write() after write_eof()"
    assert wl == f"Cannot call {'writelines' if PY312 else 'write'}() after write_eof()"
    assert got == b"data"


def test_write_after_close_is_dropped(any_loop, sockpair, caplog):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.write(b"before")
        transport.close()
        assert transport.is_closing()
        for _ in range(10):
            transport.write(b"after")  # no exception
        await proto.lost
        return await recv_all(any_loop, b)

    with caplog.at_level("WARNING", logger="asyncio"):
        assert run(any_loop, main()) == b"before"
    # Past a threshold the stock loop warns about writes to a lost connection.
    assert "socket.send() raised exception." in caplog.text


# -- flow control --------------------------------------------------------------------------------


def test_write_buffer_limits_defaults_and_setting(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        try:
            out = [transport.get_write_buffer_limits()]
            transport.set_write_buffer_limits(high=100)
            out.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits(low=100)
            out.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits(high=50, low=10)
            out.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits(0, 0)
            out.append(transport.get_write_buffer_limits())
            transport.set_write_buffer_limits()
            out.append(transport.get_write_buffer_limits())
            errors = []
            for kw in ({"high": 1, "low": 2}, {"high": -1}, {"low": -4}):
                with pytest.raises(ValueError) as info:
                    transport.set_write_buffer_limits(**kw)
                errors.append(str(info.value))
            out.append(transport.get_write_buffer_limits())
            return out, errors
        finally:
            transport.close()

    limits, errors = run(any_loop, main())
    assert limits == [
        (16384, 65536),
        (25, 100),
        (100, 400),
        (10, 50),
        (0, 0),
        (16384, 65536),
        (16384, 65536),
    ]
    assert errors == [
        "high (1) must be >= low (2) must be >= 0",
        "high (-1) must be >= low (-1) must be >= 0",
        "high (-16) must be >= low (-4) must be >= 0",
    ]


def test_pause_and_resume_writing_at_the_water_marks(any_loop, small_pair):
    a, b = small_pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.set_write_buffer_limits(high=50_000, low=10_000)
        transport.write(b"x" * 40_000)
        assert proto.flow == []  # at most the high mark: no pause
        transport.write(payload(200_000))
        size = transport.get_write_buffer_size()
        assert size > 50_000
        assert proto.flow == [("pause", size)]
        transport.write(b"y" * 1000)  # already paused: no second pause
        assert len(proto.flow) == 1
        got = await recv_exactly(any_loop, b, 241_000)
        assert len(got) == 241_000
        await spin()
        transport.close()
        await proto.lost
        return proto.flow

    flow = run(any_loop, main())
    assert [f[0] for f in flow] == ["pause", "resume"]
    assert flow[1][1] <= 10_000


def test_set_write_buffer_limits_pauses_when_over_the_new_mark(any_loop, small_pair):
    a, b = small_pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.write(payload(60_000))
        size = transport.get_write_buffer_size()
        assert 1000 < size <= 65536
        assert proto.flow == []
        transport.set_write_buffer_limits(high=1000)
        flow = list(proto.flow)
        transport.abort()
        await proto.lost
        return flow, size

    flow, size = run(any_loop, main())
    assert flow == [("pause", size)]


def test_zero_high_water_mark_pauses_on_any_buffering(any_loop, small_pair):
    a, b = small_pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.set_write_buffer_limits(0)
        transport.write(b"small")  # sent at once: nothing buffered, no pause
        assert proto.flow == []
        transport.write(payload(500_000))
        assert [f[0] for f in proto.flow] == ["pause"]
        await recv_exactly(any_loop, b, 500_005)
        await spin()
        flow = [f[0] for f in proto.flow]
        transport.close()
        return flow, transport.get_write_buffer_size()

    assert run(any_loop, main()) == (["pause", "resume"], 0)


# -- reading -------------------------------------------------------------------------------------


def test_pause_and_resume_reading(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        await proto.made
        await spin()
        states = [transport.is_reading()]
        transport.pause_reading()
        transport.pause_reading()  # idempotent
        states.append(transport.is_reading())
        b.send(b"while paused")
        await settle(any_loop)
        assert proto.data == b""
        transport.resume_reading()
        transport.resume_reading()
        states.append(transport.is_reading())
        await proto.wait_bytes(12)
        transport.close()
        states.append(transport.is_reading())
        transport.pause_reading()  # no-ops on a closing transport
        transport.resume_reading()
        states.append(transport.is_reading())
        await proto.lost
        return states, bytes(proto.data)

    assert run(any_loop, main()) == ([True, False, True, False, False], b"while paused")


def test_eof_while_paused_is_delivered_on_resume(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        await spin()
        transport.pause_reading()
        b.send(b"last")
        b.shutdown(socket.SHUT_WR)
        await settle(any_loop)
        assert proto.events == ["made"]
        transport.resume_reading()
        await proto.lost
        return proto.events, bytes(proto.data)

    assert run(any_loop, main()) == (["made", "data", "eof", "lost"], b"last")


# -- EOF, half-close, closing --------------------------------------------------------------------


def test_write_eof_half_closes(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.write(b"request")
        transport.write_eof()
        assert await recv_all(any_loop, b) == b"request"  # the peer sees EOF
        assert not transport.is_closing()
        await any_loop.sock_sendall(b, b"response")  # reading side still open
        got = await proto.wait_bytes(8)
        b.close()
        await proto.lost
        return got, proto.events

    got, events = run(any_loop, main())
    assert got == b"response"
    assert events == ["made", "data", "eof", "lost"]


@pytest.mark.parametrize("keep_open", [True, False])
def test_eof_received_return_value(any_loop, sockpair, keep_open):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a, Recorder(eof_result=keep_open))
        b.shutdown(socket.SHUT_WR)
        await proto.eof
        await spin()
        closing = transport.is_closing()
        if keep_open:
            # Still writable: the peer gets what we write after its EOF.
            transport.write(b"still here")
            assert await recv_exactly(any_loop, b, 10) == b"still here"
            assert not proto.lost.done()
            transport.close()
        exc = await proto.lost
        return closing, exc, proto.events

    closing, exc, events = run(any_loop, main())
    assert closing is not keep_open
    assert exc is None
    assert events == ["made", "eof", "lost"]


def test_peer_close_gives_eof_then_connection_lost(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        await any_loop.sock_sendall(b, b"bye")
        b.close()
        exc = await proto.lost
        return exc, proto.events, bytes(proto.data), transport.is_closing()

    assert run(any_loop, main()) == (None, ["made", "data", "eof", "lost"], b"bye", True)


def test_peer_reset_gives_connection_reset_error(any_loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        contexts = check_exc_handler(any_loop)
        transport, proto = await transport_over(any_loop, a)
        await spin()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        b.close()
        exc = await proto.lost
        await spin()
        return exc, proto.events, contexts

    exc, events, contexts = run(any_loop, main())
    assert isinstance(exc, ConnectionResetError)
    assert events == ["made", "lost"]
    assert contexts == []  # a reset is not reported to the exception handler


def test_write_to_reset_peer_loses_the_connection(any_loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        contexts = check_exc_handler(any_loop)
        transport, proto = await transport_over(any_loop, a)
        transport.pause_reading()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        b.close()
        await settle(any_loop)
        transport.write(b"x" * 1000)
        transport.write(b"x" * 1000)
        exc = await proto.lost
        return exc, contexts

    exc, contexts = run(any_loop, main())
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError))
    assert contexts == []


def test_close_flushes_buffered_data_first(any_loop, small_pair):
    a, b = small_pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        msg = payload(1 << 20, seed=4)
        transport.write(msg)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        transport.close()  # idempotent
        assert transport.is_closing()
        await settle(any_loop)
        assert not proto.lost.done()  # waits for the buffer to drain
        got = await recv_all(any_loop, b)
        exc = await proto.lost
        return got == msg, exc, proto.events

    assert run(any_loop, main()) == (True, None, ["made", "lost"])


def test_abort_drops_buffered_data(any_loop, small_pair):
    a, b = small_pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        msg = payload(1 << 20, seed=5)
        transport.write(msg)
        buffered = transport.get_write_buffer_size()
        assert buffered > 0
        transport.abort()
        assert transport.is_closing()
        transport.write(b"after abort")
        exc = await proto.lost
        got = await recv_all(any_loop, b)
        # Exactly what the kernel had taken before abort() arrives, nothing more.
        return exc, got == msg[: len(msg) - buffered], proto.events

    assert run(any_loop, main()) == (None, True, ["made", "lost"])


def test_connection_lost_is_called_once_and_late(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.close()
        assert not proto.lost.done()  # called soon, not from inside close()
        transport.close()
        transport.abort()
        await proto.lost
        await spin()
        return proto.events

    assert run(any_loop, main()) == ["made", "lost"]


# -- extra info, protocol ------------------------------------------------------------------------


def test_get_extra_info(any_loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        try:
            sock = transport.get_extra_info("socket")
            return (
                sock.fileno() == a.fileno(),
                sock.family,
                sock.type,
                transport.get_extra_info("sockname") == a.getsockname(),
                transport.get_extra_info("peername") == b.getsockname(),
                transport.get_extra_info("no such key"),
                transport.get_extra_info("no such key", "dflt"),
                isinstance(transport, asyncio.Transport),
                isinstance(transport, asyncio.ReadTransport),
                isinstance(transport, asyncio.WriteTransport),
                transport.get_extra_info("sslcontext"),
            )
        finally:
            transport.close()

    assert run(any_loop, main()) == (
        True,
        socket.AF_INET,
        socket.SOCK_STREAM,
        True,
        True,
        None,
        "dflt",
        True,
        True,
        True,
        None,
    )


def test_tcp_nodelay(any_loop, tcp_pair):
    a, b = tcp_pair

    def nodelay(transport):
        sock = transport.get_extra_info("socket")
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    async def main():
        server_side = any_loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                server_side.set_result(transport)

        server = await any_loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client, _ = await any_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        accepted = await server_side
        # A socket made with proto=0 (not IPPROTO_TCP) is left alone, as the stock loop does.
        raw, _ = await transport_over(any_loop, a)
        out = nodelay(client), nodelay(accepted), nodelay(raw)
        for t in (client, accepted, raw):
            t.close()
        server.close()
        await server.wait_closed()
        return out

    assert run(any_loop, main()) == (True, True, False)


def test_set_protocol_switches_receiver(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, first = await transport_over(any_loop, a)
        assert transport.get_protocol() is first
        await any_loop.sock_sendall(b, b"one")
        await first.wait_bytes(3)
        second = Recorder()
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        await any_loop.sock_sendall(b, b"two")
        await second.wait_bytes(3)
        b.close()
        await second.lost
        return bytes(first.data), bytes(second.data), first.lost.done()

    assert run(any_loop, main()) == (b"one", b"two", False)


def test_is_closing(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        states = [transport.is_closing()]
        transport.write_eof()
        states.append(transport.is_closing())
        transport.close()
        states.append(transport.is_closing())
        await proto.lost
        states.append(transport.is_closing())
        return states

    assert run(any_loop, main()) == [False, False, True, True]


def test_unclosed_transport_warns(any_loop, sockpair):
    a, b = sockpair

    async def main():
        await transport_over(any_loop, a, asyncio.Protocol())
        await spin()

    run(any_loop, main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Closing the loop drops the transport's reader, the last reference to it.
        any_loop.close()
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any(m.startswith("unclosed transport") for m in messages), messages
    assert a.fileno() == -1  # the warning closed the socket


# -- protocol errors -----------------------------------------------------------------------------


class Raising(asyncio.Protocol):
    def __init__(self, where):
        self.where = where
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        if self.where == "data_received":
            raise ZeroDivisionError("boom")

    def eof_received(self):
        if self.where == "eof_received":
            raise ZeroDivisionError("boom")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class RaisingBuffered(asyncio.BufferedProtocol):
    def __init__(self, where):
        self.where = where
        self.lost = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint):
        if self.where == "get_buffer":
            raise ZeroDivisionError("boom")
        if self.where == "empty_buffer":
            return bytearray()
        return bytearray(100)

    def buffer_updated(self, nbytes):
        if self.where == "buffer_updated":
            raise ZeroDivisionError("boom")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize(
    "factory, where, message",
    [
        (Raising, "data_received", "Fatal error: protocol.data_received() call failed."),
        (Raising, "eof_received", "Fatal error: protocol.eof_received() call failed."),
        (RaisingBuffered, "get_buffer", "Fatal error: protocol.get_buffer() call failed."),
        (RaisingBuffered, "empty_buffer", "Fatal error: protocol.get_buffer() call failed."),
        (RaisingBuffered, "buffer_updated", "Fatal error: protocol.buffer_updated() call failed."),
    ],
)
def test_protocol_exception_goes_to_exception_handler(any_loop, sockpair, factory, where, message):
    a, b = sockpair

    async def main():
        contexts = check_exc_handler(any_loop)
        proto = factory(where)
        transport, _ = await transport_over(any_loop, a, proto)
        b.send(b"data")
        if where == "eof_received":
            b.shutdown(socket.SHUT_WR)
        exc = await proto.lost
        await spin()
        return exc, contexts, transport, proto

    exc, contexts, transport, proto = run(any_loop, main())
    assert len(contexts) == 1, contexts
    ctx = contexts[0]
    assert ctx["message"] == message
    assert ctx["exception"] is exc
    assert ctx["transport"] is transport
    assert ctx["protocol"] is proto
    if where == "empty_buffer":
        assert type(exc) is RuntimeError
        assert str(exc) == "get_buffer() returned an empty buffer"
    else:
        assert type(exc) is ZeroDivisionError
    assert transport.is_closing()


# -- add_reader on a transport's fd --------------------------------------------------------------


def test_fd_owned_by_a_transport_refuses_readers_and_writers(any_loop, sockpair):
    a, b = sockpair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        fd = a.fileno()
        msgs = []
        for call in (
            lambda: any_loop.add_reader(fd, print),
            lambda: any_loop.add_writer(fd, print),
            lambda: any_loop.remove_reader(fd),
            lambda: any_loop.remove_writer(fd),
        ):
            with pytest.raises(RuntimeError) as info:
                call()
            msgs.append(str(info.value))
        transport.close()
        await proto.lost
        return fd, msgs

    fd, msgs = run(any_loop, main())
    assert all(m.startswith(f"File descriptor {fd} is used by transport <") for m in msgs), msgs


# -- servers -------------------------------------------------------------------------------------


class Counting(asyncio.Protocol):
    """Server-side echo protocol that counts live connections (class-level, per test)."""

    def __init__(self, stats):
        self.stats = stats

    def connection_made(self, transport):
        self.transport = transport
        self.stats["active"] += 1
        self.stats["max"] = max(self.stats["max"], self.stats["active"])
        self.stats["transports"].append(transport)

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.stats["active"] -= 1
        self.stats["lost"].append(exc)
        waiter = self.stats.get("waiter")
        if waiter is not None and not waiter.done() and self.stats["active"] == 0:
            waiter.set_result(None)


def new_stats():
    return {"active": 0, "max": 0, "transports": [], "lost": []}


async def all_lost(stats):
    if stats["active"]:
        stats["waiter"] = asyncio.get_running_loop().create_future()
        await stats["waiter"]


def refused_port():
    """A bound, not listening socket: connecting to its port is refused, and no one else
    can take the port while it is open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def test_server_attributes_and_close(any_loop):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0)
        sockets = server.sockets
        port = sockets[0].getsockname()[1]
        info = (
            type(sockets).__name__,
            len(sockets),
            type(sockets[0]).__name__,
            sockets[0].getsockname()[0],
            server.is_serving(),
            server.get_loop() is any_loop,
            repr(server).startswith("<Server sockets=("),
            isinstance(server, asyncio.AbstractServer),
        )
        server.close()
        server.close()  # idempotent
        after = (server.is_serving(), server.sockets)
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        return info, after

    info, after = run(any_loop, main())
    assert info == ("tuple", 1, "TransportSocket", "127.0.0.1", True, True, True, True)
    assert after == (False, ())


def test_closed_server_keeps_its_connections(any_loop):
    async def main():
        stats = new_stats()
        server = await any_loop.create_server(lambda: Counting(stats), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        server.close()
        waiting = asyncio.ensure_future(server.wait_closed())
        transport.write(b"still echoed")
        assert await proto.wait_bytes(12) == b"still echoed"
        await spin()
        pending = not waiting.done()
        transport.close()
        await waiting
        await all_lost(stats)
        return pending, stats["lost"]

    pending, lost = run(any_loop, main())
    # 3.12.1+: wait_closed() waits for the connections too; before, it returned at once.
    assert pending is WAIT_CLOSED_WAITS
    assert lost == [None]


def test_serve_forever_and_cancel(any_loop):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        port = server.sockets[0].getsockname()[1]
        assert not server.is_serving()
        task = asyncio.ensure_future(server.serve_forever())
        await spin()
        serving = server.is_serving()
        with pytest.raises(RuntimeError) as again:
            await server.serve_forever()
        transport, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        transport.write(b"hi")
        await proto.wait_bytes(2)
        transport.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = server.is_serving(), server.sockets
        with pytest.raises(RuntimeError) as closed:
            await server.serve_forever()
        return serving, str(again.value), after, str(closed.value), bytes(proto.data)

    serving, again, after, closed, data = run(any_loop, main())
    assert serving
    assert again.startswith("server <Server sockets=(")
    assert again.endswith(",)> is already being awaited on serve_forever()")
    assert after == (False, ())
    assert closed == "server <Server sockets=()> is closed"
    assert data == b"hi"


def test_server_async_with(any_loop):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0)
        async with server as entered:
            same = entered is server
            serving = server.is_serving()
        return same, serving, server.is_serving(), server.sockets

    assert run(any_loop, main()) == (True, True, False, ())


def test_start_serving_false_then_start_serving(any_loop):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        port = server.sockets[0].getsockname()[1]
        states = [server.is_serving()]
        # Bound but not listening yet.
        with pytest.raises(ConnectionRefusedError):
            await any_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        await server.start_serving()
        await server.start_serving()  # a second call is a no-op
        states.append(server.is_serving())
        transport, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        transport.write(b"ping")
        data = await proto.wait_bytes(4)
        transport.close()
        server.close()
        await server.wait_closed()
        return states, data

    assert run(any_loop, main()) == ([False, True], b"ping")


@pytest.mark.skipif(not PY313, reason="Server.close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_server_close_and_abort_clients(any_loop, how):
    async def main():
        stats = new_stats()
        server = await any_loop.create_server(lambda: Counting(stats), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await any_loop.create_connection(Recorder, "127.0.0.1", port) for _ in range(3)]
        for transport, proto in clients:
            transport.write(b"x")
            await proto.wait_bytes(1)
        server.close()
        getattr(server, how)()
        await server.wait_closed()
        results = []
        for transport, proto in clients:
            results.append((await proto.wait_eof(), proto.events[:3]))
            transport.close()
        await all_lost(stats)
        return results, stats["lost"]

    results, lost = run(any_loop, main())
    assert results == [(b"x", ["made", "data", "eof"])] * 3
    assert lost == [None, None, None]


def test_create_server_on_several_hosts(any_loop):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main():
        server = await any_loop.create_server(Echo, ["127.0.0.1", "::1"], 0)
        families = sorted(s.family for s in server.sockets)
        for s in server.sockets:
            host, port = s.getsockname()[:2]
            transport, proto = await any_loop.create_connection(Recorder, host, port)
            transport.write(host.encode())
            await proto.wait_bytes(len(host))
            assert proto.data == host.encode()
            transport.close()
        server.close()
        await server.wait_closed()
        return families

    assert run(any_loop, main()) == sorted([socket.AF_INET, socket.AF_INET6])


def test_create_server_reuse_port(request, any_loop):

    async def main():
        first = await any_loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        second = await any_loop.create_server(Echo, "127.0.0.1", port, reuse_port=True)
        same = second.sockets[0].getsockname()[1] == port
        with pytest.raises(OSError) as info:
            await any_loop.create_server(Echo, "127.0.0.1", port)
        for server in (first, second):
            server.close()
            await server.wait_closed()
        return same, info.value.errno, str(info.value), port

    same, err, msg, port = run(any_loop, main())
    assert same
    assert err == errno.EADDRINUSE
    reason = f"[errno {errno.EADDRINUSE}] " * PY313 + "address already in use"
    assert msg == (
        f"[Errno {errno.EADDRINUSE}] error while attempting to bind on address "
        f"('127.0.0.1', {port}): {reason}"
    )


def test_create_server_argument_errors(any_loop):
    async def main():
        out = []
        with socket.socket() as sock:
            for kwargs, exc in [
                ({"host": "127.0.0.1", "port": 0, "sock": sock}, ValueError),
                ({}, ValueError),
                ({"host": "127.0.0.1", "port": 0, "ssl": True}, TypeError),
                ({"host": "127.0.0.1", "port": 0, "ssl_handshake_timeout": 1}, ValueError),
            ]:
                with pytest.raises(exc) as info:
                    await any_loop.create_server(Echo, **kwargs)
                out.append(str(info.value))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await any_loop.create_server(Echo, sock=udp)
            out.append(str(info.value).startswith("A Stream Socket was expected, got <socket"))
        return out

    assert run(any_loop, main()) == [
        "host/port and sock can not be specified at the same time",
        "Neither host/port nor sock were specified",
        "ssl argument must be an SSLContext or None",
        "ssl_handshake_timeout is only meaningful with ssl",
        True,
    ]


# -- Unix servers --------------------------------------------------------------------------------


def test_unix_server_path_and_cleanup(any_loop, tmp_path):
    path = str(tmp_path / "srv.sock")

    async def main():
        server = await any_loop.create_unix_server(Echo, path)
        name = server.sockets[0].getsockname()
        exists = os.path.exists(path)
        transport, proto = await any_loop.create_unix_connection(Recorder, path)
        transport.write(b"unix")
        data = await proto.wait_bytes(4)
        transport.close()
        server.close()
        await server.wait_closed()
        return name, exists, data, os.path.exists(path)

    name, exists, data, after = run(any_loop, main())
    assert (name, exists, data) == (path, True, b"unix")
    # 3.13 removes the socket file on close (cleanup_socket=True); before, it stays.
    assert after is not PY313


@pytest.mark.skipif(not PY313, reason="cleanup_socket is 3.13+")
def test_unix_server_cleanup_socket_false(any_loop, tmp_path):
    path = str(tmp_path / "keep.sock")

    async def main():
        server = await any_loop.create_unix_server(Echo, path, cleanup_socket=False)
        server.close()
        await server.wait_closed()
        kept = os.path.exists(path)
        # A socket file replaced by someone else is not removed either.
        other = str(tmp_path / "other.sock")
        server = await any_loop.create_unix_server(Echo, other)
        os.unlink(other)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(other)
            server.close()
            await server.wait_closed()
            return kept, os.path.exists(other)

    assert run(any_loop, main()) == (True, True)


@pytest.mark.skipif(PY313, reason="before 3.13 there is no cleanup_socket")
def test_unix_server_cleanup_socket_unknown_before_313(request, any_loop, tmp_path):

    async def main():
        with pytest.raises(TypeError) as info:
            await any_loop.create_unix_server(Echo, str(tmp_path / "s"), cleanup_socket=False)
        return str(info.value)

    assert "cleanup_socket" in run(any_loop, main())


def test_unix_server_replaces_a_stale_socket_file(any_loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)

    async def main():
        server = await any_loop.create_unix_server(Echo, path)
        transport, proto = await any_loop.create_unix_connection(Recorder, path)
        transport.write(b"fresh")
        data = await proto.wait_bytes(5)
        transport.close()
        server.close()
        await server.wait_closed()
        return data

    assert run(any_loop, main()) == b"fresh"


def test_unix_server_abstract_namespace(any_loop):
    path = f"\0oxloop-test-{uuid.uuid4().hex}"

    async def main():
        server = await any_loop.create_unix_server(Echo, path)
        name = server.sockets[0].getsockname()
        transport, proto = await any_loop.create_unix_connection(Recorder, path)
        transport.write(b"abstract")
        data = await proto.wait_bytes(8)
        transport.close()
        server.close()
        await server.wait_closed()
        return name, data

    name, data = run(any_loop, main())
    assert name == path.encode()
    assert data == b"abstract"


def test_unix_argument_errors(any_loop, tmp_path):
    async def main():
        out = []
        with socket.socket(socket.AF_UNIX) as sock:
            for call in (
                lambda: any_loop.create_unix_connection(Echo),
                lambda: any_loop.create_unix_connection(Echo, "p", sock=sock),
                lambda: any_loop.create_unix_connection(Echo, "p", server_hostname="h"),
                lambda: any_loop.create_unix_connection(Echo, "p", ssl_handshake_timeout=1),
                lambda: any_loop.create_unix_server(Echo),
                lambda: any_loop.create_unix_server(Echo, "p", sock=sock),
            ):
                with pytest.raises(ValueError) as info:
                    await call()
                out.append(str(info.value))
            with pytest.raises(TypeError) as info:
                await any_loop.create_unix_server(Echo, str(tmp_path / "s"), ssl=True)
            out.append(str(info.value))
        with socket.socket() as tcp:
            with pytest.raises(ValueError) as info:
                await any_loop.create_unix_server(Echo, sock=tcp)
            out.append(str(info.value).startswith("A UNIX Domain Stream Socket was expected"))
        with pytest.raises(FileNotFoundError):
            await any_loop.create_unix_connection(Echo, str(tmp_path / "missing"))
        return out

    assert run(any_loop, main()) == [
        "no path and sock were specified",
        "path and sock can not be specified at the same time",
        "server_hostname is only meaningful with ssl",
        "ssl_handshake_timeout is only meaningful with ssl",
        "path was not specified, and no sock specified",
        "path and sock can not be specified at the same time",
        "ssl argument must be an SSLContext or None",
        True,
    ]


# -- create_connection ---------------------------------------------------------------------------


def test_create_connection_refused(any_loop):
    async def main():
        with refused_port() as blocker:
            port = blocker.getsockname()[1]
            with pytest.raises(ConnectionRefusedError) as info:
                await any_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            return str(info.value), port

    msg, port = run(any_loop, main())
    assert msg == f"[Errno {errno.ECONNREFUSED}] Connect call failed ('127.0.0.1', {port})"


@pytest.mark.skipif(not PY312, reason="all_errors is 3.12+")
def test_create_connection_all_errors(any_loop):
    async def main():
        with refused_port() as blocker:
            port = blocker.getsockname()[1]
            with pytest.raises(ExceptionGroup) as info:  # noqa: F821
                await any_loop.create_connection(
                    asyncio.Protocol, "127.0.0.1", port, all_errors=True
                )
            return info.value

    group = run(any_loop, main())
    assert str(group).startswith("create_connection failed")
    assert [type(e) for e in group.exceptions] == [ConnectionRefusedError]


def test_create_connection_argument_errors(any_loop):
    async def main():
        out = []
        with socket.socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for kwargs in (
                {"host": "127.0.0.1", "port": 1, "sock": sock},
                {"host": "127.0.0.1", "port": 1, "server_hostname": "x"},
                {"sock": sock, "ssl": True},
                {},
                {"host": "127.0.0.1", "port": 1, "ssl_handshake_timeout": 1},
                {"sock": udp},
            ):
                with pytest.raises(ValueError) as info:
                    await any_loop.create_connection(asyncio.Protocol, **kwargs)
                out.append(str(info.value).split(" <")[0])
        return out

    assert run(any_loop, main()) == [
        "host/port and sock can not be specified at the same time",
        "server_hostname is only meaningful with ssl",
        "You must set server_hostname when using ssl without a host",
        "host and port was not specified and no sock specified",
        "ssl_handshake_timeout is only meaningful with ssl",
        "A Stream Socket was expected, got",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"happy_eyeballs_delay": 0.05}, {"happy_eyeballs_delay": 0.05, "interleave": 2}],
    ids=["sequential", "happy-eyeballs", "interleave-2"],
)
def test_create_connection_tries_every_address(any_loop, kwargs):
    """A name resolving to a refused address first: the next one is tried and wins."""

    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with refused_port() as blocker:
            bad = blocker.getsockname()[1]

            async def fake_getaddrinfo(host, port_, **kw):
                assert host == "multi.invalid"
                stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
                return [
                    (socket.AF_INET, stream, tcp, "", ("127.0.0.1", bad)),
                    (socket.AF_INET, stream, tcp, "", ("127.0.0.1", port)),
                ]

            any_loop.getaddrinfo = fake_getaddrinfo
            transport, proto = await any_loop.create_connection(
                Recorder, "multi.invalid", 80, **kwargs
            )
        peer = transport.get_extra_info("peername")
        transport.write(b"he")
        data = await proto.wait_bytes(2)
        transport.close()
        server.close()
        await server.wait_closed()
        return peer, data, port

    peer, data, port = run(any_loop, main())
    assert peer == ("127.0.0.1", port)
    assert data == b"he"


def test_create_connection_local_addr(request, any_loop):

    async def main():
        accepted = any_loop.create_future()

        class Server(Echo):
            def connection_made(self, transport):
                super().connection_made(transport)
                accepted.set_result(transport.get_extra_info("peername"))

        server = await any_loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await any_loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, local_addr=("127.0.0.1", 0)
        )
        sockname = transport.get_extra_info("sockname")
        peer_seen = await accepted
        transport.close()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            busy = taken.getsockname()
            with pytest.raises(OSError) as info:
                await any_loop.create_connection(
                    asyncio.Protocol, "127.0.0.1", port, local_addr=busy
                )
        server.close()
        await server.wait_closed()
        return sockname, peer_seen, info.value, busy

    sockname, peer_seen, exc, busy = run(any_loop, main())
    assert sockname[0] == "127.0.0.1"
    assert peer_seen == sockname
    assert exc.errno == errno.EADDRINUSE
    assert str(exc) == (
        f"[Errno {errno.EADDRINUSE}] error while attempting to bind on address "
        f"{busy!r}: " + f"[errno {errno.EADDRINUSE}] " * PY313 + "address already in use"
    )


def test_connect_accepted_socket(any_loop):
    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname())
            conn, _ = listener.accept()
        with client:
            transport, proto = await any_loop.connect_accepted_socket(Echo, conn)
            client.setblocking(False)
            await any_loop.sock_sendall(client, b"accepted")
            data = await recv_exactly(any_loop, client, 8)
            peer = transport.get_extra_info("peername") == client.getsockname()
            transport.close()
            rest = await recv_all(any_loop, client)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await any_loop.connect_accepted_socket(Echo, udp)
        return data, peer, rest, str(info.value).startswith("A Stream Socket was expected")

    assert run(any_loop, main()) == (b"accepted", True, b"", True)


# -- asyncio streams -----------------------------------------------------------------------------


async def upper_handler(reader, writer):
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def stream_client(reader, writer):
    got = []
    for word in (b"alpha\n", b"beta\n", b"x" * 50_000 + b"\n"):
        writer.write(word)
        await writer.drain()
        got.append(await reader.readline())
    writer.write_eof()
    got.append(await reader.read())
    writer.close()
    await writer.wait_closed()
    return got


WANT_UPPER = [b"ALPHA\n", b"BETA\n", b"X" * 50_000 + b"\n", b""]


def test_streams_tcp_round_trip(any_loop):
    async def main():
        server = await asyncio.start_server(upper_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = await stream_client(*await asyncio.open_connection("127.0.0.1", port))
        server.close()
        await server.wait_closed()
        return got

    assert run(any_loop, main()) == WANT_UPPER


def test_streams_unix_round_trip(any_loop, tmp_path):
    path = str(tmp_path / "streams.sock")

    async def main():
        server = await asyncio.start_unix_server(upper_handler, path)
        got = await stream_client(*await asyncio.open_unix_connection(path))
        server.close()
        await server.wait_closed()
        return got

    assert run(any_loop, main()) == WANT_UPPER


# -- sendfile ------------------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = payload(3 << 20, seed=7)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


def test_sendfile_native(any_loop, small_tcp_pair, data_file):
    a, b = small_tcp_pair
    f, data = data_file

    errors = []
    any_loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.write(b"head:")
        task = asyncio.ensure_future(any_loop.sendfile(transport, f))
        await spin(2)
        # While sendfile runs the transport refuses writes.
        with pytest.raises(RuntimeError) as info:
            transport.write(b"x")
        got = await recv_exactly(any_loop, b, 5 + len(data))
        sent = await task
        position = f.tell()
        sent2 = await any_loop.sendfile(transport, f, 1000, 5000)
        got2 = await recv_exactly(any_loop, b, 5000)
        position2 = f.tell()
        transport.write(b":tail")
        got3 = await recv_exactly(any_loop, b, 5)
        transport.close()
        await proto.lost
        return (
            str(info.value),
            got == b"head:" + data,
            sent,
            position,
            sent2,
            got2 == data[1000:6000],
            position2,
            got3,
        )

    result = run(any_loop, main())
    # Nothing went to the exception handler (waiting on the transport's own socket is
    # sendfile's business, not a misuse of the fd).
    assert errors == []
    assert result == (
        "unable to write; sendfile is in progress",
        True,
        len(data),
        len(data),
        5000,
        True,
        6000,
        b":tail",
    )


def test_sendfile_on_a_closing_transport(any_loop, sockpair, data_file):
    a, b = sockpair
    f, _ = data_file

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.close()
        with pytest.raises(RuntimeError) as info:
            await any_loop.sendfile(transport, f)
        await proto.lost
        return str(info.value)

    assert run(any_loop, main()) == "Transport is closing"


# -- stats (oxloop only) -------------------------------------------------------------------------


def test_stats_count_transports_and_bytes(loop):
    async def main():
        base = loop.stats()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Recorder, "127.0.0.1", port)
        msg = payload(300_000, seed=8)
        transport.write(msg)
        await proto.wait_bytes(len(msg))
        during = loop.stats()
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        await spin()
        return base, during, loop.stats()

    base, during, after = run(loop, main())
    assert during["open_transports"] - base["open_transports"] == 2
    # Client to server and back: each byte written twice and read twice.
    assert during["bytes_written"] - base["bytes_written"] == 600_000
    assert during["bytes_read"] - base["bytes_read"] == 600_000
    assert after["open_transports"] == base["open_transports"]
    assert after["bytes_written"] == during["bytes_written"]
    assert after["bytes_read"] == during["bytes_read"]


# -- resources, scale ----------------------------------------------------------------------------


def test_no_fd_leak_after_a_server_and_many_connections(any_loop):
    async def main():
        await spin()
        before = open_fds()
        stats = new_stats()
        server = await any_loop.create_server(lambda: Counting(stats), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for batch in range(4):
            conns = [
                await any_loop.create_connection(Recorder, "127.0.0.1", port) for _ in range(50)
            ]
            for i, (transport, _) in enumerate(conns):
                transport.write(b"%d-%d;" % (batch, i))
            for i, (transport, proto) in enumerate(conns):
                want = b"%d-%d;" % (batch, i)
                assert await proto.wait_bytes(len(want)) == want
                if i % 2:
                    transport.abort()
                else:
                    transport.close()
            for _, proto in conns:
                await proto.lost
        server.close()
        await server.wait_closed()
        await all_lost(stats)
        await spin()
        return before, open_fds(), stats["max"]

    before, after, most = run(any_loop, main())
    assert most >= 50
    assert after == before


def run_concurrent_echo(loop, n):
    async def main():
        stats = new_stats()
        server = await loop.create_server(
            lambda: Counting(stats), "127.0.0.1", 0, backlog=min(n, 4096)
        )
        port = server.sockets[0].getsockname()[1]
        gate = asyncio.Semaphore(500)  # connects in flight, so the backlog never overflows

        async def connect():
            async with gate:
                return await loop.create_connection(Recorder, "127.0.0.1", port)

        conns = await asyncio.gather(*(connect() for _ in range(n)))
        assert stats["active"] == n
        wants = []
        for i, (transport, _) in enumerate(conns):
            want = b"<%d>" % i * (1 + i % 7)
            wants.append(want)
            transport.write(want)
        got = await asyncio.gather(
            *(proto.wait_bytes(len(w)) for (_, proto), w in zip(conns, wants, strict=True))
        )
        for transport, _ in conns:
            transport.close()
        server.close()
        await server.wait_closed()
        await all_lost(stats)
        return got == wants, stats["max"], stats["lost"].count(None)

    return run(loop, main(), timeout=60)


def test_1000_concurrent_connections(any_loop):
    assert run_concurrent_echo(any_loop, 1000) == (True, 1000, 1000)


def fd_limit():
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


CLIENTS_SCRIPT = r"""
import asyncio, sys
import oxloop

kind, port, n = ARGS  # noqa: F821 (prepended by the test)
loop = oxloop.new_event_loop() if kind == "oxloop" else asyncio.SelectorEventLoop()


class Client(asyncio.Protocol):
    def __init__(self, want):
        self.want = want
        self.data = b""
        self.done = loop.create_future()

    def connection_made(self, transport):
        transport.write(self.want)

    def data_received(self, data):
        self.data += data
        if len(self.data) >= len(self.want) and not self.done.done():
            self.done.set_result(self.data)


async def main():
    gate = asyncio.Semaphore(500)  # connects in flight, so the backlog never overflows

    async def connect(i):
        async with gate:
            want = b"<%d>" % i * (1 + i % 7)
            return await loop.create_connection(lambda: Client(want), "127.0.0.1", port)

    conns = await asyncio.gather(*(connect(i) for i in range(n)))
    got = await asyncio.gather(*(proto.done for _, proto in conns))
    bad = sum(g != proto.want for g, (_, proto) in zip(got, conns))
    for transport, _ in conns:
        transport.close()
    await asyncio.sleep(0)
    print("mismatches", bad)


loop.run_until_complete(asyncio.wait_for(main(), 100))
loop.close()
"""


@pytest.mark.timeout(120)
def test_10000_concurrent_connections(any_loop):
    """10,000 connections open at once on one loop; the clients run in a child process (with
    a loop of the same kind), so each process needs 10,000 fds, not 20,000."""
    n = 10_000
    if fd_limit() < n + 500:
        pytest.skip(f"RLIMIT_NOFILE {fd_limit()} is below the {n + 500} fds this test needs")
    kind = "stock" if is_stock(any_loop) else "oxloop"

    async def main():
        stats = new_stats()
        server = await any_loop.create_server(lambda: Counting(stats), "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        proc = await any_loop.run_in_executor(
            None,
            lambda: run_python(f"ARGS = {(kind, port, n)!r}\n" + CLIENTS_SCRIPT, timeout=110),
        )
        await all_lost(stats)
        server.close()
        await server.wait_closed()
        return proc, stats["max"], stats["lost"].count(None)

    proc, most, clean = run(any_loop, main(), timeout=115)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mismatches", "0"]
    assert most == n
    assert clean == n


EMFILE_SCRIPT = r"""
import asyncio, errno, json, os, resource, socket, sys
import oxloop

loop = oxloop.new_event_loop() if sys.argv[1] == "oxloop" else asyncio.SelectorEventLoop()
contexts = []
loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

async def wait_for(cond):
    for _ in range(1000):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return False

async def main():
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    addr = server.sockets[0].getsockname()
    client = socket.socket()
    fillers = []
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    client.connect(addr)  # completes in the kernel; the server can't accept it
    reported = await wait_for(lambda: contexts)
    for fd in fillers:
        os.close(fd)
    client.setblocking(False)
    await loop.sock_sendall(client, b"after EMFILE")
    data = b""
    while len(data) < 12:
        chunk = await asyncio.wait_for(loop.sock_recv(client, 100), 10)
        if not chunk:
            break
        data += chunk
    client.close()
    server.close()
    ctx = contexts[0] if contexts else {}
    exc = ctx.get("exception")
    print(json.dumps({
        "reported": reported,
        "message": ctx.get("message"),
        "errno": getattr(exc, "errno", None),
        "has_socket": "socket" in ctx,
        "count": len(contexts),
        "data": data.decode(),
    }))

loop.run_until_complete(main())
loop.close()
"""


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_accept_out_of_fds_backs_off_and_recovers(kind):
    import json

    proc = run_python(EMFILE_SCRIPT.replace("sys.argv[1]", repr(kind)))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The stock loop reports once per attempt of its accept batch (up to `backlog` times).
    assert result.pop("count") >= 1
    assert result == {
        "reported": True,
        "message": "socket.accept() out of system resource",
        "errno": errno.EMFILE,
        "has_socket": True,
        "data": "after EMFILE",
    }


@pytest.mark.skipif(not PY314, reason="3.14 closes the clients of a cancelled serve_forever()")
def test_cancelled_serve_forever_closes_its_clients(any_loop):
    # gh-123720: wait_closed() waits for the clients, so a cancelled serve_forever() that
    # did not close them would wait as long as a client stays connected.
    async def main():
        server = await any_loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        serving = asyncio.ensure_future(server.serve_forever())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.01)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, 5)
        eof = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return eof, server.is_serving()

    assert run(any_loop, main()) == (b"", False)
