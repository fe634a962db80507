"""Tests of how a stream transport's read and write events run: their order against other
callbacks, the context they run in, the bytes they deliver, and what debug mode and the
stall watchdog see of them."""

import asyncio
import contextvars
import logging
import socket
import sys
import threading
import time

import pytest

VAR = contextvars.ContextVar("VAR", default="unset")


class Log(asyncio.Protocol):
    """Records protocol calls (and the context variable seen by each read) in `events`."""

    def __init__(self, keep=True):
        self.events = []
        self.chunks = []
        self.keep = keep
        self.got = asyncio.Event()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.keep:
            self.chunks.append(data)
        self.events.append(("data", bytes(data), VAR.get(), hash(data) == hash(bytes(data))))
        self.got.set()

    def connection_lost(self, exc):
        self.events.append(("lost", exc))


def tcp_pair():
    lsock = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(lsock.getsockname())
    b, _ = lsock.accept()
    lsock.close()
    a.setblocking(False)
    return a, b


async def next_data(proto):
    await proto.got.wait()
    proto.got.clear()


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, 10))


def test_read_event_runs_after_the_callbacks_ready_before_it(any_loop):
    a, b = tcp_pair()
    order = []

    class Ordered(Log):
        def data_received(self, data):
            order.append(("data", data))
            self.got.set()

    async def main():
        transport, proto = await any_loop.create_connection(Ordered, sock=a)
        await asyncio.sleep(0)

        def send_then_schedule():
            b.sendall(b"ping")
            any_loop.call_soon(order.append, "soon")

        any_loop.call_soon(send_then_schedule)
        await next_data(proto)
        transport.close()

    try:
        run(any_loop, main())
    finally:
        b.close()
    assert order == ["soon", ("data", b"ping")]


def test_reads_run_in_the_context_reading_started_in(any_loop):
    a, b = tcp_pair()

    async def connect():
        VAR.set("connected")
        return await any_loop.create_connection(Log, sock=a)

    async def main():
        transport, proto = await asyncio.ensure_future(connect())
        b.sendall(b"one")
        await next_data(proto)
        # A variable set by data_received stays for the next read (same context).
        VAR.set("main")
        b.sendall(b"two")
        await next_data(proto)
        transport.pause_reading()
        ctx = contextvars.copy_context()
        ctx.run(VAR.set, "resumed")
        ctx.run(transport.resume_reading)
        b.sendall(b"three")
        await next_data(proto)
        transport.close()
        await asyncio.sleep(0)
        return proto.events

    try:
        events = run(any_loop, main())
    finally:
        b.close()
    # 3.15 (gh-140947): a connection's callbacks all run in its own context, whoever
    # resumes reading; before, a resumed read ran in a copy of the resumer's context.
    third = "connected" if sys.version_info >= (3, 15) else "resumed"
    assert [e[:3] for e in events[:3]] == [
        ("data", b"one", "connected"),
        ("data", b"two", "connected"),
        ("data", b"three", third),
    ]


@pytest.mark.skipif(sys.version_info < (3, 15), reason="per-connection contexts are 3.15's")
def test_each_accepted_connection_runs_in_a_copy_of_the_server_context(any_loop):
    # 3.15 (gh-140947): the server keeps the context it was made in; each connection gets
    # a copy, so what one connection's callbacks set is not seen by the next one.
    seen = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(VAR.get(None))
            VAR.set("set by a connection")
            transport.close()

    async def main():
        VAR.set("at server creation")
        server = await any_loop.create_server(Proto, "127.0.0.1", 0)
        VAR.set("later")
        port = server.sockets[0].getsockname()[1]
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""
            writer.close()
        server.close()
        await server.wait_closed()
        return VAR.get()

    assert run(any_loop, main()) == "later"
    assert seen == ["at server creation", "at server creation"]


@pytest.mark.parametrize("keep", [True, False])
def test_delivered_bytes_stay_intact(any_loop, keep):
    a, b = tcp_pair()
    sent = [bytes([i]) * 1000 for i in range(1, 6)] + [b"x" * 999, b"y" * 1000]

    async def main():
        transport, proto = await any_loop.create_connection(lambda: Log(keep), sock=a)
        for chunk in sent:
            b.sendall(chunk)
            await next_data(proto)
        transport.close()
        await asyncio.sleep(0)
        return proto

    try:
        proto = run(any_loop, main())
    finally:
        b.close()
    received = [e for e in proto.events if e[0] == "data"]
    assert b"".join(e[1] for e in received) == b"".join(sent)
    assert all(e[3] for e in received)  # hash() matches the contents every time
    if keep:
        assert b"".join(proto.chunks) == b"".join(sent)


@pytest.mark.parametrize("watchdog", [False, True], ids=["plain", "watchdog"])
def test_stats_count_read_events(loop, watchdog):
    a, b = tcp_pair()
    if watchdog:
        loop.set_stall_watchdog(60)

    async def main():
        transport, proto = await loop.create_connection(Log, sock=a)
        await asyncio.sleep(0)
        before = loop.stats()
        for _ in range(3):
            b.sendall(b"data")
            await next_data(proto)
        after = loop.stats()
        transport.close()
        return before, after

    try:
        before, after = run(loop, main())
    finally:
        loop.set_stall_watchdog(None)
        b.close()
    assert after["bytes_read"] - before["bytes_read"] == 12
    # Each read is one callback, as is each wake-up of main(), with the watchdog on too.
    assert after["callbacks"] - before["callbacks"] == 6


def test_slow_read_is_logged_once_debug_is_turned_on(any_loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    a, b = tcp_pair()

    class Slow(Log):
        def data_received(self, data):
            time.sleep(0.05)
            super().data_received(data)

    async def main():
        transport, proto = await any_loop.create_connection(Slow, sock=a)
        await asyncio.sleep(0)
        # Reading started without debug mode; the slow read is still reported.
        any_loop.set_debug(True)
        any_loop.slow_callback_duration = 0.02
        b.sendall(b"slow")
        await next_data(proto)
        any_loop.set_debug(False)
        transport.close()

    try:
        run(any_loop, main())
    finally:
        b.close()
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing ")]
    assert any("._read_ready()" in m for m in msgs), msgs


def test_watchdog_names_the_read_event(loop):
    a, b = tcp_pair()
    reports = []
    got = threading.Event()

    def collect(report):
        reports.append(report)
        if report.finished:
            got.set()

    class Stall(Log):
        def data_received(self, data):
            time.sleep(0.2)
            super().data_received(data)

    async def main():
        transport, proto = await loop.create_connection(Stall, sock=a)
        await asyncio.sleep(0)
        loop.set_stall_watchdog(0.05, callback=collect)
        b.sendall(b"stall")
        await next_data(proto)
        transport.close()

    try:
        run(loop, main())
        assert got.wait(10)
    finally:
        loop.set_stall_watchdog(None)
        b.close()
    assert reports and all("._read_ready()" in r.handle for r in reports), [
        r.handle for r in reports
    ]
    assert "data_received" in reports[-1].stack


def test_write_event_flushes_in_order(any_loop):
    a, b = tcp_pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096

    async def main():
        transport, proto = await any_loop.create_connection(Log, sock=a)
        transport.write(big)
        transport.write(b"tail")
        assert transport.get_write_buffer_size() > 0
        got = bytearray()
        b.setblocking(False)
        while len(got) < len(big) + 4:
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            got += chunk
        transport.close()
        return bytes(got)

    try:
        assert run(any_loop, main()) == big + b"tail"
    finally:
        b.close()


# -- extra info ----------------------------------------------------------------------------------


def extra_view(transport):
    """What get_extra_info answers for a socket transport, compared by value."""
    sock = transport.get_extra_info("socket")
    return {
        "keys": list(transport._extra),
        "socket": (sock.family, sock.type, sock.fileno()),
        "same socket": transport.get_extra_info("socket") is sock,
        "sockname": transport.get_extra_info("sockname"),
        "peername": transport.get_extra_info("peername"),
        "missing": transport.get_extra_info("missing", "dflt"),
    }


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_extra_info_of_accepted_and_connected_sockets(any_loop, family, tmp_path):
    seen = {}
    closed = asyncio.Event()

    class Keep(asyncio.Protocol):
        def connection_made(self, transport):
            seen["accepted"] = extra_view(transport)
            self.transport = transport

        def connection_lost(self, exc):
            # Still there once the socket is closed.
            seen["after close"] = (
                self.transport.get_extra_info("sockname"),
                self.transport.get_extra_info("peername"),
            )
            closed.set()

    async def main():
        if family == "tcp":
            server = await any_loop.create_server(Keep, "127.0.0.1", 0)
            addr = server.sockets[0].getsockname()
            transport, _ = await any_loop.create_connection(asyncio.Protocol, *addr)
        else:
            path = str(tmp_path / "sock")
            server = await any_loop.create_unix_server(Keep, path)
            transport, _ = await any_loop.create_unix_connection(asyncio.Protocol, path)
        seen["connected"] = extra_view(transport)
        while "accepted" not in seen:
            await asyncio.sleep(0.01)
        transport.close()
        await closed.wait()
        server.close()
        await server.wait_closed()

    run(any_loop, main())
    acc, con = seen["accepted"], seen["connected"]
    assert acc["keys"] == ["peername", "socket", "sockname"]
    assert con["keys"] == ["socket", "sockname", "peername"]
    for view in (acc, con):
        assert view["same socket"] is True
        assert view["missing"] == "dflt"
    if family == "tcp":
        assert acc["sockname"] == con["peername"]
        assert acc["peername"] == con["sockname"]
        assert type(acc["peername"]) is tuple and type(acc["peername"][0]) is str
        assert acc["socket"][:2] == (socket.AF_INET, socket.SOCK_STREAM)
    else:
        assert acc["sockname"] == con["peername"]
        assert acc["socket"][:2] == (socket.AF_UNIX, socket.SOCK_STREAM)
    assert seen["after close"] == (acc["sockname"], acc["peername"])


def test_extra_info_asked_only_after_close(any_loop):
    got = {}

    class Late(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            got["made"] = True

        def connection_lost(self, exc):
            got["late"] = (
                self.transport.get_extra_info("sockname"),
                self.transport.get_extra_info("peername"),
                self.transport.get_extra_info("socket").family,
            )

    async def main():
        server = await any_loop.create_server(Late, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        client = socket.create_connection(addr)
        here = client.getsockname()
        while "made" not in got:
            await asyncio.sleep(0.01)
        client.close()
        while "late" not in got:
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return addr, here

    addr, here = run(any_loop, main())
    assert got["late"] == (addr, here, socket.AF_INET)
