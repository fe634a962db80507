"""Tests that the not-yet-built transport methods raise NotImplementedError naming the method.

PLACEHOLDER: these tests change when the transports issue lands — each method then gets real
behaviour tests (against the stock loop) and the NotImplementedError expectations go away.
"""

import asyncio
import os
import socket
import ssl
from unittest import mock

import pytest
from support import run


class _Proto(asyncio.Protocol):
    pass


def _calls(loop, tmp_path, resources):
    """(method name, zero-arg coroutine factory) for each method not built yet."""
    r, w = os.pipe()
    rpipe, wpipe = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    resources.extend([rpipe, wpipe, sock])
    transport = mock.Mock(spec=asyncio.Transport)
    ctx = ssl.create_default_context()
    return {
        "create_connection": lambda: loop.create_connection(_Proto, "127.0.0.1", 9),
        "create_server": lambda: loop.create_server(_Proto, "127.0.0.1", 0),
        "create_unix_connection": lambda: loop.create_unix_connection(
            _Proto, str(tmp_path / "u.sock")
        ),
        "create_unix_server": lambda: loop.create_unix_server(_Proto, str(tmp_path / "s.sock")),
        "connect_read_pipe": lambda: loop.connect_read_pipe(_Proto, rpipe),
        "connect_write_pipe": lambda: loop.connect_write_pipe(_Proto, wpipe),
        "subprocess_exec": lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, "true"),
        "subprocess_shell": lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, "true"),
        "start_tls": lambda: loop.start_tls(transport, _Proto(), ctx),
        "sendfile": lambda: loop.sendfile(transport, rpipe),
        "connect_accepted_socket": lambda: loop.connect_accepted_socket(_Proto, sock),
    }


METHODS = [
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "connect_read_pipe",
    "connect_write_pipe",
    "subprocess_exec",
    "subprocess_shell",
    "start_tls",
    "sendfile",
    "connect_accepted_socket",
]


@pytest.mark.parametrize("method", METHODS)
def test_unbuilt_method_raises_not_implemented(loop, tmp_path, method):
    resources = []
    try:
        factory = _calls(loop, tmp_path, resources)[method]

        async def call():
            # Raising at call time or at await time are both fine.
            return await factory()

        with pytest.raises(NotImplementedError, match=method):
            run(loop, call())
    finally:
        for res in resources:
            res.close()
    # The loop is still healthy afterwards.
    assert run(loop, asyncio.sleep(0, "ok")) == "ok"


def test_open_connection_reports_not_implemented(loop):
    with pytest.raises(NotImplementedError, match="create_connection"):
        run(loop, asyncio.open_connection("127.0.0.1", 9))
