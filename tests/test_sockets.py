"""Tests of the low-level socket coroutines: sock_recv*/send*/connect/accept/sendfile."""

import asyncio
import io
import os
import socket
import sys

import pytest
from support import is_stock, run


def skip_stock_before_311(loop):
    if is_stock(loop) and sys.version_info < (3, 11):
        pytest.skip("stock sock_recvfrom/sock_recvfrom_into/sock_sendto are 3.11+")


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_sock_recv_waits_for_data(any_loop, pair):
    a, b = pair
    any_loop.call_later(0.01, b.send, b"hello")
    assert run(any_loop, any_loop.sock_recv(a, 100)) == b"hello"


def test_sock_recv_returns_buffered_data_immediately(any_loop, pair):
    a, b = pair
    b.send(b"ready")
    assert run(any_loop, any_loop.sock_recv(a, 3)) == b"rea"
    assert run(any_loop, any_loop.sock_recv(a, 100)) == b"dy"


def test_sock_recv_returns_empty_at_eof(any_loop, pair):
    a, b = pair
    any_loop.call_later(0.01, b.close)
    assert run(any_loop, any_loop.sock_recv(a, 100)) == b""


def test_sock_recv_into(any_loop, pair):
    a, b = pair
    buf = bytearray(10)
    any_loop.call_later(0.01, b.send, b"abc")
    assert run(any_loop, any_loop.sock_recv_into(a, buf)) == 3
    assert bytes(buf[:3]) == b"abc"


def test_sock_sendall_large_payload(any_loop, pair):
    a, b = pair
    payload = os.urandom(4 * 1024 * 1024)

    async def reader():
        chunks = []
        n = 0
        while n < len(payload):
            chunk = await any_loop.sock_recv(b, 1 << 16)
            assert chunk
            chunks.append(chunk)
            n += len(chunk)
        return b"".join(chunks)

    async def main():
        sent, received = await asyncio.gather(any_loop.sock_sendall(a, payload), reader())
        return sent, received

    sent, received = run(any_loop, main())
    assert sent is None
    assert received == payload


def test_sock_sendall_accepts_memoryview(any_loop, pair):
    a, b = pair
    run(any_loop, any_loop.sock_sendall(a, memoryview(b"0123456789")[2:5]))
    assert run(any_loop, any_loop.sock_recv(b, 10)) == b"234"


def test_sock_accept_and_sock_connect(any_loop, listener):
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        (conn, addr), _ = await asyncio.gather(
            any_loop.sock_accept(listener), any_loop.sock_connect(client, listener.getsockname())
        )
        with conn:
            assert conn.gettimeout() == 0  # accepted sockets are non-blocking
            assert addr == client.getsockname()
            await any_loop.sock_sendall(client, b"ping")
            assert await any_loop.sock_recv(conn, 10) == b"ping"
            await any_loop.sock_sendall(conn, b"pong")
            return await any_loop.sock_recv(client, 10)

    try:
        assert run(any_loop, main()) == b"pong"
    finally:
        client.close()


def test_sock_connect_resolves_host_names(any_loop, listener):
    port = listener.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        accept = asyncio.ensure_future(any_loop.sock_accept(listener))
        await any_loop.sock_connect(client, ("localhost", port))
        conn, _ = await accept
        conn.close()
        return client.getpeername()

    try:
        assert run(any_loop, main()) == ("127.0.0.1", port)
    finally:
        client.close()


def test_sock_connect_refused(any_loop):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()  # nothing listens there now
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        with pytest.raises(ConnectionRefusedError):
            run(any_loop, any_loop.sock_connect(client, addr))
    finally:
        client.close()


def test_sock_connect_unix(any_loop, tmp_path):
    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.setblocking(False)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        (conn, _), _ = await asyncio.gather(
            any_loop.sock_accept(srv), any_loop.sock_connect(client, path)
        )
        with conn:
            await any_loop.sock_sendall(conn, b"unix")
            return await any_loop.sock_recv(client, 10)

    try:
        assert run(any_loop, main()) == b"unix"
    finally:
        client.close()
        srv.close()


def test_sock_recvfrom_and_sendto(any_loop, udp_pair):
    skip_stock_before_311(any_loop)
    a, b = udp_pair

    async def main():
        n = await any_loop.sock_sendto(a, b"datagram", b.getsockname())
        data, addr = await any_loop.sock_recvfrom(b, 100)
        return n, data, addr

    assert run(any_loop, main()) == (8, b"datagram", a.getsockname())


def test_sock_recvfrom_waits_for_a_datagram(any_loop, udp_pair):
    skip_stock_before_311(any_loop)
    a, b = udp_pair
    any_loop.call_later(0.01, a.sendto, b"later", b.getsockname())
    assert run(any_loop, any_loop.sock_recvfrom(b, 100)) == (b"later", a.getsockname())


def test_sock_recvfrom_into(any_loop, udp_pair):
    skip_stock_before_311(any_loop)
    a, b = udp_pair
    buf = bytearray(16)
    any_loop.call_later(0.01, a.sendto, b"into-buffer", b.getsockname())
    nbytes, addr = run(any_loop, any_loop.sock_recvfrom_into(b, buf))
    assert (nbytes, bytes(buf[:nbytes]), addr) == (11, b"into-buffer", a.getsockname())
    a.sendto(b"0123456789", b.getsockname())
    buf = bytearray(16)
    nbytes, _ = run(any_loop, any_loop.sock_recvfrom_into(b, buf, 4))
    assert (nbytes, bytes(buf[:4])) == (4, b"0123")


def test_cancelled_sock_recv_leaves_the_socket_usable(any_loop, pair):
    a, b = pair

    async def main():
        first = asyncio.ensure_future(any_loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        any_loop.call_later(0.01, b.send, b"after-cancel")
        return await any_loop.sock_recv(a, 100)

    assert run(any_loop, main()) == b"after-cancel"


def test_cancelled_sock_accept_leaves_the_listener_usable(any_loop, listener):
    async def main():
        first = asyncio.ensure_future(any_loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        client = socket.create_connection(listener.getsockname())
        try:
            conn, _ = await any_loop.sock_accept(listener)
            conn.close()
            return "accepted"
        finally:
            client.close()

    assert run(any_loop, main()) == "accepted"


BLOCKING_CALLS = {
    "sock_recv": lambda lp, s: lp.sock_recv(s, 1),
    "sock_recv_into": lambda lp, s: lp.sock_recv_into(s, bytearray(1)),
    "sock_sendall": lambda lp, s: lp.sock_sendall(s, b"x"),
    "sock_connect": lambda lp, s: lp.sock_connect(s, ("127.0.0.1", 9)),
    "sock_accept": lambda lp, s: lp.sock_accept(s),
    "sock_recvfrom": lambda lp, s: lp.sock_recvfrom(s, 1),
    "sock_recvfrom_into": lambda lp, s: lp.sock_recvfrom_into(s, bytearray(1)),
    "sock_sendto": lambda lp, s: lp.sock_sendto(s, b"x", ("127.0.0.1", 9)),
}


@pytest.mark.parametrize("method", sorted(BLOCKING_CALLS))
def test_blocking_socket_is_rejected_in_debug_mode(any_loop, method):
    if method in ("sock_recvfrom", "sock_recvfrom_into", "sock_sendto"):
        skip_stock_before_311(any_loop)
    any_loop.set_debug(True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert sock.gettimeout() is None  # blocking
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(any_loop, BLOCKING_CALLS[method](any_loop, sock))
    finally:
        sock.close()


# -- sock_sendfile -----------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


async def _recv_exactly(loop, sock, n):
    chunks = []
    while n:
        chunk = await loop.sock_recv(sock, min(n, 1 << 16))
        assert chunk, "unexpected EOF"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def test_sock_sendfile_whole_file(any_loop, pair, data_file):
    a, b = pair
    f, data = data_file

    async def main():
        return await asyncio.gather(
            any_loop.sock_sendfile(a, f), _recv_exactly(any_loop, b, len(data))
        )

    sent, received = run(any_loop, main())
    assert sent == len(data)
    assert received == data
    assert f.tell() == len(data)


def test_sock_sendfile_offset_and_count(any_loop, pair, data_file):
    a, b = pair
    f, data = data_file

    async def main():
        return await asyncio.gather(
            any_loop.sock_sendfile(a, f, 1000, 5000), _recv_exactly(any_loop, b, 5000)
        )

    sent, received = run(any_loop, main())
    assert sent == 5000
    assert received == data[1000:6000]
    assert f.tell() == 6000


def test_sock_sendfile_argument_checks(any_loop, pair, data_file, tmp_path):
    a, _ = pair
    f, _ = data_file
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    with udp, open(tmp_path / "text.txt", "w+") as text:
        with pytest.raises(ValueError, match="file should be opened in binary mode"):
            run(any_loop, any_loop.sock_sendfile(a, text))
        with pytest.raises(ValueError, match="only SOCK_STREAM type sockets are supported"):
            run(any_loop, any_loop.sock_sendfile(udp, f))
        with pytest.raises(ValueError, match="count must be a positive integer"):
            run(any_loop, any_loop.sock_sendfile(a, f, 0, 0))
        with pytest.raises(ValueError, match="offset must be a non-negative integer"):
            run(any_loop, any_loop.sock_sendfile(a, f, -1))


def test_sock_sendfile_falls_back_for_non_regular_files(any_loop, pair):
    a, b = pair
    data = os.urandom(70_000)

    async def main():
        return await asyncio.gather(
            any_loop.sock_sendfile(a, io.BytesIO(data)), _recv_exactly(any_loop, b, len(data))
        )

    sent, received = run(any_loop, main())
    assert sent == len(data)
    assert received == data


def test_sock_sendfile_without_fallback_raises(any_loop, pair):
    a, _ = pair
    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(any_loop, any_loop.sock_sendfile(a, io.BytesIO(b"x"), fallback=False))


def test_sock_sendall_empty_payload(any_loop, pair):
    a, b = pair
    assert run(any_loop, any_loop.sock_sendall(a, b"")) is None
    b.send(b"z")
    assert run(any_loop, any_loop.sock_recv(a, 10)) == b"z"


def _ipv6_listener():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        srv.bind(("::1", 0))
    except OSError:
        srv.close()
        pytest.skip("no IPv6 loopback")
    srv.listen(1)
    srv.setblocking(False)
    return srv


def test_sock_connect_ipv6(any_loop):
    srv = _ipv6_listener()
    client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    client.setblocking(False)

    async def main():
        accept = asyncio.ensure_future(any_loop.sock_accept(srv))
        await any_loop.sock_connect(client, ("::1", srv.getsockname()[1]))
        conn, _ = await accept
        conn.close()
        return client.getpeername()[:2]

    try:
        assert run(any_loop, main()) == ("::1", srv.getsockname()[1])
    finally:
        client.close()
        srv.close()
