"""Tests that the not-yet-built loop methods raise NotImplementedError naming the method.

PLACEHOLDER: subprocesses arrive with the subprocess issue; each method then gets real
behaviour tests (against the stock loop) and its entry here goes away.
"""

import asyncio

import pytest
from support import run


def _calls(loop):
    """(method name, zero-arg coroutine factory) for each method not built yet."""
    return {
        "subprocess_exec": lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, "true"),
        "subprocess_shell": lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, "true"),
    }


METHODS = ["subprocess_exec", "subprocess_shell"]


@pytest.mark.parametrize("method", METHODS)
def test_unbuilt_method_raises_not_implemented(loop, method):
    factory = _calls(loop)[method]

    async def call():
        # Raising at call time or at await time are both fine.
        return await factory()

    with pytest.raises(NotImplementedError, match=method):
        run(loop, call())
    # The loop is still healthy afterwards.
    assert run(loop, asyncio.sleep(0, "ok")) == "ok"
