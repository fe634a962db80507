"""Water marks given as floats, bools and ints past 64 bits: stock accepts them, and the
`get_*_buffer_limits` hand them back as given; plain and TLS transports, oxloop and stock."""

import asyncio
import sys

import pytest
from certs import make_pki
from support import run

ssl = pytest.importorskip("ssl")

CASES = [(1.5, 1), (2**70,), (True, False), (None, 2.5), (100,), (None, None)]


def limits_after(transport, setter, getter):
    out = []
    for args in CASES:
        getattr(transport, setter)(*args)
        got = getattr(transport, getter)()
        out.append((args, got, [type(v).__name__ for v in got]))
    return out


def expected(default_high):
    return [
        ((1.5, 1), (1, 1.5), ["int", "float"]),
        ((2**70,), (2**68, 2**70), ["int", "int"]),
        ((True, False), (False, True), ["bool", "bool"]),
        ((None, 2.5), (2.5, 10.0), ["float", "float"]),
        ((100,), (25, 100), ["int", "int"]),
        ((None, None), (default_high // 4, default_high), ["int", "int"]),
    ]


async def connect(loop, **kwargs):
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, **kwargs.pop("srv", {}))
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, **kwargs)
    return server, transport


async def finish(server, transport):
    transport.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)


def test_plain_write_limits_as_given(any_loop):
    async def main():
        server, transport = await connect(any_loop)
        got = limits_after(transport, "set_write_buffer_limits", "get_write_buffer_limits")
        await finish(server, transport)
        return got

    assert run(any_loop, main()) == expected(64 * 1024)


@pytest.mark.parametrize("which", ["write", "read"])
def test_tls_limits_as_given(any_loop, which):
    pki = make_pki()

    async def main():
        server, transport = await connect(
            any_loop, ssl=pki.client, server_hostname="localhost", srv={"ssl": pki.server}
        )
        got = limits_after(transport, f"set_{which}_buffer_limits", f"get_{which}_buffer_limits")
        await finish(server, transport)
        return got

    if sys.version_info < (3, 11):
        pytest.skip("3.10's SSL transport has other limits")
    default = (512 if which == "write" else 256) * 1024
    assert run(any_loop, main()) == expected(default)


def test_datagram_write_limits_as_given(any_loop):
    async def main():
        transport, _ = await any_loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        got = limits_after(transport, "set_write_buffer_limits", "get_write_buffer_limits")
        transport.close()
        await asyncio.sleep(0)
        return got

    assert run(any_loop, main()) == expected(64 * 1024)
