"""Tests of the TLS layer's behaviour (on 3.11+ oxloop's own, `src/tls.rs`): shutdown, EOF,
flow control both ways, buffered app protocols, writes, extra info, errors and their reports,
aborts and leaks; each on oxloop and on stock asyncio, with the same assertions.
"""

import asyncio
import gc
import logging
import sys
import warnings

import pytest
from certs import make_pki
from support import open_fds, run
from test_transports import Echo, Recorder, payload

import oxloop

ssl = pytest.importorskip("ssl")

PY311 = sys.version_info >= (3, 11)
# The 3.11+ sslproto (flow control of reads, shutdown timeouts, its messages); 3.10's older
# design is what both loops run there.
modern = pytest.mark.skipif(not PY311, reason="3.11+ sslproto semantics")


@pytest.fixture
def pki():
    return make_pki()


async def tls_pair(loop, pki, server_factory=Echo, client_factory=Recorder, **server_kwargs):
    """A TLS server and one client connected to it: (server, client transport, client
    protocol, the server side's app protocol)."""
    accepted = loop.create_future()

    def factory():
        proto = server_factory()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=pki.server, **server_kwargs)
    port = server.sockets[0].getsockname()[1]
    transport, proto = await loop.create_connection(
        client_factory, "127.0.0.1", port, ssl=pki.client, server_hostname="localhost"
    )
    return server, transport, proto, await accepted


async def finish(server, *transports):
    for t in transports:
        t.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)


class ServerRecorder(Recorder):
    def __init__(self):
        super().__init__()


# -- shutdown and EOF ----------------------------------------------------------------------------


@modern
def test_close_shuts_down_both_sides(any_loop, pki):
    async def main():
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, ServerRecorder)
        await server_proto.made
        transport.write(b"bye")
        await server_proto.wait_bytes(3)
        transport.close()
        closing = transport.is_closing()
        exc = await proto.lost
        await server_proto.lost
        await finish(server)
        return closing, exc, server_proto.events, proto.events

    closing, exc, server_events, client_events = run(any_loop, main())
    assert closing
    assert exc is None
    # Each side's close_notify reaches the other's app protocol as EOF, then the end.
    assert server_events == ["made", "data", "eof", "lost"]
    assert client_events == ["made", "eof", "lost"]


@modern
def test_eof_received_true_has_no_effect(any_loop, pki, caplog):
    class KeepOpen(Recorder):
        def __init__(self):
            super().__init__(eof_result=True)

    async def main():
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, KeepOpen)
        await server_proto.made
        transport.close()
        await server_proto.lost
        await proto.lost
        await finish(server)
        return server_proto.events

    events = run(any_loop, main())
    assert events == ["made", "eof", "lost"]
    assert "returning true from eof_received() has no effect when using ssl" in caplog.text


def test_second_close_and_abort_after_close(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        transport.close()
        transport.close()
        transport.abort()
        exc = await proto.lost
        await finish(server)
        return exc, transport.is_closing()

    assert run(any_loop, main()) == (None, True)


def test_abort_drops_the_connection(any_loop, pki):
    async def main():
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, ServerRecorder)
        await server_proto.made
        transport.abort()
        exc = await proto.lost
        server_exc = await server_proto.lost
        await finish(server)
        return exc, transport.is_closing(), server_exc is None or isinstance(server_exc, OSError)

    assert run(any_loop, main()) == (None, True, True)


def test_write_after_close_is_dropped(any_loop, pki, caplog):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        transport.close()
        for _ in range(7):
            transport.write(b"late")
        transport.writelines([b"late"])
        await proto.lost
        await finish(server)

    run(any_loop, main())
    if PY311:
        assert caplog.text.count("SSL connection is closed") >= 2


# -- errors --------------------------------------------------------------------------------------


def test_write_type_errors(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        out = []
        for bad in ("text", 12, None):
            with pytest.raises(TypeError) as info:
                transport.write(bad)
            out.append(str(info.value))
        transport.write(b"")
        transport.write(bytearray())
        with pytest.raises(NotImplementedError):
            transport.write_eof()
        await finish(server, transport)
        await proto.lost
        return out

    assert run(any_loop, main()) == [
        "data: expecting a bytes-like instance, got str",
        "data: expecting a bytes-like instance, got int",
        "data: expecting a bytes-like instance, got NoneType",
    ]


@modern
def test_data_received_error_is_reported(any_loop, pki):
    class Failing(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("boom")

    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, Failing)
        await server_proto.made
        transport.write(b"x")
        server_exc = await server_proto.lost
        await proto.lost
        await finish(server)
        return server_exc, contexts

    server_exc, contexts = run(any_loop, main())
    assert isinstance(server_exc, ZeroDivisionError)
    assert [c["message"] for c in contexts] == ["Fatal error on SSL protocol"]
    ctx = contexts[0]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["protocol"] is not None and ctx["transport"] is not None


@modern
def test_eof_received_error_is_reported(any_loop, pki):
    class Failing(Recorder):
        def eof_received(self):
            raise ZeroDivisionError("eof boom")

    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, Failing)
        await server_proto.made
        transport.close()
        await server_proto.lost
        await proto.lost
        await finish(server)
        return contexts

    assert [c["message"] for c in run(any_loop, main())] == ["Error calling eof_received()"]


@modern
def test_pause_writing_error_is_reported(any_loop, pki):
    class Failing(Recorder):
        def pause_writing(self):
            raise ZeroDivisionError("pause boom")

    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, transport, proto, _ = await tls_pair(any_loop, pki, client_factory=Failing)
        transport.set_write_buffer_limits(0)  # size 0 >= high 0: pause at once
        await finish(server, transport)
        await proto.lost
        return contexts

    contexts = run(any_loop, main())
    assert contexts
    assert {c["message"] for c in contexts} == {"protocol.pause_writing() failed"}
    assert all(isinstance(c["exception"], ZeroDivisionError) for c in contexts)


def test_handshake_failure_on_server_side(any_loop, pki):
    async def main():
        server = await any_loop.create_server(ServerRecorder, "127.0.0.1", 0, ssl=pki.server)
        port = server.sockets[0].getsockname()[1]
        # A client that speaks plain text to the TLS server.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n" * 10)
        data = await reader.read()
        writer.close()
        await finish(server)
        return data[:1]

    # The server answers with a TLS alert (or nothing) and closes the connection.
    assert run(any_loop, main()) in (b"", b"\x15")


def test_handshake_timeout_of_server(any_loop, pki):
    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        any_loop.set_debug(False)
        server = await any_loop.create_server(
            ServerRecorder, "127.0.0.1", 0, ssl=pki.server, ssl_handshake_timeout=0.05
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = await reader.read()  # the server gives up on the silent client
        writer.close()
        await finish(server)
        return data, contexts

    data, contexts = run(any_loop, main())
    assert data == b""
    assert contexts == []


def test_abort_during_handshake(any_loop, pki):
    async def main():
        import socket

        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            port = silent.getsockname()[1]
            task = asyncio.ensure_future(
                any_loop.create_connection(
                    Recorder, "127.0.0.1", port, ssl=pki.client, server_hostname="localhost"
                )
            )
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)

    before = open_fds()
    run(any_loop, main())
    assert open_fds() - before == set()


# -- flow control --------------------------------------------------------------------------------


def test_app_pause_and_resume_reading(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        transport.write(b"first")
        await proto.wait_bytes(5)
        transport.pause_reading()
        paused = not transport.is_reading()
        transport.write(b"second")
        await asyncio.sleep(0.05)
        held = bytes(proto.data)
        transport.resume_reading()
        got = await proto.wait_bytes(11)
        reading = transport.is_reading()
        await finish(server, transport)
        await proto.lost
        return paused, held, got, reading

    assert run(any_loop, main()) == (True, b"first", b"firstsecond", True)


@modern
def test_read_buffer_limits(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        defaults = transport.get_read_buffer_limits()
        transport.set_read_buffer_limits(high=4096)
        limits = transport.get_read_buffer_limits()
        with pytest.raises(ValueError) as info:
            transport.set_read_buffer_limits(high=1, low=2)
        size = transport.get_read_buffer_size()
        # With reading paused, what arrives waits in the incoming BIO.
        transport.pause_reading()
        transport.write(payload(100_000, seed=3))
        await asyncio.sleep(0.1)
        transport.resume_reading()
        got = await proto.wait_bytes(100_000)
        await finish(server, transport)
        await proto.lost
        return defaults, limits, str(info.value), size, got == payload(100_000, seed=3)

    assert run(any_loop, main()) == (
        (65536, 262144),
        (1024, 4096),
        "high (1) must be >= low (2) must be >= 0",
        0,
        True,
    )


def test_write_flow_control(any_loop, pki):
    class Stalled(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, Stalled)
        await server_proto.made
        defaults = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=65536)
        limits = transport.get_write_buffer_limits()
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=1, low=2)
        chunk = payload(1 << 20, seed=4)
        for _ in range(16):  # more than the kernel buffers hold: the writer is paused
            transport.write(chunk)
        await asyncio.sleep(0.05)
        paused = [f[0] for f in proto.flow]
        size = transport.get_write_buffer_size()
        server_proto.transport.resume_reading()
        got = await server_proto.wait_bytes(16 << 20)
        await asyncio.sleep(0.01)
        flow = [f[0] for f in proto.flow]
        end_size = transport.get_write_buffer_size()
        await finish(server, transport)
        await proto.lost
        return defaults, limits, paused, size > 0, len(got), got[: 1 << 20] == chunk, flow, end_size

    defaults, limits, paused, pending, got, same, flow, end_size = run(any_loop, main())
    if PY311:
        assert defaults == (131072, 524288)
        assert limits == (16384, 65536)
    assert paused == ["pause"]
    assert pending
    assert got == 16 << 20 and same
    assert flow == ["pause", "resume"]
    assert end_size == 0


# -- reading into the app ------------------------------------------------------------------------


class SmallBuffered(asyncio.BufferedProtocol):
    """A buffered app protocol with a small memoryview buffer (many reads per record)."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.lost = self.loop.create_future()
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_app_protocol_small_buffer(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki, client_factory=SmallBuffered)
        msg = payload(1_500_000, seed=5)
        transport.write(msg)
        while len(proto.data) < len(msg) and not proto.lost.done():
            await asyncio.sleep(0.001)
        same = bytes(proto.data) == msg
        await finish(server, transport)
        await proto.lost
        return same

    assert run(any_loop, main())


@modern
def test_buffered_server_sees_eof(any_loop, pki):
    async def main():
        server, transport, proto, server_proto = await tls_pair(any_loop, pki, SmallBuffered)
        transport.write(b"to a buffered server")
        transport.close()
        await server_proto.lost
        await proto.lost
        await finish(server)
        return bytes(server_proto.data), server_proto.eof

    assert run(any_loop, main()) == (b"to a buffered server", True)


def test_large_writes_and_writelines(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        parts = [payload(700_000, seed=6), bytearray(payload(500_000, seed=7))]
        parts.append(memoryview(payload(400_000, seed=8)))
        transport.writelines(parts)
        transport.write(memoryview(payload(1 << 20, seed=9)))
        total = sum(len(p) for p in parts) + (1 << 20)
        got = await proto.wait_bytes(total)
        await finish(server, transport)
        await proto.lost
        return got == b"".join(bytes(p) for p in parts) + payload(1 << 20, seed=9)

    assert run(any_loop, main())


def test_set_protocol_switches_the_app_protocol(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        transport.write(b"one")
        await proto.wait_bytes(3)
        other = Recorder()
        transport.set_protocol(other)
        same = transport.get_protocol() is other
        transport.write(b"two")
        got = await other.wait_bytes(3)
        await finish(server, transport)
        await other.lost
        return same, got, bytes(proto.data), proto.lost.done()

    assert run(any_loop, main()) == (True, b"two", b"one", False)


# -- the transport object ------------------------------------------------------------------------


def test_extra_info_and_type(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        info = {
            "sslcontext": transport.get_extra_info("sslcontext") is pki.client,
            "ssl_object": isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject),
            "cipher": len(transport.get_extra_info("cipher")),
            "compression": transport.get_extra_info("compression"),
            "peercert": "subject" in transport.get_extra_info("peercert"),
            "sockname": transport.get_extra_info("sockname")[0],
            "missing": transport.get_extra_info("nope", 42),
            "transport": isinstance(transport, asyncio.Transport),
            "read": isinstance(transport, asyncio.ReadTransport),
            "eof": transport.can_write_eof(),
            "reading": transport.is_reading(),
            "closing": transport.is_closing(),
            "protocol": transport.get_protocol() is proto,
        }
        await finish(server, transport)
        await proto.lost
        return info

    assert run(any_loop, main()) == {
        "sslcontext": True,
        "ssl_object": True,
        "cipher": 3,
        "compression": None,
        "peercert": True,
        "sockname": "127.0.0.1",
        "missing": 42,
        "transport": True,
        "read": True,
        "eof": False,
        "reading": True,
        "closing": False,
        "protocol": True,
    }


@modern
def test_unclosed_transport_warns(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        plain = transport.get_extra_info("socket")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            transport.__del__()
        messages = [str(w.message) for w in caught if w.category is ResourceWarning]
        transport.abort()  # __del__ marked it closed: close() would not shut down
        await proto.lost
        await finish(server)
        return messages, plain is not None

    messages, has_sock = run(any_loop, main())
    assert messages == ["unclosed transport <asyncio._SSLProtocolTransport object>"]
    assert has_sock


def test_no_fd_leak_over_many_connections(any_loop, pki):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, ssl=pki.server)
        port = server.sockets[0].getsockname()[1]
        for i in range(20):
            transport, proto = await any_loop.create_connection(
                Recorder, "127.0.0.1", port, ssl=pki.client, server_hostname="localhost"
            )
            transport.write(b"ping %d" % i)
            await proto.wait_bytes(6)
            if i % 2:
                transport.abort()
            else:
                transport.close()
            await proto.lost
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)

    before = open_fds()
    run(any_loop, main())
    gc.collect()
    assert open_fds() - before == set()


def test_start_tls_then_plain_close(any_loop, pki):
    async def main():
        upgraded = any_loop.create_future()

        class Upgrading(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                any_loop.create_task(self.upgrade())

            async def upgrade(self):
                tls = await any_loop.start_tls(self.transport, self, pki.server, server_side=True)
                upgraded.set_result(tls)

            def data_received(self, data):
                # The handshake's end may deliver data before upgrade() has resumed.
                any_loop.create_task(self.reply(data))

            async def reply(self, data):
                (await upgraded).write(data.upper())

        server = await any_loop.create_server(Upgrading, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plain, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        tls = await any_loop.start_tls(plain, proto, pki.client, server_hostname="localhost")
        tls.write(b"shout")
        got = await proto.wait_bytes(5)
        info = (
            tls.get_extra_info("peername") == plain.get_extra_info("peername"),
            isinstance(tls, asyncio.Transport),
        )
        tls.close()
        await proto.lost
        (await upgraded).close()
        await finish(server)
        return got, info

    assert run(any_loop, main()) == (b"SHOUT", (True, True))


# -- the user's context, exactly -----------------------------------------------------------------


def test_custom_sslobject_class_and_sni_callback(any_loop, pki):
    calls = {"read": 0, "write": 0}
    names = []

    class CountingSSLObject(ssl.SSLObject):
        def read(self, len=1024, buffer=None):
            calls["read"] += 1
            return super().read(len, buffer)

        def write(self, data):
            calls["write"] += 1
            return super().write(data)

    pki.client.sslobject_class = CountingSSLObject
    pki.server.sni_callback = lambda sslobj, name, ctx: names.append(name)

    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        msg = payload(300_000, seed=10)
        transport.write(msg)
        same = await proto.wait_bytes(len(msg)) == msg
        kind = type(transport.get_extra_info("ssl_object")).__name__
        await finish(server, transport)
        await proto.lost
        return same, kind

    assert run(any_loop, main()) == (True, "CountingSSLObject")
    assert calls["read"] > 0 and calls["write"] > 0
    assert names == ["localhost"]


@modern
def test_tls_in_tls(any_loop, pki):
    """start_tls over a TLS transport: the outer connection carries the inner one."""

    async def main():
        upgraded = any_loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                any_loop.create_task(self.upgrade(transport))

            async def upgrade(self, transport):
                tls = await any_loop.start_tls(transport, self, pki.server, server_side=True)
                upgraded.set_result(tls)

            def data_received(self, data):
                any_loop.create_task(self.reply(data))

            async def reply(self, data):
                (await upgraded).write(data)

        server = await any_loop.create_server(Server, "127.0.0.1", 0, ssl=pki.server)
        port = server.sockets[0].getsockname()[1]
        outer, proto = await any_loop.create_connection(
            Recorder, "127.0.0.1", port, ssl=pki.client, server_hostname="localhost"
        )
        inner = await any_loop.start_tls(outer, proto, pki.client, server_hostname="localhost")
        msg = payload(1_500_000, seed=11)
        inner.write(msg)
        same = await proto.wait_bytes(len(msg)) == msg
        nested = inner.get_extra_info("ssl_object") is not outer.get_extra_info("ssl_object")
        inner.close()
        await proto.lost
        (await upgraded).close()
        await finish(server)
        return same, nested

    assert run(any_loop, main()) == (True, True)


@modern
def test_shutdown_timeout(any_loop, pki):
    """A peer that never answers close_notify: the shutdown gives up after the timeout."""

    class Deaf(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()  # the close_notify waits, unanswered

    async def main():
        accepted = any_loop.create_future()

        def factory():
            proto = Deaf()
            accepted.set_result(proto)
            return proto

        server = await any_loop.create_server(factory, "127.0.0.1", 0, ssl=pki.server)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(
            Recorder,
            "127.0.0.1",
            port,
            ssl=pki.client,
            server_hostname="localhost",
            ssl_shutdown_timeout=0.1,
        )
        server_proto = await accepted
        await server_proto.made
        transport.close()
        exc = await proto.lost
        server_proto.transport.abort()
        await server_proto.lost
        await finish(server)
        return exc

    exc = run(any_loop, main())
    assert isinstance(exc, TimeoutError)
    assert str(exc) == "SSL shutdown timed out"


# -- objects freed by the layer run their finalizers safely -------------------------------------


def note_in_del(seen, probe):
    """Record what `probe()` (which touches the transport) returns from a `__del__`, or the
    error it raised (the bug: an internal re-entrancy error)."""
    try:
        seen.append(("del", probe()))
    except Exception as e:
        seen.append(("del raised", repr(e)))


@modern
def test_set_protocol_frees_the_old_protocol_whose_del_uses_the_transport(any_loop, pki):
    seen = []

    class Old(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def __del__(self):
            note_in_del(seen, lambda: (self.transport.is_reading(), self.transport.is_closing()))

    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki, asyncio.Protocol, Old)
        del proto
        new = Recorder()
        gc.disable()
        try:
            transport.set_protocol(new)
        finally:
            gc.enable()
        same = transport.get_protocol() is new
        await finish(server, transport)
        await new.lost
        return same

    assert run(any_loop, main()) is True
    assert seen == [("del", (True, False))]


@modern
def test_second_close_frees_the_protocol_whose_del_uses_the_transport(any_loop, pki):
    seen = []

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, n):
            return self.buf

        def buffer_updated(self, n):
            pass

        def connection_lost(self, exc):
            self.lost.set_result(exc)

        def __del__(self):
            note_in_del(seen, self.transport.is_closing)

    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki, asyncio.Protocol, Buffered)
        transport.close()
        await proto.lost
        await asyncio.sleep(0.01)
        del proto
        gc.disable()
        try:
            transport.close()  # the second close drops the SSL protocol and with it the app's
        finally:
            gc.enable()
        await finish(server)
        return "ok"

    assert run(any_loop, main()) == "ok"
    assert seen == [("del", True)]


# -- what code outside the loop reads of the layer -----------------------------------------------


@modern
def test_isinstance_against_the_stock_classes_and_repr(any_loop, pki):
    from asyncio import sslproto

    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        sp = transport._ssl_protocol
        got = {
            "transport": isinstance(transport, sslproto._SSLProtocolTransport),
            "asyncio.Transport": isinstance(transport, asyncio.Transport),
            "protocol": isinstance(sp, sslproto.SSLProtocol),
            "buffered": isinstance(sp, asyncio.BufferedProtocol),
            "transport class name": type(transport).__name__,
            "protocol class name": type(sp).__name__,
            "transport repr": repr(transport).split(" at ")[0],
            "protocol repr": repr(sp).split(" at ")[0],
        }
        await finish(server, transport)
        await proto.lost
        return got

    assert run(any_loop, main()) == {
        "transport": True,
        "asyncio.Transport": True,
        "protocol": True,
        "buffered": True,
        "transport class name": "_SSLProtocolTransport",
        "protocol class name": "SSLProtocol",
        "transport repr": "<asyncio.sslproto._SSLProtocolTransport object",
        "protocol repr": "<asyncio.sslproto.SSLProtocol object",
    }


@modern
def test_private_attributes_people_read(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        sp = transport._ssl_protocol
        extra = sp._extra
        got = {
            "extra keys": sorted(extra),
            "peercert": "subject" in extra["peercert"],
            "ssl_object": extra["ssl_object"] is transport.get_extra_info("ssl_object"),
            "sslobj": sp._sslobj is extra["ssl_object"],
            "sslcontext": sp._sslcontext is pki.client is extra["sslcontext"],
            "server_side": sp._server_side,
            "server_hostname": sp._server_hostname,
            "app_protocol": sp._app_protocol is proto,
            "app_transport": sp._app_transport is transport,
            "waiter": sp._waiter,
            "state": str(sp._state),
        }
        transport.custom = 1
        sp.custom = 2
        got["custom"] = (transport.custom, sp.custom)
        await finish(server, transport)
        await proto.lost
        return got

    assert run(any_loop, main()) == {
        "extra keys": ["cipher", "compression", "peercert", "ssl_object", "sslcontext"],
        "peercert": True,
        "ssl_object": True,
        "sslobj": True,
        "sslcontext": True,
        "server_side": False,
        "server_hostname": "localhost",
        "app_protocol": True,
        "app_transport": True,
        "waiter": None,
        "state": "SSLProtocolState.WRAPPED",
        "custom": (1, 2),
    }


@modern
def test_writelines_item_without_len_is_queued_then_fails_the_next_write(any_loop, pki):
    async def main():
        errors = []
        any_loop.set_exception_handler(lambda lp, ctx: errors.append(ctx["message"]))
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        with pytest.raises(TypeError, match="has no len"):
            transport.writelines([b"a", 5, b"b"])
        size = transport.get_write_buffer_size()
        await asyncio.sleep(0.05)
        transport.write(b"next")
        exc = await proto.lost
        await finish(server, transport)
        return size, type(exc), errors

    assert run(any_loop, main()) == (1, TypeError, ["Fatal error on SSL protocol"])


# -- the SSL protocol under a transport of the user's -------------------------------------------


def ssl_protocol(loop, *args, **kwargs):
    """The SSL protocol the loop makes for a connection (stock's on the stock loop)."""
    from asyncio import sslproto

    if isinstance(loop, oxloop.Loop):
        return oxloop._net._ssl_protocol(loop, *args, **kwargs)
    return sslproto.SSLProtocol(loop, *args, **kwargs)


class HoldingTransport(asyncio.Transport):
    """A Python transport that takes its protocol's buffer for the next read as soon as it
    has delivered the last one, and fills it only later (between other callbacks)."""

    def __init__(self, protocol):
        super().__init__()
        self.protocol = protocol
        self.outbox = bytearray()
        self.held = None
        self.closed = False

    def fill(self, data):
        """Take the buffer and copy what fits of `data` in: (the count, the rest)."""
        self.held = self.protocol.get_buffer(-1)
        n = min(len(data), len(self.held))
        self.held[:n] = data[:n]
        return n, data[n:]

    def updated(self, n):
        self.held = None
        if n:
            self.protocol.buffer_updated(n)

    def write(self, data):
        self.outbox += data

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def _force_close(self, exc):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@modern
def test_buffer_held_by_a_foreign_transport_across_callbacks(any_loop, pki):
    async def main():
        sides = []
        for ctx, server_side, hostname in (
            (pki.client, False, "localhost"),
            (pki.server, True, None),
        ):
            app = Recorder()
            waiter = any_loop.create_future()
            proto = ssl_protocol(any_loop, app, ctx, waiter, server_side, hostname)
            transport = HoldingTransport(proto)
            proto.connection_made(transport)
            sides.append((app, waiter, proto, transport))
        (capp, cwait, _, ct), (sapp, swait, _, st) = sides

        async def pump():
            for _ in range(20):
                to_server, to_client = bytes(ct.outbox), bytes(st.outbox)
                ct.outbox.clear()
                st.outbox.clear()
                while to_server or to_client:
                    # Both sides' buffers are filled before either is handed back.
                    n_server, to_server = st.fill(to_server)
                    n_client, to_client = ct.fill(to_client)
                    st.updated(n_server)
                    ct.updated(n_client)
                await asyncio.sleep(0)

        await pump()
        handshake = (cwait.done() and cwait.exception(), swait.done() and swait.exception())
        capp.transport.write(b"ping")
        sapp.transport.write(b"pong")
        await pump()
        return handshake, bytes(sapp.data), bytes(capp.data)

    assert run(any_loop, main()) == ((None, None), b"ping", b"pong")


# -- reports of fatal errors, asserts ------------------------------------------------------------


@modern
def test_handshake_timeout_debug_log_has_no_exception_info(any_loop, pki, caplog):
    async def main():
        any_loop.set_debug(True)
        server = await any_loop.create_server(
            ServerRecorder, "127.0.0.1", 0, ssl=pki.server, ssl_handshake_timeout=0.05
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            await reader.read()
        writer.close()
        await finish(server)
        return [
            r.exc_info
            for r in caplog.records
            if r.getMessage().endswith(": Fatal error on transport")
        ]

    # Stock logs with exc_info=True outside any except block: no exception in the record.
    assert run(any_loop, main()) == [(None, None, None)]


@modern
def test_fatal_error_of_none_is_reported_as_none(any_loop, pki):
    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        proto = ssl_protocol(any_loop, asyncio.Protocol(), pki.client, None, False, "localhost")
        proto._fatal_error(None)
        return [(c["message"], c["exception"], c["transport"]) for c in contexts]

    assert run(any_loop, main()) == [("Fatal error on transport", None, None)]


@modern
@pytest.mark.parametrize("optimize", [False, True])
def test_flow_asserts_follow_optimize_flag(any_loop, optimize):
    import subprocess

    kind = "oxloop" if isinstance(any_loop, oxloop.Loop) else "stock"
    code = f"""
import asyncio, ssl, sys
import oxloop, oxloop._net
from asyncio import sslproto
loop = oxloop.new_event_loop() if {kind!r} == "oxloop" else asyncio.new_event_loop()
make = oxloop._net._ssl_protocol if {kind!r} == "oxloop" else sslproto.SSLProtocol
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False  # 3.14 refuses a hostname check without a server_hostname
p = make(loop, asyncio.Protocol(), ctx, None)
out = []
for f in (p.resume_writing, p.pause_writing, p.pause_writing):
    try:
        f()
        out.append("ok")
    except AssertionError:
        out.append("AssertionError")
print(out)
loop.close()
"""
    args = [sys.executable] + (["-O"] if optimize else []) + ["-c", code]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    expected = ["ok"] * 3 if optimize else ["AssertionError", "ok", "AssertionError"]
    assert out == repr(expected)


# -- garbage collection --------------------------------------------------------------------------


@modern
def test_gc_sees_every_object_the_ssl_protocol_holds(any_loop, pki):
    def reachable(obj):
        found = gc.get_referents(obj)
        for r in list(found):
            if isinstance(r, dict):  # stock keeps its state in the instance dict
                found += list(r.values())
        return found

    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        sp = transport._ssl_protocol
        sslobj = transport.get_extra_info("ssl_object")
        found = reachable(sp)
        got = {
            "sslobj": any(r is sslobj for r in found),
            "context": any(r is pki.client for r in found),
            "bios": sum(isinstance(r, ssl.MemoryBIO) for r in found),
            "transport": any(r is transport for r in found),
        }
        if isinstance(any_loop, oxloop.Loop):
            # The cached bound methods of the `_ssl._SSLSocket` under the SSLObject.
            inner = sslobj._sslobj
            got["fast"] = sum(getattr(r, "__self__", None) is inner for r in found) >= 3
        await finish(server, transport)
        await proto.lost
        return got

    got = run(any_loop, main())
    assert got.pop("fast", True)
    assert got == {"sslobj": True, "context": True, "bios": 2, "transport": True}


# -- the read path from the plain transport into the SSL protocol --------------------------------


@modern
def test_system_exit_from_data_received_propagates_out_of_the_read(any_loop, pki):
    """What a read's `buffer_updated` lets through (on oxloop called from the stream
    transport without a Python call) leaves the loop as on stock."""

    class Exiting(asyncio.Protocol):
        def data_received(self, data):
            raise SystemExit(data)

    async def setup():
        return await tls_pair(any_loop, pki, Exiting, Recorder)

    server, transport, proto, _ = run(any_loop, setup())
    transport.write(b"bye")
    with pytest.raises(SystemExit) as info:
        run(any_loop, asyncio.sleep(1))
    transport.abort()
    run(any_loop, finish(server))
    assert info.value.args == (b"bye",)


@modern
def test_reads_of_many_sizes_through_the_layer(any_loop, pki):
    async def main():
        server, transport, proto, _ = await tls_pair(any_loop, pki)
        sizes = [1, 100, 16384, 16385, 300_000]
        total = 0
        for n in sizes:
            transport.write(payload(n))
            total += n
            await proto.wait_bytes(total)
        data = bytes(proto.data)
        await finish(server, transport)
        await proto.lost
        return data

    assert run(any_loop, main()) == b"".join(payload(n) for n in [1, 100, 16384, 16385, 300_000])
