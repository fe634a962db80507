"""Tests of the package surface: Loop, new_event_loop, EventLoopPolicy, install() and run()."""

import asyncio
import contextlib
import re
import sys
import threading
import warnings

import pytest

import oxloop


def test_new_event_loop_returns_an_abstract_event_loop():
    lp = oxloop.new_event_loop()
    try:
        assert isinstance(lp, oxloop.Loop)
        assert isinstance(lp, asyncio.AbstractEventLoop)
        assert not lp.is_running()
        assert not lp.is_closed()
    finally:
        lp.close()


def test_loop_class_can_be_instantiated_directly():
    lp = oxloop.Loop()
    try:
        assert isinstance(lp, asyncio.AbstractEventLoop)
        assert lp.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        lp.close()


def test_each_new_event_loop_is_a_distinct_loop():
    a, b = oxloop.new_event_loop(), oxloop.new_event_loop()
    try:
        assert a is not b
        a.close()
        assert a.is_closed() and not b.is_closed()
    finally:
        a.close()
        b.close()


# 3.14 deprecates asyncio's policy system (removal planned for 3.16); oxloop's policy API
# warns from then on, as stock's does, and not before.
POLICY_DEPRECATED = sys.version_info >= (3, 14)


@contextlib.contextmanager
def policy_warning(what):
    """Expect a DeprecationWarning naming `what` on 3.14+, and no warning at all before."""
    if POLICY_DEPRECATED:
        with pytest.warns(DeprecationWarning, match=re.escape(what)) as record:
            yield
        # Attributed to the caller's line, as stock's deprecation warnings are.
        assert all(w.filename == __file__ for w in record)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield


def the_policy_class():
    with policy_warning("oxloop.EventLoopPolicy is deprecated"):
        return oxloop.EventLoopPolicy


def asyncio_policy():
    # asyncio.get_event_loop_policy() warns on 3.14+ itself; the test is about oxloop's.
    return (
        asyncio.events._get_event_loop_policy()
        if POLICY_DEPRECATED
        else (asyncio.get_event_loop_policy())
    )


def test_policy_is_an_asyncio_policy_that_makes_oxloop_loops():
    policy = the_policy_class()()
    assert isinstance(
        policy,
        asyncio.events.AbstractEventLoopPolicy
        if not POLICY_DEPRECATED
        else asyncio.events._AbstractEventLoopPolicy,
    )
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, oxloop.Loop)
    finally:
        lp.close()


def test_policy_class_is_in_all_until_the_policy_system_is_deprecated():
    assert ("EventLoopPolicy" in oxloop.__all__) is not POLICY_DEPRECATED
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a star import never warns, as asyncio's does not
        exec("from oxloop import *", namespace)
    assert ("EventLoopPolicy" in namespace) is not POLICY_DEPRECATED


def test_install_sets_the_oxloop_policy(restore_policy):
    with policy_warning("oxloop.install() is deprecated"):
        oxloop.install()
    assert isinstance(asyncio_policy(), the_policy_class())
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, oxloop.Loop)
    finally:
        lp.close()


def test_asyncio_run_uses_the_installed_policy(restore_policy):
    with policy_warning("oxloop.install() is deprecated"):
        oxloop.install()

    async def main():
        return asyncio.get_running_loop()

    lp = asyncio.run(main())
    assert isinstance(lp, oxloop.Loop)
    assert lp.is_closed()


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        oxloop.nope  # noqa: B018


def test_run_returns_the_result_on_an_oxloop_loop():
    async def main(x):
        await asyncio.sleep(0.01)
        return x * 2, asyncio.get_running_loop()

    result, lp = oxloop.run(main(21))
    assert result == 42
    assert isinstance(lp, oxloop.Loop)
    assert lp.is_closed()


def test_run_propagates_the_exception():
    async def main():
        await asyncio.sleep(0)
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        oxloop.run(main())


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug_flag_sets_loop_debug(debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert oxloop.run(main(), debug=debug) is debug


def test_run_debug_is_keyword_only():
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(TypeError):
            oxloop.run(coro, True)
    finally:
        coro.close()


def test_run_rejects_a_non_coroutine():
    # As asyncio.run on each version: 3.14 takes any awaitable and says so.
    if sys.version_info >= (3, 14):
        expected = (TypeError, "a coroutine or an awaitable is required")
    else:
        expected = (ValueError, "a coroutine was expected")
    with pytest.raises(expected[0], match=expected[1]):
        oxloop.run(asyncio.sleep)


def test_run_refuses_to_nest_inside_a_running_loop():
    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                oxloop.run(coro)
        finally:
            coro.close()
        return "checked"

    assert oxloop.run(main()) == "checked"


def test_run_leaves_no_running_loop_behind():
    async def main():
        return 1

    oxloop.run(main())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_run_cancels_leftover_tasks():
    seen = []

    async def sleeper():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        task = asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        return task

    task = oxloop.run(main())
    assert task.cancelled()
    assert seen == ["cancelled"]


def test_run_finalizes_async_generators():
    seen = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            seen.append("finalized")

    async def main():
        g = agen()
        keep.append(g)  # keep it alive so only shutdown_asyncgens can close it
        assert await g.__anext__() == 1

    oxloop.run(main())
    assert seen == ["finalized"]


def test_run_shuts_down_the_default_executor():
    async def main():
        return await asyncio.get_running_loop().run_in_executor(None, threading.current_thread)

    worker = oxloop.run(main())
    assert worker is not threading.current_thread()
    assert not worker.is_alive()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    async def main():
        return asyncio.get_running_loop()

    lp = asyncio.run(main(), loop_factory=oxloop.new_event_loop)
    assert isinstance(lp, oxloop.Loop)
    assert lp.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_asyncio_runner_with_loop_factory():
    async def main(n):
        await asyncio.sleep(0)
        return n, asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        r1, lp1 = runner.run(main(1))
        r2, lp2 = runner.run(main(2))
    assert (r1, r2) == (1, 2)
    assert lp1 is lp2
    assert isinstance(lp1, oxloop.Loop)
    assert lp1.is_closed()


def test_loop_can_be_subclassed():
    class MyLoop(oxloop.Loop):
        def custom(self):
            return "custom"

    lp = MyLoop()
    try:
        assert lp.custom() == "custom"
        assert lp.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        lp.close()


def test_set_event_loop_and_get_event_loop():
    lp = oxloop.new_event_loop()
    try:
        asyncio.set_event_loop(lp)
        assert asyncio.get_event_loop() is lp
    finally:
        asyncio.set_event_loop(None)
        lp.close()
