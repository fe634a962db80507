"""Large reads on stream transports: every byte arrives in order as exact `bytes`, a chunk
the protocol keeps never changes afterwards, hashes match the contents, and many large
reads leave no memory behind (oxloop reads large ones straight into a reused `bytes`)."""

import asyncio
import os
import socket
import tracemalloc

import pytest
from support import run

KIB = 1024


class Collect(asyncio.Protocol):
    """Records every chunk; keeps every other one (the rest only as copies)."""

    def __init__(self, keep=True):
        self.keep = keep
        self.count = 0
        self.received = bytearray()
        self.kept = []  # (the chunk itself, a copy of it when delivered)
        self.hashes_ok = True
        self.types_ok = True
        self.waiter = None
        self.want = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.types_ok &= type(data) is bytes
        self.hashes_ok &= hash(data) == hash(bytes(bytearray(data)))
        self.received += data
        if self.keep and self.count % 2 == 0:
            self.kept.append((data, bytes(bytearray(data))))
        self.count += 1
        if self.waiter is not None and len(self.received) >= self.want:
            if not self.waiter.done():
                self.waiter.set_result(None)

    async def wait_total(self, n):
        if len(self.received) < n:
            self.want = n
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None


def big_pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return a, b


def message(i, size):
    # Distinct contents per message, so a chunk overwritten later would show.
    pattern = bytes((i * 7 + k) % 251 for k in range(251))
    return (pattern * (size // 251 + 1))[:size]


# Repeated sizes (a read that fits the previous chunk's length exactly), smaller and larger
# ones, and more than one read's worth (256 KiB) at once.
SIZES = [
    100,
    100,
    100,
    50,
    100,
    200,
    200,
    300,
    100,
    16,
    17,
    100,
    1,
    100,
    256,
    256,
    600,
    4,
    4,
    8,
    5,
    8,
    8,
]


@pytest.mark.parametrize("keep", [True, False])
def test_large_messages_arrive_intact_and_kept_chunks_do_not_change(any_loop, keep):
    loop = any_loop
    a, b = big_pair()
    with a, b:
        b.setblocking(False)

        async def main():
            transport, proto = await loop.create_connection(lambda: Collect(keep), sock=a)
            sent = bytearray()
            for i, size in enumerate(SIZES):
                data = message(i, size * KIB)
                sent += data
                await loop.sock_sendall(b, data)
                await proto.wait_total(len(sent))
            transport.close()
            return proto, bytes(sent)

        proto, sent = run(loop, main())
    assert proto.received == sent
    assert proto.types_ok
    assert proto.hashes_ok
    for chunk, copy in proto.kept:
        assert chunk == copy
        assert hash(chunk) == hash(copy)


def test_large_reads_from_a_pipe_arrive_intact(any_loop):
    loop = any_loop
    r, w = os.pipe()

    async def main():
        transport, proto = await loop.connect_read_pipe(Collect, os.fdopen(r, "rb", 0))
        wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
        sent = bytearray()
        for i, size in enumerate([64, 64, 100, 32, 64, 300]):
            data = message(i, size * KIB)
            sent += data
            wt.write(data)
            await proto.wait_total(len(sent))
        wt.close()
        transport.close()
        return proto, bytes(sent)

    proto, sent = run(loop, main())
    assert proto.received == sent
    assert proto.types_ok
    for chunk, copy in proto.kept:
        assert chunk == copy


class Drop(asyncio.Protocol):
    """Counts what arrives and keeps nothing (but the last chunk, now and then)."""

    def __init__(self):
        self.total = 0
        self.last = None
        self.waiter = None
        self.want = 0

    def data_received(self, data):
        self.total += len(data)
        self.last = data if self.total % 3 == 0 else None
        if self.waiter is not None and self.total >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait_total(self, n):
        if self.total < n:
            self.want = n
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None


def test_many_large_reads_leave_no_memory_behind(any_loop):
    loop = any_loop
    a, b = big_pair()
    with a, b:
        b.setblocking(False)

        async def main():
            transport, proto = await loop.create_connection(Drop, sock=a)
            sizes = [100 * KIB, 100 * KIB, 64 * KIB, 100 * KIB, 300 * KIB, 100 * KIB - 1]
            payloads = [message(i, n) for i, n in enumerate(sizes)]
            sent = 0

            async def rounds(n):
                nonlocal sent
                for i in range(n):
                    data = payloads[i % len(payloads)]
                    sent += len(data)
                    await loop.sock_sendall(b, data)
                    await proto.wait_total(sent)

            await rounds(30)
            tracemalloc.start()
            try:
                await rounds(10)
                before = tracemalloc.get_traced_memory()[0]
                await rounds(200)
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            transport.close()
            return after - before

        grown = run(loop, main())
    # 200 reads of about 100 KiB each: 20 MB if each stayed; allow one spare's worth.
    assert grown < 1024 * KIB
