"""Tests of TLS over the stream transports: ssl= on connections and servers, start_tls,
sendfile's fallback; on oxloop and stock.

The certificates (a CA and a server certificate for localhost/127.0.0.1 signed by it) are
made at test time with trustme (`certs.py`).
"""

import asyncio
import os
import socket

import pytest
from certs import make_pki
from support import run
from test_transports import BufferedCollector, Echo, Recorder, payload, spin

import oxloop

ssl = pytest.importorskip("ssl")


@pytest.fixture
def pki():
    """A fresh test CA and a server certificate for localhost/127.0.0.1 (trustme)."""
    return make_pki()


@pytest.fixture
def server_ctx(pki):
    return pki.server


@pytest.fixture
def client_ctx(pki):
    return pki.client


# -- ssl= on connections and servers -------------------------------------------------------------


def test_tls_echo_over_tcp(any_loop, server_ctx, client_ctx):
    async def main():
        accepted = any_loop.create_future()

        class Server(Echo):
            def connection_made(self, transport):
                super().connection_made(transport)
                accepted.set_result(transport)

        server = await any_loop.create_server(Server, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(
            Recorder, "localhost", port, ssl=client_ctx
        )
        msg = payload(2 << 20, seed=11)
        transport.write(msg)
        same = await proto.wait_bytes(len(msg)) == msg
        server_side = await accepted
        info = (
            transport.get_extra_info("sslcontext") is client_ctx,
            isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject),
            ("DNS", "localhost") in transport.get_extra_info("peercert")["subjectAltName"],
            transport.get_extra_info("cipher") is not None,
            transport.get_extra_info("peername")[1] == port,
            transport.get_extra_info("socket") is not None,
            server_side.get_extra_info("sslcontext") is server_ctx,
            server_side.get_extra_info("peercert"),
            transport.can_write_eof(),
            isinstance(transport, asyncio.Transport),
        )
        transport.close()
        exc = await proto.lost
        server.close()
        await server.wait_closed()
        return same, info, exc, proto.events

    same, info, exc, events = run(any_loop, main())
    assert same
    assert info == (True, True, True, True, True, True, True, None,
                    False, True)  # fmt: skip
    assert exc is None
    assert events[:2] == ["made", "data"]
    assert events[-1] == "lost"


class ViewCollector(BufferedCollector):
    # A memoryview: asyncio's sslproto fills `buf[offset:]`, which for a bytearray is a copy.
    def get_buffer(self, sizehint):
        super().get_buffer(sizehint)
        return memoryview(self.buf)


def test_tls_buffered_protocol_client(any_loop, server_ctx, client_ctx):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(
            ViewCollector, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        msg = payload(300_000, seed=12)
        transport.write(msg)
        while len(proto.data) < len(msg) and not proto.lost.done():
            await asyncio.sleep(0.001)
        got = bytes(proto.data)
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        return len(got), got == msg

    assert run(any_loop, main()) == (300_000, True)


def test_tls_over_unix_sockets(any_loop, tmp_path, server_ctx, client_ctx):
    path = str(tmp_path / "tls.sock")

    async def main():
        server = await any_loop.create_unix_server(Echo, path, ssl=server_ctx)
        transport, proto = await any_loop.create_unix_connection(
            Recorder, path, ssl=client_ctx, server_hostname="localhost"
        )
        transport.write(b"unix over tls")
        data = await proto.wait_bytes(13)
        version = transport.get_extra_info("ssl_object").version()
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        return data, version.startswith("TLS")

    assert run(any_loop, main()) == (b"unix over tls", True)


def test_tls_connect_accepted_socket(any_loop, server_ctx, client_ctx):
    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            connecting = asyncio.ensure_future(
                any_loop.create_connection(Recorder, "localhost", port, ssl=client_ctx)
            )
            listener.setblocking(False)
            conn, _ = await any_loop.sock_accept(listener)
        server_transport, _ = await any_loop.connect_accepted_socket(Echo, conn, ssl=server_ctx)
        transport, proto = await connecting
        transport.write(b"accepted tls")
        data = await proto.wait_bytes(12)
        transport.close()
        await proto.lost
        server_transport.close()
        return data

    assert run(any_loop, main()) == b"accepted tls"


def test_tls_certificate_failure(any_loop, server_ctx):
    async def main():
        contexts = []
        any_loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        untrusting = ssl.create_default_context()  # does not know the test CA
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await any_loop.create_connection(Recorder, "localhost", port, ssl=untrusting)
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return info.value.verify_code, contexts

    code, contexts = run(any_loop, main())
    assert code != 0
    # In non-debug mode a failed server-side handshake is not reported.
    assert [c["message"] for c in contexts if "exception" in c] == []


def test_tls_wrong_hostname(any_loop, server_ctx, client_ctx):
    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await any_loop.create_connection(
                Recorder, "127.0.0.1", port, ssl=client_ctx, server_hostname="example.com"
            )
        server.close()
        await server.wait_closed()
        return info.value.verify_message

    assert "mismatch" in run(any_loop, main()).lower()


def test_tls_argument_errors(any_loop, client_ctx):
    async def main():
        out = []
        for kwargs in (
            {"ssl_handshake_timeout": 0},
            {"ssl_handshake_timeout": -1},
        ):
            with socket.socket() as blocker:
                blocker.bind(("127.0.0.1", 0))
                blocker.listen(1)
                port = blocker.getsockname()[1]
                with pytest.raises(ValueError) as info:
                    await any_loop.create_connection(
                        Recorder, "127.0.0.1", port, ssl=client_ctx, **kwargs
                    )
                out.append(str(info.value))
        with pytest.raises(ValueError) as info:
            await any_loop.create_connection(Recorder, "127.0.0.1", 1, ssl_handshake_timeout=1)
        out.append(str(info.value))
        with pytest.raises(ValueError) as info:
            await any_loop.create_unix_connection(Recorder, "/nonexistent", ssl=client_ctx)
        out.append(str(info.value))
        return out

    assert run(any_loop, main()) == [
        "ssl_handshake_timeout should be a positive number, got 0",
        "ssl_handshake_timeout should be a positive number, got -1",
        "ssl_handshake_timeout is only meaningful with ssl",
        "you have to pass server_hostname when using ssl",
    ]


def test_tls_handshake_timeout(any_loop, client_ctx):
    async def main():
        # A listener that accepts at the kernel level and never answers the handshake.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            port = silent.getsockname()[1]
            with pytest.raises(ConnectionAbortedError) as info:
                await any_loop.create_connection(
                    Recorder, "localhost", port, ssl=client_ctx, ssl_handshake_timeout=0.1
                )
            return str(info.value)

    assert (
        run(any_loop, main())
        == "SSL handshake is taking longer than 0.1 seconds: aborting the connection"
    )


# -- start_tls -----------------------------------------------------------------------------------


class StartTLSServer(asyncio.Protocol):
    """Plain text until 'STARTTLS', then TLS (echo) on the same connection."""

    def __init__(self, ctx, upgraded):
        self.ctx = ctx
        self.upgraded = upgraded
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data == b"STARTTLS":
            # Hold reading, so no TLS byte reaches the plain protocol.
            self.transport.pause_reading()
            self.transport.write(b"GO")
            self.loop.create_task(self.upgrade())
        else:
            self.transport.write(data)

    async def upgrade(self):
        tls = await self.loop.start_tls(self.transport, self, self.ctx, server_side=True)
        self.transport = tls
        self.upgraded.set_result(tls)


def test_start_tls_upgrades_a_connection(any_loop, server_ctx, client_ctx):
    async def main():
        upgraded = any_loop.create_future()
        server = await any_loop.create_server(
            lambda: StartTLSServer(server_ctx, upgraded), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        plain, proto = await any_loop.create_connection(Recorder, "127.0.0.1", port)
        plain.write(b"hi")
        await proto.wait_bytes(2)
        plain.write(b"STARTTLS")
        await proto.wait_bytes(4)
        tls = await any_loop.start_tls(plain, proto, client_ctx, server_hostname="localhost")
        server_tls = await upgraded
        before = bytes(proto.data)
        proto.data.clear()
        msg = payload(500_000, seed=13)
        tls.write(msg)
        same = await proto.wait_bytes(len(msg)) == msg
        info = (
            ("DNS", "localhost") in tls.get_extra_info("peercert")["subjectAltName"],
            server_tls.get_extra_info("sslcontext") is server_ctx,
            tls.get_protocol() is proto,
            plain.is_closing(),
        )
        tls.close()
        exc = await proto.lost
        server.close()
        await server.wait_closed()
        return before, same, info, exc, plain.is_closing()

    before, same, info, exc, plain_closing = run(any_loop, main())
    assert before == b"hiGO"
    assert same
    assert info == (True, True, True, False)
    assert exc is None
    assert plain_closing


def test_start_tls_argument_errors(any_loop, client_ctx):
    async def main():
        a, b = socket.socketpair()
        r, w = os.pipe()
        wf = os.fdopen(w, "wb", 0)
        try:
            transport, _ = await any_loop.create_connection(asyncio.Protocol, sock=a)
            with pytest.raises(TypeError) as bad_ctx:
                await any_loop.start_tls(transport, transport.get_protocol(), None)
            pipe, _ = await any_loop.connect_write_pipe(asyncio.Protocol, wf)
            with pytest.raises(TypeError) as bad_transport:
                await any_loop.start_tls(pipe, pipe.get_protocol(), client_ctx)
            transport.close()
            pipe.close()
            await spin()
            return str(bad_ctx.value), str(bad_transport.value)
        finally:
            b.close()
            os.close(r)

    bad_ctx, bad_transport = run(any_loop, main())
    assert bad_ctx == "sslcontext is expected to be an instance of ssl.SSLContext, got None"
    assert bad_transport.startswith("transport <")
    assert bad_transport.endswith("> is not supported by start_tls()")


# -- sendfile over TLS ---------------------------------------------------------------------------


def test_sendfile_over_tls_falls_back(any_loop, tmp_path, server_ctx, client_ctx):
    data = payload(1 << 20, seed=14)
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    async def main():
        server = await any_loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await any_loop.create_connection(
            Recorder, "localhost", port, ssl=client_ctx
        )
        with open(path, "rb") as f:
            with pytest.raises(RuntimeError) as info:
                await any_loop.sendfile(transport, f, fallback=False)
            sent = await any_loop.sendfile(transport, f)
            same = await proto.wait_bytes(len(data)) == data
            position = f.tell()
            sent2 = await any_loop.sendfile(transport, f, 10, 100)
            tail = await proto.wait_bytes(len(data) + 100)
        transport.write(b"!")
        end = await proto.wait_bytes(len(data) + 101)
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        return (
            str(info.value),
            sent,
            same,
            position,
            sent2,
            tail[len(data) :] == data[10:110],
            end[-1:],
        )

    msg, *rest = run(any_loop, main())
    assert msg.startswith("fallback is disabled and native sendfile is not supported")
    assert rest == [len(data), True, len(data), 100, True, b"!"]


# -- failures leave no reference cycles ------------------------------------------------------------


@pytest.mark.parametrize("upgrade", [False, True], ids=["create_connection", "start_tls"])
def test_failed_certificate_frees_the_transports_without_the_collector(
    any_loop, server_ctx, upgrade
):
    # The error's traceback holds the frames that awaited the handshake; none of them may
    # keep the waiter (and through it the transports) alive: freed by reference counts
    # alone, with the collector off. Stock does so from 3.14 on (gh-159049).
    import gc
    import sys

    if not isinstance(any_loop, oxloop.Loop) and sys.version_info < (3, 14):
        pytest.skip("the stock loop keeps the cycle before 3.14 (gh-159049)")
    untrusted = ssl.create_default_context()  # does not know the test CA: the check fails

    async def main():
        server = await any_loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_ctx)
        port = server_port[0] = server.sockets[0].getsockname()[1]
        try:
            if upgrade:
                tr, proto = await any_loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
                try:
                    await any_loop.start_tls(tr, proto, untrusted, server_hostname="localhost")
                finally:
                    del tr, proto
            else:
                await any_loop.create_connection(
                    asyncio.Protocol, "127.0.0.1", port, ssl=untrusted, server_hostname="localhost"
                )
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("the handshake should have failed")
        finally:
            server.close()
            await server.wait_closed()

    def client_transports():
        # The client's raw and TLS transports: those whose peer is the server.
        return [
            o
            for o in gc.get_objects()
            if isinstance(o, asyncio.BaseTransport)
            and (o.get_extra_info("peername") or (None, None))[1] == server_port[0]
        ]

    server_port = [None]
    gc.collect()
    gc.disable()
    try:
        run(any_loop, main())
        assert client_transports() == []
    finally:
        gc.enable()
