"""Tests of the stream transports: TCP and Unix sockets, servers, streams, sendfile.

Most tests run on oxloop and on the stock asyncio loop (`any_loop`): the assertions are the
stock loop's behaviour on each Python version.
"""

import asyncio
import gc
import socket
import sys
import warnings

import pytest
from support import is_stock, run

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
# 3.12.1 made Server.wait_closed() wait for the connections of a closed server.
WAIT_CLOSED_WAITS = sys.version_info >= (3, 12, 1)


def oxloop_bug(request, loop, reason):
    """Mark the oxloop parametrisation of the running test as a known oxloop bug."""
    if not is_stock(loop):
        request.applymarker(pytest.mark.xfail(reason=f"oxloop bug: {reason}", strict=True))


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
    """A short real wait, for things that must NOT happen (a liveness window, not a check)."""
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


def test_many_small_writes_keep_order(any_loop, small_tcp_pair):
    a, b = small_tcp_pair

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


@pytest.mark.parametrize("bad", ["str", None, 1, [b"x"]])
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
    assert msg == f"data argument must be a bytes-like object, not {type(bad).__name__!r}"


@pytest.mark.parametrize(
    "bad, old, new",
    [
        (["x"], "sequence item 0: expected a bytes-like object, str found", None),
        ([b"a", "x"], "sequence item 1: expected a bytes-like object, str found", None),
        (5, "can only join an iterable", "'int' object is not iterable"),
    ],
)
def test_writelines_rejects_non_bytes(request, any_loop, sockpair, bad, old, new):
    if new is None:
        oxloop_bug(
            request,
            any_loop,
            "writelines() with a non-bytes item raises TypeError 'data argument must be a "
            "bytes-like object, not ...' instead of the stock message",
        )
    elif not PY312:
        oxloop_bug(
            request,
            any_loop,
            "on 3.10/3.11 writelines(5) raises \"'int' object is not iterable\" (the 3.12 "
            "message), stock: 'can only join an iterable'",
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
    if not PY312:
        oxloop_bug(
            request,
            any_loop,
            "on 3.10/3.11 writelines() after write_eof() raises 'Cannot call writelines() after "
            "write_eof()' (the 3.12 message), stock: 'Cannot call write() after write_eof()'",
        )
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
        return proto.events, transport.get_extra_info("socket") is not None

    events, _ = run(any_loop, main())
    assert events == ["made", "lost"]


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
