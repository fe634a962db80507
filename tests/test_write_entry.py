"""Tests of `transport.write()` and `is_closing()` through every path oxloop takes them:
the direct entry (an exact `bytes`, nothing queued), the method it hands other calls to
(other types and argument shapes), and the continuation after a partial or blocked first
send. Each test runs on oxloop and on the stock loop: the assertions are stock behaviour.
"""

import array
import asyncio
import socket

import pytest
from support import run
from test_transports import Recorder, _pair, check_exc_handler, payload, recv_all, transport_over


@pytest.fixture(params=["tcp", "unix"])
def pair(request):
    yield from _pair(request.param, False)


class Bytes(bytes):
    pass


def test_write_argument_shapes(any_loop, pair):
    a, b = pair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        errors = []
        for args in [(), (b"a", b"b")]:
            try:
                transport.write(*args)
            except TypeError:
                errors.append(len(args))
        transport.write(data=b"kw")
        type(transport).write(transport, b"-unbound")
        transport.write(Bytes(b"-sub"))
        write = transport.write
        write(memoryview(b"-view"))
        transport.close()
        return errors, await recv_all(any_loop, b)

    errors, got = run(any_loop, main())
    assert errors == [0, 2]
    assert got == b"kw-unbound-sub-view"


def test_writelines_takes_any_buffer(any_loop, pair):
    a, b = pair

    async def main():
        transport, _ = await transport_over(any_loop, a)
        transport.writelines([array.array("b", b"ab"), b"cd"])
        transport.close()
        return await recv_all(any_loop, b)

    assert run(any_loop, main()) == b"abcd"


def test_empty_writes_to_a_lost_connection_are_not_counted(any_loop, pair, caplog):
    a, b = pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.close()
        await proto.lost
        for _ in range(10):
            transport.write(b"")
        return await recv_all(any_loop, b)

    with caplog.at_level("WARNING", logger="asyncio"):
        assert run(any_loop, main()) == b""
    assert "socket.send() raised exception." not in caplog.text


def test_write_after_write_eof_raises_even_once_lost(any_loop, pair):
    """An exact bytes on a transport the direct entry must not send on."""
    a, b = pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.write(b"one")
        transport.write_eof()
        errors = []
        got = b""
        for _ in range(2):
            with pytest.raises(RuntimeError) as info:
                transport.write(b"two")
            errors.append(str(info.value))
            got += await recv_all(any_loop, b)
            transport.close()
            await proto.lost
        return errors, got

    errors, got = run(any_loop, main())
    assert errors == ["Cannot call write() after write_eof()"] * 2
    assert got == b"one"


def fill_send_buffer(sock):
    """Send on `sock` until the kernel takes no more; return what was sent."""
    sent = bytearray()
    chunk = b"f" * 65536
    while True:
        try:
            n = sock.send(chunk)
        except BlockingIOError:
            return bytes(sent)
        sent += chunk[:n]


KINDS = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}


@pytest.mark.parametrize("kind", KINDS)
def test_first_send_that_would_block_queues_and_pauses(any_loop, pair, kind):
    """The direct entry's send finds the kernel buffer full: the data is queued, the
    protocol paused (high water mark 0) and everything arrives in order."""
    a, b = pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        transport.set_write_buffer_limits(high=0)
        filled = fill_send_buffer(a)
        msg = payload(1000, seed=5)
        transport.write(KINDS[kind](msg))
        queued = transport.get_write_buffer_size()
        flow = list(proto.flow)
        transport.close()
        got = await recv_all(any_loop, b)
        await proto.lost
        return queued, flow, got == filled + msg, proto.flow

    queued, flow, same, flow_after = run(any_loop, main())
    assert queued == 1000
    assert flow == [("pause", 1000)]
    assert same
    assert flow_after == [("pause", 1000), ("resume", 0)]


@pytest.mark.parametrize("kind", KINDS)
def test_partial_first_send_keeps_the_rest(any_loop, pair, kind):
    a, b = pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        msg = payload(4 << 20, seed=7)
        transport.write(KINDS[kind](msg))
        queued = transport.get_write_buffer_size()
        transport.write(b"tail")
        transport.close()
        got = await recv_all(any_loop, b)
        await proto.lost
        return 0 < queued < len(msg), got == msg + b"tail"

    assert run(any_loop, main()) == (True, True)


def test_write_error_on_the_direct_send_loses_the_connection(any_loop):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        contexts = check_exc_handler(any_loop)
        transport, proto = await transport_over(any_loop, a, Recorder())
        transport.pause_reading()
        b.close()
        transport.write(b"x")
        exc = await proto.lost
        return exc, contexts, transport.is_closing()

    try:
        exc, contexts, closing = run(any_loop, main())
    finally:
        a.close()
        b.close()
    assert isinstance(exc, (BrokenPipeError, ConnectionResetError))
    assert contexts == []
    assert closing


def test_is_closing_through_the_class(any_loop, pair):
    a, b = pair

    async def main():
        transport, proto = await transport_over(any_loop, a)
        is_closing = type(transport).is_closing
        states = [is_closing(transport)]
        with pytest.raises(TypeError):
            transport.is_closing(1)
        transport.close()
        states.append(is_closing(transport))
        await proto.lost
        return states

    assert run(any_loop, main()) == [False, True]


def test_sendto_takes_only_bytes_bytearray_memoryview(any_loop):
    async def main():
        transport, _ = await any_loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            with pytest.raises(TypeError) as info:
                transport.sendto(array.array("b", b"xy"), ("127.0.0.1", 9))
        finally:
            transport.close()
        return str(info.value)

    assert run(any_loop, main()) == "data argument must be a bytes-like object, not 'array'"
