"""Real frameworks, unchanged, on oxloop over loopback: uvicorn + starlette, aiohttp, websockets,
httpx, and TLS with a certificate made at test time.

Every test runs its whole exchange (server and client in one loop) once on oxloop and once on
stock asyncio with the same assertions. ``run_on`` also checks that the loop under test is the
one running, that the loop's exception handler was never called, and that no file descriptor
is left open and no ResourceWarning raised once the loop is closed.
"""

import asyncio
import contextlib
import gc
import hashlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
from support import clean_env, open_fds

import oxloop

aiohttp = pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
starlette = pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
websockets = pytest.importorskip("websockets")
pytest.importorskip("trustme")

from aiohttp import web  # noqa: E402
from certs import make_pki  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import serve as ws_serve  # noqa: E402

LOOPS = ["oxloop", "asyncio"]

# Liveness bound for one test's whole exchange; each finishes in well under a second normally.
TIMEOUT = 10.0

MiB = 1 << 20


def payload(size, seed=0):
    """``size`` reproducible pseudo-random bytes: a lost, repeated or reordered chunk shows."""
    return random.Random(seed).randbytes(size)


# -- running a test on a chosen loop -----------------------------------------------------------


def _factory(kind):
    if kind == "oxloop":
        return oxloop.new_event_loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    raise ValueError(kind)


def _cancel_all_tasks(loop):
    # What asyncio.run does on the way out (3.10 has no asyncio.Runner).
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _asyncio_run(main, factory):
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    loop = factory()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _describe_fds(fds):
    out = []
    for fd in sorted(fds, key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            out.append(f"{fd} (gone)")
    return ", ".join(out)


def _stdlib_310_ssl_warning(message):
    # 3.10's sslproto never marks an _SSLProtocolTransport closed when the connection is lost
    # under it, so its __del__ warns after a clean close; the stock loop does it too (the new
    # sslproto of 3.11 does not). The fd check still proves the socket itself was closed.
    return sys.version_info < (3, 11) and message.startswith(
        "unclosed transport <asyncio.sslproto._SSLProtocolTransport"
    )


def run_on(kind, main, *, timeout=TIMEOUT, allow_loop_error=None):
    """Run coroutine function ``main()`` on a fresh ``kind`` loop as asyncio.run does; return
    its result.

    Fails if another loop ran it, if the loop's exception handler was called (except with a
    context for which ``allow_loop_error(context)`` is true), if a file descriptor opened during
    the run is still open after the loop has closed, or if a ResourceWarning (unclosed
    socket/transport/loop) was raised.
    """
    loop_errors = []

    async def guarded():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, oxloop.Loop) == (kind == "oxloop"), type(loop)
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        return await asyncio.wait_for(main(), timeout)

    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = _asyncio_run(guarded(), _factory(kind))
        leaked = open_fds() - before
        gc.collect()
    assert not leaked, f"fds left open after the loop closed: {_describe_fds(leaked)}"
    resource_warnings = [
        str(w.message)
        for w in caught
        if w.category is ResourceWarning and not _stdlib_310_ssl_warning(str(w.message))
    ]
    assert not resource_warnings, resource_warnings
    unexpected = [c for c in loop_errors if not (allow_loop_error and allow_loop_error(c))]
    assert not unexpected, [(c.get("message"), c.get("exception")) for c in unexpected]
    return result


def loop_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


# -- server helpers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def aiohttp_server(app, ssl_context=None):
    """Serve ``app`` on 127.0.0.1, a free port; yield the port; clean up on exit."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def uvicorn_server(app, **options):
    """Run ``uvicorn.Server.serve`` in this loop on 127.0.0.1, a free port (or ``options``, e.g.
    ``uds``); yield the base URL; ask it to exit and wait for its shutdown (lifespan included)
    on the way out."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        **options,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise why
                raise AssertionError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        address = server.servers[0].sockets[0].getsockname()
        yield f"http://127.0.0.1:{address[1]}" if isinstance(address, tuple) else address
    finally:
        server.should_exit = True
        await task


# -- uvicorn + starlette, httpx and websockets clients -----------------------------------------


def make_starlette_app(events, release_stream):
    """A starlette app: text, JSON echo, a streaming response that waits for the client between
    chunks, a websocket echo route and a lifespan; ``events`` records what happened."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    async def index(request):
        return PlainTextResponse(request.state.greeting)

    async def which_loop(request):
        return JSONResponse({"loop": loop_name()})

    async def scope(request):
        # uvicorn builds these from the transport's extra info (socket, sslcontext).
        client = request.scope.get("client")
        return JSONResponse(
            {
                "scheme": request.url.scheme,
                "client_host": client[0] if client else None,
                "server": list(request.scope.get("server") or ()),
            }
        )

    async def json_echo(request):
        data = await request.json()
        return JSONResponse({"got": data, "sum": sum(data["numbers"])}, status_code=201)

    async def stream(request):
        async def chunks():
            yield b"first\n"
            # The client sets this only after it has read "first": a server that buffered the
            # response instead of streaming it would never send it, and the test times out.
            await release_stream.wait()
            for i in range(100):
                yield b"chunk %d\n" % i

        return StreamingResponse(chunks(), media_type="text/plain")

    async def ws_echo(websocket):
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                events.append(("ws closed", message.get("code")))
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    return Starlette(
        routes=[
            Route("/", index),
            Route("/loop", which_loop),
            Route("/scope", scope),
            Route("/json", json_echo, methods=["POST"]),
            Route("/stream", stream),
            WebSocketRoute("/ws", ws_echo),
        ],
        lifespan=lifespan,
    )


@pytest.mark.parametrize("kind", LOOPS)
def test_uvicorn_starlette_httpx(kind):
    """uvicorn serves a starlette app in this loop; httpx.AsyncClient and a websockets client
    talk to it: plain, JSON POST, a real streamed response, a websocket echo, lifespan."""
    events = []

    async def main():
        release = asyncio.Event()
        app = make_starlette_app(events, release)
        async with uvicorn_server(app) as url:
            assert events == ["startup"]
            async with httpx.AsyncClient(base_url=url) as client:
                r = await client.get("/")
                assert r.status_code == 200
                assert r.text == "hello from lifespan"
                assert r.headers["content-type"].startswith("text/plain")

                r = await client.get("/loop")
                assert r.json() == {"loop": loop_name()}

                r = await client.get("/scope")
                port = int(url.rsplit(":", 1)[1])
                assert r.json() == {
                    "scheme": "http",
                    "client_host": "127.0.0.1",
                    "server": ["127.0.0.1", port],
                }

                body = {"numbers": list(range(1000)), "name": "ünïcode ✓"}
                r = await client.post("/json", json=body)
                assert r.status_code == 201
                assert r.json() == {"got": body, "sum": sum(range(1000))}

                async with client.stream("GET", "/stream") as r:
                    assert r.status_code == 200
                    assert r.headers.get("transfer-encoding") == "chunked"
                    received = b""
                    async for data in r.aiter_bytes():
                        received += data
                        if received.startswith(b"first\n"):
                            release.set()
                assert received == b"first\n" + b"".join(b"chunk %d\n" % i for i in range(100))

                # Several requests at once on the pool.
                rs = await asyncio.gather(*(client.get("/loop") for _ in range(20)))
                assert all(r.json() == {"loop": loop_name()} for r in rs)

            ws_url = url.replace("http://", "ws://") + "/ws"
            async with ws_connect(ws_url) as ws:
                await ws.send("hello ✓")
                assert await ws.recv() == "hello ✓"
                blob = payload(256 * 1024, seed=1)
                await ws.send(blob)
                assert await ws.recv() == blob
            assert ws.close_code == 1000
        # Leaving uvicorn_server waited for the server's shutdown, lifespan included.
        assert events == ["startup", ("ws closed", 1000), "shutdown"]

    run_on(kind, main)


UVICORN_APP = textwrap.dedent(
    """
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route


    async def which_loop(request):
        loop = asyncio.get_running_loop()
        return JSONResponse({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}"})


    app = Starlette(routes=[Route("/loop", which_loop)])
    """
)


# uvicorn's --loop value, and the loop class the app then sees.
UVICORN_LOOP_OPTION = {
    "oxloop": ("oxloop:new_event_loop", "oxloop._loop.Loop"),
    "asyncio": ("asyncio", "asyncio.unix_events._UnixSelectorEventLoop"),
}


def serve_in_subprocess(kind, cmd, expected_loop, done_marker):
    """Start server command ``cmd``, find its port in its "http://127.0.0.1:PORT" banner, GET
    /loop from a ``kind`` loop and check the answer names ``expected_loop``, then SIGINT it and
    check it exits with status 0 having printed ``done_marker``."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env()
    )
    guard = threading.Timer(TIMEOUT * 2, proc.kill)
    guard.start()
    try:
        output = []
        port = None
        for line in proc.stdout:
            output.append(line)
            if "http://127.0.0.1:" in line:
                port = int(line.split("http://127.0.0.1:")[1].split()[0])
                break
        assert port, "".join(output)

        async def main():
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{port}/loop")
                return r.status_code, r.json()

        assert run_on(kind, main) == (200, {"loop": expected_loop})
        proc.send_signal(signal.SIGINT)
        output.append(proc.stdout.read())
        assert proc.wait() == 0, "".join(output)
        assert done_marker in "".join(output)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_uvicorn_cli_loop_option(tmp_path, kind):
    """The uvicorn command line, unchanged, with ``--loop oxloop:new_event_loop``: the app runs on
    an oxloop loop, answers (to a client on the same kind of loop), and the server exits cleanly
    on SIGINT."""
    loop_option, expected = UVICORN_LOOP_OPTION[kind]
    (tmp_path / "fw_app.py").write_text(UVICORN_APP)
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "fw_app:app",
        "--app-dir",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--loop",
        loop_option,
        "--lifespan",
        "off",
        "--no-access-log",
    ]
    serve_in_subprocess(kind, cmd, expected, done_marker="Finished server process")


AIOHTTP_RUN_APP = textwrap.dedent(
    """
    import asyncio
    import sys

    from aiohttp import web

    import oxloop


    async def which_loop(request):
        loop = asyncio.get_running_loop()
        return web.json_response({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}"})


    async def on_cleanup(app):
        print("cleanup ran", flush=True)


    app = web.Application()
    app.router.add_get("/loop", which_loop)
    app.on_cleanup.append(on_cleanup)
    if sys.argv[1] == "oxloop":
        oxloop.install()
    web.run_app(app, host="127.0.0.1", port=0, print=lambda *a: print(*a, flush=True))
    """
)


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_run_app_with_oxloop_policy(tmp_path, kind):
    """``oxloop.install()`` then aiohttp's own ``web.run_app``: it makes an oxloop loop, serves,
    and on SIGINT (caught with loop.add_signal_handler) shuts down gracefully, cleanup hooks
    included."""
    script = tmp_path / "fw_run_app.py"
    script.write_text(AIOHTTP_RUN_APP)
    expected = UVICORN_LOOP_OPTION[kind][1]
    cmd = [sys.executable, str(script), kind]
    serve_in_subprocess(kind, cmd, expected, done_marker="cleanup ran")


# -- aiohttp server and client -----------------------------------------------------------------


def make_aiohttp_app(seen):
    """An aiohttp app; ``seen`` gathers per-request facts (peer port, concurrency)."""
    state = {"in_flight": 0, "max_in_flight": 0}
    seen["state"] = state

    async def hello(request):
        peer = request.transport.get_extra_info("peername")
        if isinstance(peer, tuple):  # not over a Unix socket
            seen.setdefault("peers", []).append(peer[1])
        return web.Response(text=f"hello {request.query.get('name', 'world')}")

    async def echo(request):
        body = await request.read()
        return web.Response(
            body=body,
            headers={"X-Sha256": hashlib.sha256(body).hexdigest(), "X-Loop": loop_name()},
        )

    async def form(request):
        data = await request.post()
        return web.json_response({k: data[k] for k in data})

    async def blob(request):
        # A streamed response in 64 KiB writes: the transport's write path and flow control.
        size = int(request.query["size"])
        data = payload(size, seed=int(request.query["seed"]))
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        for i in range(0, size, 64 * 1024):
            await resp.write(data[i : i + 64 * 1024])
        await resp.write_eof()
        return resp

    async def slow(request):
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        seen.setdefault("peers", []).append(request.transport.get_extra_info("peername")[1])
        try:
            await asyncio.sleep(0.002)
            return web.json_response({"i": int(request.match_info["i"])})
        finally:
            state["in_flight"] -= 1

    async def tls_info(request):
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object")
        return web.json_response(
            {
                "secure": request.secure,
                "has_ssl_object": ssl_object is not None,
                "cipher": bool(transport.get_extra_info("cipher")),
                "server_hostname": ssl_object.server_hostname if ssl_object else None,
                "version": ssl_object.version() if ssl_object else None,
            }
        )

    app = web.Application(client_max_size=8 * MiB)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_post("/form", form)
    app.router.add_get("/blob", blob)
    app.router.add_get("/slow/{i}", slow)
    app.router.add_get("/tls", tls_info)
    return app


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_get_post(kind):
    seen = {}

    async def main():
        async with aiohttp_server(make_aiohttp_app(seen)) as port:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/hello", params={"name": "oxloop"}) as r:
                    assert r.status == 200
                    assert await r.text() == "hello oxloop"
                async with session.post(f"{base}/echo", data=b"ping") as r:
                    assert r.status == 200
                    assert await r.read() == b"ping"
                    assert r.headers["X-Loop"] == loop_name()
                async with session.post(f"{base}/form", data={"a": "1", "b": "✓"}) as r:
                    assert await r.json() == {"a": "1", "b": "✓"}
                async with session.get(f"{base}/missing") as r:
                    assert r.status == 404

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_large_bodies(kind):
    """1 MiB up and back (plain and chunked upload) and 1 MiB streamed down, every byte checked."""

    async def main():
        data = payload(MiB, seed=7)
        async with aiohttp_server(make_aiohttp_app({})) as port:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/echo", data=data) as r:
                    assert r.status == 200
                    assert r.headers["X-Sha256"] == hashlib.sha256(data).hexdigest()
                    assert await r.read() == data

                async def chunked():
                    for i in range(0, len(data), 100_000):
                        yield data[i : i + 100_000]

                async with session.post(f"{base}/echo", data=chunked()) as r:
                    assert r.headers["X-Sha256"] == hashlib.sha256(data).hexdigest()
                    assert await r.read() == data

                async with session.get(f"{base}/blob", params={"size": MiB, "seed": 7}) as r:
                    assert r.content_length == MiB
                    received = bytearray()
                    async for chunk in r.content.iter_chunked(32 * 1024):
                        received += chunk
                    assert received == data

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_concurrent_requests(kind):
    """200 concurrent requests through a 10-connection pool: all answered correctly, served
    concurrently, on at most 10 kept-alive connections."""
    seen = {}

    async def main():
        async with aiohttp_server(make_aiohttp_app(seen)) as port:
            base = f"http://127.0.0.1:{port}"
            connector = aiohttp.TCPConnector(limit=10)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i):
                    async with session.get(f"{base}/slow/{i}") as r:
                        assert r.status == 200
                        return (await r.json())["i"]

                results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == list(range(200))
        assert 1 < seen["state"]["max_in_flight"] <= 10
        assert len(seen["peers"]) == 200
        assert len(set(seen["peers"])) <= 10

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_keep_alive(kind):
    """Sequential requests on a 1-connection pool reuse one TCP connection; a new session makes
    a new one."""
    seen = {}

    async def main():
        async with aiohttp_server(make_aiohttp_app(seen)) as port:
            url = f"http://127.0.0.1:{port}/hello"
            for _ in range(2):
                connector = aiohttp.TCPConnector(limit=1)
                async with aiohttp.ClientSession(connector=connector) as session:
                    for _ in range(20):
                        async with session.get(url) as r:
                            assert r.headers.get("Connection", "keep-alive").lower() != "close"
                            assert await r.text() == "hello world"
        peers = seen["peers"]
        assert len(peers) == 40
        assert len(set(peers[:20])) == 1
        assert len(set(peers[20:])) == 1
        assert peers[0] != peers[20]

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_file_response(kind, pki, tmp_path):
    """web.FileResponse goes through loop.sendfile (with the read/write fallback under TLS):
    a 3 MiB file, whole and as a byte range, over plain TCP and over TLS."""
    data = payload(3 * MiB + 17, seed=9)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    async def main():
        app = web.Application()
        app.router.add_get("/file", lambda request: web.FileResponse(path))
        for server_ctx, client_ctx in ((None, None), (pki.server, pki.client)):
            async with aiohttp_server(app, ssl_context=server_ctx) as port:
                scheme = "https" if server_ctx else "http"
                url = f"{scheme}://127.0.0.1:{port}/file"
                async with aiohttp.ClientSession() as session:
                    async with session.get(url, ssl=client_ctx) as r:
                        assert r.status == 200
                        assert await r.read() == data
                    headers = {"Range": "bytes=1000-2000000"}
                    async with session.get(url, ssl=client_ctx, headers=headers) as r:
                        assert r.status == 206
                        assert await r.read() == data[1000:2000001]

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_unix_sockets(kind, tmp_path):
    """aiohttp and uvicorn serving on Unix sockets; aiohttp's UnixConnector and httpx's uds
    transport as clients."""
    data = payload(MiB, seed=4)

    async def main():
        aiohttp_path = str(tmp_path / "aiohttp.sock")
        runner = web.AppRunner(make_aiohttp_app({}), access_log=None)
        await runner.setup()
        try:
            await web.UnixSite(runner, aiohttp_path).start()
            connector = aiohttp.UnixConnector(path=aiohttp_path)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.post("http://unix/echo", data=data) as r:
                    assert await r.read() == data
                    assert r.headers["X-Loop"] == loop_name()
            transport = httpx.AsyncHTTPTransport(uds=aiohttp_path)
            async with httpx.AsyncClient(transport=transport) as client:
                r = await client.get("http://unix/hello")
                assert r.text == "hello world"
        finally:
            await runner.cleanup()

        uvicorn_path = str(tmp_path / "uvicorn.sock")
        app = make_starlette_app([], asyncio.Event())
        async with uvicorn_server(app, uds=uvicorn_path):
            transport = httpx.AsyncHTTPTransport(uds=uvicorn_path)
            async with httpx.AsyncClient(transport=transport) as client:
                r = await client.post("http://unix/json", json={"numbers": [1, 2, 3]})
                assert r.json() == {"got": {"numbers": [1, 2, 3]}, "sum": 6}
                r = await client.get("http://unix/loop")
                assert r.json() == {"loop": loop_name()}

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_client_connect_errors_and_localhost(kind):
    """A refused connection surfaces as each client's own error with ConnectionRefusedError
    underneath; "localhost" (maybe ::1 first, then 127.0.0.1) reaches a 127.0.0.1 server."""

    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await session.get(f"http://127.0.0.1:{closed_port}/")
            assert isinstance(info.value.os_error, ConnectionRefusedError)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{closed_port}/")
        loop = asyncio.get_running_loop()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", closed_port)

        async with aiohttp_server(make_aiohttp_app({})) as port:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://localhost:{port}/hello") as r:
                    assert await r.text() == "hello world"
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://localhost:{port}/hello")
                assert r.text == "hello world"

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_http_pipelining(kind):
    """51 pipelined requests in one write to uvicorn (which pauses reading while a request is
    in flight) and to aiohttp, over an asyncio streams client: every answer, in order."""

    async def pipeline(port, paths):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            requests = [b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths]
            requests.append(b"GET /loop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            writer.write(b"".join(requests))
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()

    async def main():
        app = make_starlette_app([], asyncio.Event())
        async with uvicorn_server(app) as url:
            data = await pipeline(int(url.rsplit(":", 1)[1]), [f"/loop?i={i}" for i in range(50)])
        assert data.count(b"HTTP/1.1 200 OK") == 51
        assert data.count(b'{"loop":"%s"}' % loop_name().encode()) == 51

        async with aiohttp_server(make_aiohttp_app({})) as port:
            data = await pipeline(port, [f"/slow/{i}" for i in range(50)])
        assert data.count(b"HTTP/1.1 200 OK") == 50  # /loop is not an aiohttp route: 404
        positions = [data.index(b'{"i": %d}' % i) for i in range(50)]
        assert positions == sorted(positions)
        assert data.rstrip().endswith(b"404: Not Found")

    run_on(kind, main)


# -- websockets --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOOPS)
def test_websockets_echo(kind):
    """websockets server and client: text, binary, a 4 MiB message, 100 pipelined messages in
    order, ping/pong, and a clean close (1000) seen by both ends."""
    closed = []

    async def echo(ws):
        async for message in ws:
            await ws.send(message)
        closed.append((ws.close_code, loop_name()))

    async def main():
        large = payload(4 * MiB, seed=3)
        async with ws_serve(echo, "127.0.0.1", 0, max_size=8 * MiB) as server:
            port = server.sockets[0].getsockname()[1]
            async with ws_connect(f"ws://127.0.0.1:{port}", max_size=8 * MiB) as ws:
                await ws.send("hello ✓")
                assert await ws.recv() == "hello ✓"
                await ws.send(b"\x00\x01\xfe\xff")
                assert await ws.recv() == b"\x00\x01\xfe\xff"
                await ws.send(large)
                assert await ws.recv() == large
                for i in range(100):
                    await ws.send(f"message {i}")
                assert [await ws.recv() for _ in range(100)] == [f"message {i}" for i in range(100)]
                latency = await (await ws.ping())
                assert latency >= 0
            assert ws.close_code == 1000
            # The handler sees the close too, before the server goes away.
            for _ in range(200):
                if closed:
                    break
                await asyncio.sleep(0.005)
        assert closed == [(1000, loop_name())]

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_websockets_close_codes_and_backpressure(kind):
    """100 concurrent clients each closed by the server (4000, "bye"); 50 idle clients all get
    1001 when the server shuts down; a slow reader with max_queue=1 still gets all 16 x 256 KiB
    messages intact."""
    big = payload(256 * 1024, seed=2)

    async def answer_then_close(ws):
        message = await ws.recv()
        await ws.send(message * 2)
        await ws.close(4000, "bye")

    async def wait_closed(ws):
        await ws.wait_closed()

    async def flood(ws):
        for _ in range(16):
            await ws.send(big)
        await ws.close()

    async def main():
        async with ws_serve(answer_then_close, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

            async def one(i):
                async with ws_connect(uri) as ws:
                    await ws.send(str(i))
                    assert await ws.recv() == str(i) * 2
                    with pytest.raises(websockets.exceptions.ConnectionClosed):
                        await ws.recv()
                    return ws.close_code, ws.close_reason

            results = await asyncio.gather(*(one(i) for i in range(100)))
        assert set(results) == {(4000, "bye")}

        async with ws_serve(wait_closed, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            clients = [await ws_connect(uri) for _ in range(50)]
            server.close()
            await server.wait_closed()
        for ws in clients:
            await ws.wait_closed()
        assert {ws.close_code for ws in clients} == {1001}

        async with ws_serve(flood, "127.0.0.1", 0, max_size=MiB) as server:
            uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            count = 0
            async with ws_connect(uri, max_queue=1, max_size=MiB) as ws:
                async for message in ws:
                    assert message == big
                    count += 1
                    await asyncio.sleep(0.002)
        assert count == 16

    run_on(kind, main)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_aiohttp_server_aiohttp_and_httpx_clients(kind, pki):
    """An aiohttp HTTPS server with a test-CA certificate; aiohttp and httpx clients verify it
    against the CA, and 1 MiB goes up and back over TLS intact."""

    async def main():
        data = payload(MiB, seed=11)
        async with aiohttp_server(make_aiohttp_app({}), ssl_context=pki.server) as port:
            base = f"https://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/tls", ssl=pki.client) as r:
                    info = await r.json()
                async with session.post(f"{base}/echo", data=data, ssl=pki.client) as r:
                    assert await r.read() == data
                    assert r.headers["X-Loop"] == loop_name()
            assert info["secure"] is True
            assert info["has_ssl_object"] is True
            assert info["cipher"] is True
            assert info["version"] in ("TLSv1.2", "TLSv1.3")

            async with httpx.AsyncClient(base_url=base, verify=pki.client) as client:
                r = await client.get("/hello", params={"name": "tls"})
                assert r.text == "hello tls"
                r = await client.post("/echo", content=data)
                assert r.content == data
                assert r.headers["X-Sha256"] == hashlib.sha256(data).hexdigest()

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_untrusted_certificate_is_rejected(kind, pki):
    """A client that does not trust the test CA fails verification: the TLS is real."""

    async def main():
        untrusted = ssl.create_default_context()
        async with aiohttp_server(make_aiohttp_app({}), ssl_context=pki.server) as port:
            base = f"https://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(f"{base}/hello", ssl=untrusted)
            async with httpx.AsyncClient(verify=untrusted) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get(f"{base}/hello")
            # The server is unharmed by the failed handshakes.
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/hello", ssl=pki.client) as r:
                    assert await r.text() == "hello world"

    def handshake_failure(context):
        # In debug mode the stock loop reports the server side of each failed handshake.
        return context.get("message") == "Error on transport creation for incoming connection"

    run_on(kind, main, allow_loop_error=handshake_failure)


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_mutual(kind, pki):
    """A server that requires a client certificate sees the one the aiohttp client presents
    (peercert); a client without one is refused."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    pki.ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    pki.ca.configure_trust(client_ctx)
    pki.ca.issue_cert("client@example.org").configure_cert(client_ctx)

    async def whoami(request):
        peercert = request.transport.get_extra_info("peercert")
        return web.json_response([list(kv) for kv in peercert["subjectAltName"]])

    async def main():
        app = web.Application()
        app.router.add_get("/", whoami)
        async with aiohttp_server(app, ssl_context=server_ctx) as port:
            url = f"https://127.0.0.1:{port}/"
            async with aiohttp.ClientSession() as session:
                async with session.get(url, ssl=client_ctx) as r:
                    assert await r.json() == [["email", "client@example.org"]]
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(url, ssl=pki.client) as r:
                        await r.read()

    def handshake_failure(context):
        return context.get("message") == "Error on transport creation for incoming connection"

    run_on(kind, main, allow_loop_error=handshake_failure)


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_websockets(kind, pki):
    """wss:// echo with server_hostname checked against the certificate; clean close."""

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        large = payload(MiB, seed=5)
        async with ws_serve(echo, "127.0.0.1", 0, ssl=pki.server, max_size=2 * MiB) as server:
            port = server.sockets[0].getsockname()[1]
            uri = f"wss://127.0.0.1:{port}"
            async with ws_connect(
                uri, ssl=pki.client, server_hostname="localhost", max_size=2 * MiB
            ) as ws:
                await ws.send("secure ✓")
                assert await ws.recv() == "secure ✓"
                await ws.send(large)
                assert await ws.recv() == large
                assert ws.transport.get_extra_info("ssl_object").server_hostname == "localhost"
            assert ws.close_code == 1000

    run_on(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_uvicorn(kind, pki, tmp_path):
    """uvicorn with its own TLS set-up (certificate and key files); httpx and a wss:// client
    verify it against the test CA."""
    cert = pki.ca.issue_cert("127.0.0.1")
    keyfile, certfile = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    blob = payload(2 * MiB, seed=6)

    async def main():
        app = make_starlette_app([], asyncio.Event())
        async with uvicorn_server(app, ssl_keyfile=str(keyfile), ssl_certfile=str(certfile)) as url:
            url = url.replace("http://", "https://")
            async with httpx.AsyncClient(base_url=url, verify=pki.client) as client:
                r = await client.post("/json", json={"numbers": list(range(100_000))})
                assert r.json()["sum"] == sum(range(100_000))
                r = await client.get("/scope")
                assert r.json()["scheme"] == "https"
                assert r.json()["client_host"] == "127.0.0.1"
            ws_url = url.replace("https://", "wss://") + "/ws"
            async with ws_connect(ws_url, ssl=pki.client, max_size=4 * MiB) as ws:
                await ws.send(blob)
                assert await ws.recv() == blob
            assert ws.close_code == 1000

    run_on(kind, main)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is new in 3.11")
@pytest.mark.parametrize("kind", LOOPS)
def test_tls_streams_starttls(kind, pki):
    """asyncio streams upgrade a plain connection to TLS in the middle (loop.start_tls on both
    ends, STARTTLS style), then move 1 MiB each way."""
    data = payload(MiB, seed=8)

    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(pki.server)
        writer.write(await reader.readexactly(MiB))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"STARTTLS\n")
                await writer.drain()
                assert await reader.readline() == b"GO\n"
                await writer.start_tls(pki.client, server_hostname="localhost")
                assert writer.get_extra_info("ssl_object").server_hostname == "localhost"
                writer.write(data)
                await writer.drain()
                assert await reader.readexactly(MiB) == data
                assert await reader.read() == b""
            finally:
                writer.close()
                await writer.wait_closed()

    run_on(kind, main)
