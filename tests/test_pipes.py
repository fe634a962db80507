"""Tests of the pipe transports: connect_read_pipe and connect_write_pipe, on oxloop and stock."""

import asyncio
import os
import random
import socket
import sys

import pytest
from support import is_stock, run


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.flow = []
        self.eof = self.loop.create_future()
        self.lost = self.loop.create_future()
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

    def data_received(self, data):
        assert isinstance(data, bytes)
        self._event("data")
        self.data += data
        self._wake()

    def eof_received(self):
        self._event("eof")
        self.eof.set_result(None)
        self._wake()

    def connection_lost(self, exc):
        self._event("lost")
        self.lost.set_result(exc)
        self._wake()

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")

    async def wait_bytes(self, n):
        while len(self.data) < n and not self.lost.done():
            self._more = self.loop.create_future()
            await self._more
        return bytes(self.data)


@pytest.fixture
def pipe():
    """(read file, write file) of an os.pipe(), unbuffered; closed after the test."""
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    try:
        yield rf, wf
    finally:
        rf.close()
        wf.close()


def payload(n):
    return random.Random(n).randbytes(n)


async def read_all(loop, fd):
    """Read a non-blocking fd to EOF through the loop's readiness callbacks."""
    got = bytearray()
    done = loop.create_future()

    def readable():
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if chunk:
            got.extend(chunk)
        else:
            loop.remove_reader(fd)
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    await done
    return bytes(got)


def is_reading(loop, transport):
    """transport.is_reading(); True/False as expected where the stock 3.10 read pipe
    transport lacks it (NotImplementedError)."""
    if is_stock(loop) and sys.version_info < (3, 11):
        return not transport._paused and not transport.is_closing()
    return transport.is_reading()


async def spin(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


# -- read pipes ----------------------------------------------------------------------------------


def test_read_pipe_data_then_eof(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_read_pipe(Recorder, rf)
        info = (
            transport.get_extra_info("pipe") is rf,
            transport.get_extra_info("nope", 7),
            os.get_blocking(rf.fileno()),
            isinstance(transport, asyncio.ReadTransport),
            is_reading(any_loop, transport),
            transport.is_closing(),
        )
        wf.write(b"hello ")
        await proto.wait_bytes(6)
        wf.write(b"pipe")
        await proto.wait_bytes(10)
        wf.close()
        exc = await proto.lost
        return info, bytes(proto.data), proto.events, exc, transport.is_closing(), rf.closed

    info, data, events, exc, closing, closed = run(any_loop, main())
    assert info == (True, 7, False, True, True, False)
    assert data == b"hello pipe"
    assert events == ["made", "data", "eof", "lost"]
    assert exc is None
    assert closing
    assert closed  # the transport closes the pipe it was given


def test_read_pipe_pause_and_resume(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_read_pipe(Recorder, rf)
        await spin()
        transport.pause_reading()
        transport.pause_reading()
        states = [is_reading(any_loop, transport)]
        wf.write(b"queued")
        await asyncio.sleep(0.05)
        held = bytes(proto.data)
        transport.resume_reading()
        transport.resume_reading()
        states.append(is_reading(any_loop, transport))
        await proto.wait_bytes(6)
        transport.close()
        states.append(is_reading(any_loop, transport))
        await proto.lost
        return states, held, bytes(proto.data), proto.events

    states, held, data, events = run(any_loop, main())
    assert states == [False, True, False]
    assert held == b""
    assert data == b"queued"
    assert events == ["made", "data", "lost"]


def test_read_pipe_close_and_abort(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_read_pipe(Recorder, rf)
        transport.close()
        transport.close()
        closing = transport.is_closing()
        exc = await proto.lost
        return closing, exc, proto.events, rf.closed

    assert run(any_loop, main()) == (True, None, ["made", "lost"], True)


def test_read_pipe_rejects_a_regular_file(any_loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError) as info:
                await any_loop.connect_read_pipe(asyncio.Protocol, f)
            return str(info.value), f.closed

    assert run(any_loop, main()) == ("Pipe transport is for pipes/sockets only.", False)


# -- write pipes ---------------------------------------------------------------------------------


def test_write_pipe_writes_and_write_eof(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        info = (
            transport.get_extra_info("pipe") is wf,
            isinstance(transport, asyncio.WriteTransport),
            transport.can_write_eof(),
            transport.get_write_buffer_size(),
        )
        transport.write(b"ab")
        transport.write(bytearray(b"cd"))
        transport.write(memoryview(b"ef"))
        transport.writelines([b"gh", b"ij"])
        transport.write(b"")
        transport.write_eof()
        closing = transport.is_closing()
        got = await read_all(any_loop, rf.fileno())
        exc = await proto.lost
        return info, closing, got, exc, proto.events, wf.closed

    info, closing, got, exc, events, closed = run(any_loop, main())
    assert info == (True, True, True, 0)
    # For a pipe, write_eof() closes the transport.
    assert closing
    assert got == b"abcdefghij"
    assert exc is None
    assert events == ["made", "lost"]
    assert closed


def test_write_pipe_to_read_pipe_large(any_loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await any_loop.connect_write_pipe(Recorder, wf)
        rt, rp = await any_loop.connect_read_pipe(Recorder, rf)
        msg = payload(4 << 20)
        wt.write(msg)
        size = wt.get_write_buffer_size()
        wt.close()
        await rp.lost
        await wp.lost
        return size > 0, bytes(rp.data) == msg, rp.events, wp.flow

    buffered, same, events, flow = run(any_loop, main())
    assert buffered
    assert same
    assert events == ["made", "data", "eof", "lost"]
    assert flow == ["pause", "resume"]


def test_write_pipe_flow_control(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        transport.set_write_buffer_limits(high=1000)
        limits = transport.get_write_buffer_limits()
        transport.write(payload(200_000))
        assert transport.get_write_buffer_size() > 1000
        paused = list(proto.flow)
        transport.close()
        got = await read_all(any_loop, rf.fileno())
        await proto.lost
        return limits, paused, len(got), proto.flow

    assert run(any_loop, main()) == ((250, 1000), ["pause"], 200_000, ["pause", "resume"])


def test_write_pipe_lost_when_reader_closes(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        transport.write(b"unread")
        await spin()
        rf.close()
        exc = await proto.lost
        return exc, transport.is_closing(), proto.events

    # Nothing was buffered (the kernel took it): a clean connection_lost(None).
    assert run(any_loop, main()) == (None, True, ["made", "lost"])


def test_write_pipe_reader_closes_with_data_buffered(any_loop, pipe):
    rf, wf = pipe

    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        transport.write(payload(1 << 20))
        assert transport.get_write_buffer_size() > 0
        rf.close()
        exc = await proto.lost
        await spin()
        return exc, contexts, transport.get_write_buffer_size()

    exc, contexts, size = run(any_loop, main())
    assert isinstance(exc, BrokenPipeError)
    assert contexts == []
    assert size == 0


def test_write_pipe_abort(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        transport.write(payload(1 << 20))
        buffered = transport.get_write_buffer_size()
        transport.abort()
        closing = transport.is_closing()
        exc = await proto.lost
        got = await read_all(any_loop, rf.fileno())
        return buffered > 0, closing, exc, len(got) == (1 << 20) - buffered

    assert run(any_loop, main()) == (True, True, None, True)


@pytest.mark.parametrize("how", ["close", "write_eof"])
def test_write_pipe_close_flushes(request, any_loop, pipe, how):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        msg = payload(1 << 20)
        transport.write(msg)
        assert transport.get_write_buffer_size() > 0
        getattr(transport, how)()
        assert transport.is_closing()
        await asyncio.sleep(0.05)
        early = proto.lost.done()
        got = await read_all(any_loop, rf.fileno())
        exc = await proto.lost
        return early, got == msg, exc

    assert run(any_loop, main()) == (False, True, None)


def test_write_pipe_write_after_close_is_dropped(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        transport.write(b"kept")
        transport.close()
        transport.write(b"dropped")
        await proto.lost
        return await read_all(any_loop, rf.fileno())

    assert run(any_loop, main()) == b"kept"


def test_write_pipe_rejects_non_bytes(any_loop, pipe):
    rf, wf = pipe

    async def main():
        transport, proto = await any_loop.connect_write_pipe(Recorder, wf)
        # The stock pipe transport asserts the type (AssertionError), sockets raise TypeError.
        with pytest.raises((TypeError, AssertionError)):
            transport.write("text")
        transport.close()
        await proto.lost
        return await read_all(any_loop, rf.fileno())

    assert run(any_loop, main()) == b""


def test_write_pipe_rejects_a_regular_file(any_loop, tmp_path):
    async def main():
        with open(tmp_path / "regular", "wb") as f:
            with pytest.raises(ValueError) as info:
                await any_loop.connect_write_pipe(asyncio.Protocol, f)
            return str(info.value)

    assert (
        run(any_loop, main()) == "Pipe transport is only for pipes, sockets and character devices"
    )


def test_write_pipe_over_a_socket_and_a_char_device(any_loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            transport, proto = await any_loop.connect_write_pipe(Recorder, a)
            transport.write(b"via socket")
            transport.write_eof()
            await proto.lost
            b.setblocking(False)
            got = await any_loop.sock_recv(b, 100)
        with open(os.devnull, "wb", buffering=0) as devnull:
            transport, proto = await any_loop.connect_write_pipe(Recorder, devnull)
            transport.write(b"into the void")
            transport.close()
            exc = await proto.lost
        return got, exc

    assert run(any_loop, main()) == (b"via socket", None)


def test_read_pipe_over_a_socket(any_loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            transport, proto = await any_loop.connect_read_pipe(Recorder, a)
            b.sendall(b"from the socket")
            b.shutdown(socket.SHUT_WR)
            exc = await proto.lost
            return bytes(proto.data), proto.events, exc

    assert run(any_loop, main()) == (b"from the socket", ["made", "data", "eof", "lost"], None)


def test_pipe_fd_refuses_add_reader(loop, pipe):
    """oxloop only: the stock loop tracks socket transports' fds, not pipe transports', so it
    lets add_reader() silently take over a read pipe's fd; oxloop refuses, as for sockets."""
    rf, wf = pipe

    async def main():
        transport, proto = await loop.connect_read_pipe(Recorder, rf)
        with pytest.raises(RuntimeError) as info:
            loop.add_reader(rf.fileno(), print)
        transport.close()
        await proto.lost
        return str(info.value)

    fd = rf.fileno()
    assert run(loop, main()).startswith(f"File descriptor {fd} is used by transport <")
