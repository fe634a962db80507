"""Tests of which path `sock_recv`/`sock_sendall` take: plain sockets, subclasses, odd arguments.

oxloop runs these calls in Rust for a plain non-blocking `socket.socket` and `bytes`, and in
Python otherwise; results, exceptions and cancellation must match the stock loop either way.
"""

import asyncio
import gc
import socket
import weakref

import pytest
from support import run, run_forever_once


class RecordingSocket(socket.socket):
    """A socket subclass whose recv/send the loop must call (as stock does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def recv(self, n):
        self.calls.append(("recv", n))
        return super().recv(n)

    def send(self, data):
        self.calls.append(("send", len(data)))
        return super().send(data)


@pytest.fixture
def sub_pair(pair):
    a, b = pair
    sub = RecordingSocket(a.family, a.type, a.proto, fileno=a.detach())
    sub.setblocking(False)
    with sub:
        yield sub, b


def test_socket_subclass_methods_are_called(any_loop, sub_pair):
    sub, b = sub_pair

    async def main():
        await any_loop.sock_sendall(sub, b"abc")
        assert await any_loop.sock_recv(b, 10) == b"abc"
        b.send(b"xyz")
        return await any_loop.sock_recv(sub, 10)

    assert run(any_loop, main()) == b"xyz"
    assert ("send", 3) in sub.calls
    assert ("recv", 10) in sub.calls


@pytest.mark.parametrize(
    "n, exc, text",
    [
        (-1, ValueError, "negative buffersize in recv"),
        (1.5, TypeError, "integer"),
        (1 << 80, OverflowError, "too large"),
    ],
)
def test_sock_recv_bad_sizes(any_loop, pair, n, exc, text):
    a, _ = pair
    with pytest.raises(exc, match=text):
        run(any_loop, any_loop.sock_recv(a, n))


def test_sock_recv_size_given_as_bool_or_index(any_loop, pair):
    a, b = pair

    class Two:
        def __index__(self):
            return 2

    b.send(b"hello")
    assert run(any_loop, any_loop.sock_recv(a, True)) == b"h"
    assert run(any_loop, any_loop.sock_recv(a, Two())) == b"el"
    assert run(any_loop, any_loop.sock_recv(a, 0)) == b""
    assert run(any_loop, any_loop.sock_recv(a, 100)) == b"lo"


def test_sock_recv_on_a_socket_with_a_timeout(any_loop, pair):
    a, b = pair
    a.settimeout(5.0)
    b.send(b"ready")
    assert run(any_loop, any_loop.sock_recv(a, 100)) == b"ready"


def test_sock_recv_closed_socket(any_loop, pair):
    a, _ = pair
    a.close()
    with pytest.raises(OSError) as info:
        run(any_loop, any_loop.sock_recv(a, 10))
    assert type(info.value) is OSError
    assert str(info.value) == "[Errno 9] Bad file descriptor"


def test_sock_recv_socket_closed_while_waiting(any_loop, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(any_loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        fd = a.detach()  # the object no longer has an fd; the fd itself stays open
        try:
            b.send(b"x")
            with pytest.raises(OSError) as info:
                await task
        finally:
            socket.socket(fileno=fd).close()
        return info.value

    err = run(any_loop, main())
    assert type(err) is OSError
    assert err.errno == 9


def test_sock_recv_error_from_the_peer(any_loop, pair):
    a, b = pair
    a.send(b"unread")
    b.close()  # with data it never read: the peer sees a reset
    with pytest.raises(ConnectionResetError, match=r"\[Errno 104\] Connection reset by peer"):
        run(any_loop, any_loop.sock_recv(a, 10))


def test_sock_sendall_bytearray_and_memoryview(any_loop, pair):
    a, b = pair
    run(any_loop, any_loop.sock_sendall(a, bytearray(b"abc")))
    run(any_loop, any_loop.sock_sendall(a, memoryview(b"defg")))
    assert run(any_loop, any_loop.sock_recv(b, 10)) == b"abcdefg"


def test_sock_sendall_rejects_str(any_loop, pair):
    a, _ = pair
    with pytest.raises(TypeError, match="bytes-like object is required"):
        run(any_loop, any_loop.sock_sendall(a, "text"))


def test_sock_sendall_to_a_closed_peer(any_loop, pair):
    a, b = pair
    b.close()
    with pytest.raises(BrokenPipeError):
        run(any_loop, any_loop.sock_sendall(a, b"x" * 100))


def test_sock_sendall_peer_closes_while_waiting(any_loop, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = b"y" * (8 * 1024 * 1024)

    async def main():
        task = asyncio.ensure_future(any_loop.sock_sendall(a, payload))
        await asyncio.sleep(0.01)
        assert not task.done()  # the kernel buffers filled up: waiting for the writer
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await task

    run(any_loop, main())


@pytest.mark.parametrize("replaced", [False, True])
@pytest.mark.parametrize("kind", ["recv", "sendall"])
def test_cancelling_removes_only_its_own_reader_or_writer(any_loop, pair, kind, replaced):
    a, _ = pair  # the peer never reads: a large sendall has to wait
    if kind == "recv":
        call, add, remove = any_loop.sock_recv(a, 10), any_loop.add_reader, any_loop.remove_reader
    else:
        call = any_loop.sock_sendall(a, b"z" * (8 * 1024 * 1024))
        add, remove = any_loop.add_writer, any_loop.remove_writer

    async def main():
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.01)
        assert not task.done()
        if replaced:
            add(a, print, "added after the sock_* call's own")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return remove(a)

    # Cancelling removes the call's reader/writer, but not one that replaced it.
    assert run(any_loop, main()) is replaced


def test_sock_recv_waiting_then_data_in_pieces(any_loop, pair):
    a, b = pair

    async def main():
        got = []
        for piece in (b"one", b"two", b"three"):
            task = asyncio.ensure_future(any_loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            any_loop.call_soon(b.send, piece)
            got.append(await task)
        return got

    assert run(any_loop, main()) == [b"one", b"two", b"three"]


def test_pending_sock_recv_is_collected_after_close(any_loop, pair):
    a, _ = pair

    async def start():
        return asyncio.ensure_future(any_loop.sock_recv(a, 10))

    task = run(any_loop, start())
    run_forever_once(any_loop)
    ref = weakref.ref(task)
    any_loop.close()
    del task
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("n", [1 << 10, 1 << 20])  # below and above oxloop's read buffer
def test_sock_recv_sizes_around_the_read_buffer(any_loop, pair, n):
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    payload = bytes(range(256)) * 2048  # 512 KiB
    sent = b.send(payload)

    async def main():
        got = b""
        while len(got) < sent:
            chunk = await any_loop.sock_recv(a, n)
            assert 0 < len(chunk) <= n
            got += chunk
        return got

    assert run(any_loop, main()) == payload[:sent]
