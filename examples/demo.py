"""The oxloop demo: a first coroutine program, a concurrent workload, and loopback echo
servers under load (sock_*, Protocol, streams), timed on oxloop, stock asyncio and uvloop
(if installed).

Loops take turns round by round (A B C, B C A, ...); figures are medians over rounds.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import threading
import time

import oxloop

ROUNDS = 5


async def coroutine():
    print("Coroutine started")
    await asyncio.sleep(1)
    print("Coroutine finished")


async def main():
    await coroutine()


async def workload(n_tasks: int = 5000) -> int:
    """Thousands of tasks, timers and a thread hand-off; returns a checksum."""
    loop = asyncio.get_running_loop()

    async def worker(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        await asyncio.sleep(0)
        return i

    total = sum(await asyncio.gather(*(worker(i) for i in range(n_tasks))))
    fired = loop.create_future()
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == 100:
            fired.set_result(count[0])

    for i in range(100):
        loop.call_later(0.0001 * i, tick)
    total += await fired
    handed = loop.create_future()
    threading.Thread(
        target=lambda: loop.call_soon_threadsafe(handed.set_result, 1000), daemon=True
    ).start()
    total += await handed
    total += await loop.run_in_executor(None, sum, range(10))
    return total


async def echo_under_load(clients: int = 50, messages: int = 200, size: int = 1024) -> float:
    """A sock_* echo server on loopback and `clients` clients; returns seconds taken."""
    loop = asyncio.get_running_loop()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    server.setblocking(False)
    payload = b"x" * size

    async def serve(conn):
        with conn:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)

    async def accept_all():
        tasks = []
        for _ in range(clients):
            conn, _ = await loop.sock_accept(server)
            tasks.append(asyncio.ensure_future(serve(conn)))
        await asyncio.gather(*tasks)

    async def client():
        with socket.socket() as s:
            s.setblocking(False)
            await loop.sock_connect(s, server.getsockname())
            for _ in range(messages):
                await loop.sock_sendall(s, payload)
                got = 0
                while got < size:
                    chunk = await loop.sock_recv(s, 65536)
                    if not chunk:
                        raise ConnectionError("server closed early")
                    got += len(chunk)

    t0 = time.perf_counter()
    acceptor = asyncio.ensure_future(accept_all())
    await asyncio.gather(*(client() for _ in range(clients)))
    await acceptor
    server.close()
    return time.perf_counter() - t0


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def stream_clients(port: int, clients: int, messages: int, size: int) -> None:
    payload = b"x" * size

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(messages):
            writer.write(payload)
            if len(await reader.readexactly(size)) != size:
                raise ConnectionError("short echo")
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(clients)))


async def protocol_echo(clients: int = 50, messages: int = 200, size: int = 1024) -> float:
    """An asyncio.Protocol echo server (create_server) and streams clients; seconds."""
    server = await asyncio.get_running_loop().create_server(EchoProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    await stream_clients(port, clients, messages, size)
    elapsed = time.perf_counter() - t0
    server.close()
    await server.wait_closed()
    return elapsed


async def streams_echo(clients: int = 50, messages: int = 200, size: int = 1024) -> float:
    """An asyncio streams echo server (start_server) and streams clients; seconds."""

    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    await stream_clients(port, clients, messages, size)
    elapsed = time.perf_counter() - t0
    server.close()
    await server.wait_closed()
    return elapsed


def loop_factories():
    factories = {"oxloop": oxloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("(uvloop is not installed: comparing oxloop and asyncio only)")
    return factories


def run_on(factory, coro_fn):
    loop = factory()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def compare(title: str, coro_fn) -> None:
    factories = loop_factories()
    names = list(factories)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            run_on(factories[name], coro_fn)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["oxloop"])
    print(f"\n{title} (median of {ROUNDS} interleaved rounds)")
    for name in names:
        med = statistics.median(times[name])
        print(f"  {name:8s} {med * 1000:9.1f} ms   {med / base:5.2f}x oxloop's time")


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, oxloop {oxloop.__version__}")
    oxloop.run(main())
    print("workload checksum:", oxloop.run(workload()))
    compare("5000 tasks + timers + thread hand-off", workload)
    compare("loopback sock_* echo, 50 clients x 200 x 1 KiB", echo_under_load)
    compare("loopback Protocol echo server, 50 stream clients x 200 x 1 KiB", protocol_echo)
    compare("loopback streams echo server, 50 stream clients x 200 x 1 KiB", streams_echo)
