"""The benchmark's server process: every network server of bench/bench.py on one event loop.

    python bench/servers.py --loop oxloop|asyncio|uvloop [--tls-cert PEM --tls-key PEM]

Listens on 127.0.0.1 (ports chosen by the kernel) with

* `proto`:   an echo server on an `asyncio.Protocol` (`data_received` writes the data back);
* `streams`: an echo server on asyncio streams (`read(64 KiB)`, `write`, `await drain()`);
* `sock`:    an echo server on the `sock_*` methods (`sock_accept`, `sock_recv`,
             `sock_sendall`), one task per connection;
* `http`:    an HTTP/1.1 keep-alive server on a Protocol with `httptools`' request parser,
             answering every request with the same small response;
* `tls`:     the `proto` echo server behind an `ssl.SSLContext` (with --tls-cert/--tls-key).

prints `{"pid": ..., "proto": PORT, ...}` as one line on stdout, and serves until stdin
closes. The harness starts one such process per loop and keeps it for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import sys

import httptools

HTTP_BODY = b"Hello, world!\n"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
BACKLOG = 4096
READ_SIZE = 64 * 1024


def new_loop(kind):
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    raise ValueError(kind)


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


async def streams_echo(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def sock_echo_conn(loop, conn):
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


async def sock_echo_server(loop, listener):
    tasks = set()
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        # Same as the transports (stock, uvloop and oxloop set it on TCP transports).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = loop.create_task(sock_echo_conn(loop, conn))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    def on_message_complete(self):
        self.transport.write(HTTP_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None


def quiet_handler(loop, context):
    # Connections the client drops mid-request end every measurement: don't log those.
    if isinstance(context.get("exception"), (ConnectionError, ssl.SSLError)):
        return
    loop.default_exception_handler(context)


async def serve(args):
    loop = asyncio.get_running_loop()
    host = "127.0.0.1"
    servers = {}
    servers["proto"] = await loop.create_server(EchoProtocol, host, 0, backlog=BACKLOG)
    servers["streams"] = await asyncio.start_server(streams_echo, host, 0, backlog=BACKLOG)
    servers["http"] = await loop.create_server(HttpProtocol, host, 0, backlog=BACKLOG)
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        servers["tls"] = await loop.create_server(EchoProtocol, host, 0, ssl=ctx, backlog=BACKLOG)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    sock_task = loop.create_task(sock_echo_server(loop, listener))

    ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    ports["sock"] = listener.getsockname()[1]
    print(json.dumps({"pid": os.getpid(), "loop": args.loop, **ports}), flush=True)

    # Serve until the harness closes our stdin.
    done = loop.create_future()

    def on_stdin():
        if not os.read(sys.stdin.fileno(), 4096) and not done.done():
            done.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await done
    loop.remove_reader(sys.stdin.fileno())
    sock_task.cancel()
    listener.close()
    for s in servers.values():
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, choices=["oxloop", "asyncio", "uvloop"])
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(quiet_handler)
    try:
        loop.run_until_complete(serve(args))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
