"""Tests of the loop lifecycle: run/stop/close, running-loop state and the stock error cases."""

import asyncio
import gc
import sys
import threading
import weakref

import pytest
from support import LIVENESS, STOCK_REENTRY_BROKEN, is_stock, make_loop, run_forever_once


def test_fresh_loop_is_neither_running_nor_closed(any_loop):
    assert not any_loop.is_running()
    assert not any_loop.is_closed()


def test_is_running_while_running_only(any_loop):
    seen = []
    any_loop.call_soon(lambda: seen.append(any_loop.is_running()))
    run_forever_once(any_loop)
    assert seen == [True]
    assert not any_loop.is_running()


def test_run_until_complete_returns_the_coroutine_result(any_loop):
    async def main():
        await asyncio.sleep(0)
        return "result"

    assert any_loop.run_until_complete(main()) == "result"


def test_run_until_complete_raises_the_coroutine_exception(any_loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        any_loop.run_until_complete(main())


def test_run_until_complete_accepts_a_future(any_loop):
    fut = any_loop.create_future()
    any_loop.call_soon(fut.set_result, 7)
    assert any_loop.run_until_complete(fut) == 7


def test_run_until_complete_accepts_an_awaitable(any_loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert any_loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_with_a_cancelled_future_raises_cancelled(any_loop):
    fut = any_loop.create_future()
    any_loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        any_loop.run_until_complete(fut)


def test_run_until_complete_rejects_a_future_of_another_loop(any_loop):
    other = make_loop("stock")
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            any_loop.run_until_complete(fut)
    finally:
        other.close()


def test_stop_before_the_future_is_done_raises(any_loop):
    fut = any_loop.create_future()
    any_loop.call_soon(any_loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        any_loop.run_until_complete(fut)
    assert not any_loop.is_running()


def test_stopped_run_until_complete_forgets_its_future(any_loop):
    fut = any_loop.create_future()
    any_loop.call_soon(any_loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        any_loop.run_until_complete(fut)
    # Completing the old future later must not stop an unrelated run.
    any_loop.call_soon(fut.set_result, None)
    assert any_loop.run_until_complete(asyncio.sleep(0.02, "unrelated")) == "unrelated"


def test_run_until_complete_with_a_done_future(any_loop):
    fut = any_loop.create_future()
    fut.set_result("already")
    assert any_loop.run_until_complete(fut) == "already"


def test_stop_lets_the_current_iteration_finish(any_loop):
    order = []

    def first():
        order.append("first")
        any_loop.stop()
        any_loop.call_soon(order.append, "next-run")

    any_loop.call_soon(first)
    any_loop.call_soon(order.append, "second")
    any_loop.run_forever()
    assert order == ["first", "second"]
    run_forever_once(any_loop)
    assert order == ["first", "second", "next-run"]


def test_stop_before_run_forever_runs_one_iteration(any_loop):
    ran = []
    any_loop.call_soon(ran.append, 1)
    any_loop.stop()
    any_loop.run_forever()
    assert ran == [1]
    assert not any_loop.is_running()


def test_loop_can_be_run_many_times(any_loop):
    async def step(i):
        await asyncio.sleep(0)
        return i

    assert [any_loop.run_until_complete(step(i)) for i in range(5)] == list(range(5))
    for _ in range(3):
        run_forever_once(any_loop)


@pytest.mark.parametrize("reentry", ["run_forever", "run_until_complete"])
def test_running_again_inside_a_running_loop_raises(any_loop, reentry):
    if reentry == "run_forever" and is_stock(any_loop) and STOCK_REENTRY_BROKEN:
        pytest.skip("CPython 3.13.0 run_forever() clobbers the running state on re-entry")
    errors = []
    fut = any_loop.create_future()

    def reenter():
        try:
            if reentry == "run_forever":
                any_loop.run_forever()
            else:
                any_loop.run_until_complete(fut)
        except RuntimeError as exc:
            errors.append(str(exc))
        errors.append(any_loop.is_running())
        errors.append(asyncio.get_running_loop() is any_loop)

    any_loop.call_soon(reenter)
    run_forever_once(any_loop)
    assert errors == ["This event loop is already running", True, True]
    assert not any_loop.is_running()


def test_run_until_complete_inside_a_coroutine_raises(any_loop):
    async def main():
        fut = any_loop.create_future()
        with pytest.raises(RuntimeError, match="This event loop is already running"):
            any_loop.run_until_complete(fut)
        return "ok"

    assert any_loop.run_until_complete(main()) == "ok"


@pytest.mark.parametrize(
    "outer_kind,inner_kind",
    [
        ("oxloop", "oxloop"),
        ("oxloop", "stock"),
        ("stock", "oxloop"),
    ],
)
def test_cannot_run_two_loops_on_one_thread(outer_kind, inner_kind):
    outer, inner = make_loop(outer_kind), make_loop(inner_kind)
    msg = "Cannot run the event loop while another loop is running"

    async def main():
        fut = inner.create_future()
        with pytest.raises(RuntimeError, match=msg):
            inner.run_until_complete(fut)
        if not (is_stock(inner) and STOCK_REENTRY_BROKEN):
            with pytest.raises(RuntimeError, match=msg):
                inner.run_forever()
        assert asyncio.get_running_loop() is outer
        return "ok"

    try:
        assert outer.run_until_complete(main()) == "ok"
        assert not inner.is_running()
        # The inner loop is still usable once the outer one has stopped.
        assert inner.run_until_complete(asyncio.sleep(0, "inner")) == "inner"
    finally:
        outer.close()
        inner.close()


def test_close_is_idempotent(any_loop):
    any_loop.close()
    assert any_loop.is_closed()
    any_loop.close()
    assert any_loop.is_closed()


def test_closing_a_running_loop_raises(any_loop):
    errors = []

    def try_close():
        try:
            any_loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))

    any_loop.call_soon(try_close)
    run_forever_once(any_loop)
    assert errors == ["Cannot close a running event loop"]
    assert not any_loop.is_closed()
    assert any_loop.run_until_complete(asyncio.sleep(0, "still usable")) == "still usable"


def test_close_drops_pending_callbacks(any_loop):
    class Payload:
        pass

    p = Payload()
    ref = weakref.ref(p)
    any_loop.call_soon(lambda _p: None, p)
    any_loop.call_later(3600, lambda _p: None, p)
    del p
    any_loop.close()
    gc.collect()
    assert ref() is None


async def _noop():
    return None


def _closed_loop_calls(lp):
    """(name, thunk) pairs for methods that must raise 'Event loop is closed'."""
    fut = lp.create_future()
    return [
        ("call_soon", lambda: lp.call_soon(lambda: None)),
        ("call_later", lambda: lp.call_later(1, lambda: None)),
        ("call_at", lambda: lp.call_at(lp.time() + 1, lambda: None)),
        ("call_soon_threadsafe", lambda: lp.call_soon_threadsafe(lambda: None)),
        ("run_forever", lp.run_forever),
        ("run_until_complete", lambda: lp.run_until_complete(fut)),
        ("run_in_executor", lambda: lp.run_in_executor(None, lambda: None)),
        ("add_reader", lambda: lp.add_reader(0, lambda: None)),
        ("add_writer", lambda: lp.add_writer(1, lambda: None)),
    ]


CLOSED_METHODS = [
    "call_soon",
    "call_later",
    "call_at",
    "call_soon_threadsafe",
    "run_forever",
    "run_until_complete",
    "run_in_executor",
    "add_reader",
    "add_writer",
]


@pytest.mark.parametrize("method", CLOSED_METHODS)
def test_methods_on_a_closed_loop_raise(any_loop, method):
    any_loop.close()
    thunk = dict(_closed_loop_calls(any_loop))[method]
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        thunk()


def test_create_task_on_a_closed_loop_raises(any_loop):
    any_loop.close()
    coro = _noop()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            any_loop.create_task(coro)
    finally:
        coro.close()


def test_run_until_complete_coroutine_on_a_closed_loop_raises(any_loop):
    any_loop.close()
    coro = _noop()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            any_loop.run_until_complete(coro)
    finally:
        coro.close()


def test_remove_reader_and_writer_on_a_closed_loop_return_false(any_loop):
    any_loop.close()
    assert any_loop.remove_reader(0) is False
    assert any_loop.remove_writer(1) is False


def test_get_running_loop_in_coroutines_and_callbacks(any_loop):
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())
        seen.append(asyncio.get_event_loop())
        any_loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    any_loop.run_until_complete(main())
    assert seen == [any_loop] * 3


def test_no_running_loop_after_run(any_loop):
    any_loop.run_until_complete(asyncio.sleep(0))
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_no_running_loop_after_run_raises(any_loop):
    async def main():
        raise ValueError("x")

    with pytest.raises(ValueError):
        any_loop.run_until_complete(main())
    assert not any_loop.is_running()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_current_task(any_loop):
    seen = {}

    async def main():
        seen["in_task"] = asyncio.current_task()
        any_loop.call_soon(lambda: seen.setdefault("in_callback", asyncio.current_task()))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    task = any_loop.create_task(main())
    any_loop.run_until_complete(task)
    assert seen["in_task"] is task
    assert seen["in_callback"] is None
    assert asyncio.current_task(any_loop) is None


def test_all_tasks(any_loop):
    async def sleeper():
        await asyncio.sleep(3600)

    async def quick():
        return 1

    async def main():
        me = asyncio.current_task()
        s = any_loop.create_task(sleeper(), name="sleeper")
        q = any_loop.create_task(quick())
        await q
        tasks = asyncio.all_tasks()
        assert tasks == asyncio.all_tasks(any_loop)
        s.cancel()
        return tasks, {me, s}

    tasks, expected = any_loop.run_until_complete(main())
    assert tasks == expected


def test_keyboard_interrupt_in_a_callback_propagates(any_loop):
    def interrupt():
        raise KeyboardInterrupt

    any_loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        any_loop.run_forever()
    assert not any_loop.is_running()
    assert any_loop.run_until_complete(asyncio.sleep(0, "recovered")) == "recovered"


def test_system_exit_in_a_callback_propagates(any_loop):
    def leave():
        raise SystemExit(3)

    any_loop.call_soon(leave)
    with pytest.raises(SystemExit):
        any_loop.run_forever()
    assert not any_loop.is_running()


def test_keyboard_interrupt_in_a_task_propagates(any_loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        any_loop.run_until_complete(main())
    assert not any_loop.is_running()


def test_run_forever_installs_and_restores_asyncgen_hooks(any_loop):
    def firstiter(agen):
        pass

    def finalizer(agen):
        pass

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    try:
        inside = []
        any_loop.call_soon(lambda: inside.append(sys.get_asyncgen_hooks()))
        run_forever_once(any_loop)
        assert inside[0].firstiter is not firstiter and inside[0].firstiter is not None
        assert inside[0].finalizer is not finalizer and inside[0].finalizer is not None
        after = sys.get_asyncgen_hooks()
        assert after.firstiter is firstiter and after.finalizer is finalizer
    finally:
        sys.set_asyncgen_hooks(*old)


def test_loop_runs_in_a_non_main_thread():
    results = []

    def worker(kind):
        lp = make_loop(kind)
        try:

            async def main():
                await asyncio.sleep(0.01)
                return asyncio.get_running_loop() is lp

            results.append(lp.run_until_complete(main()))
        finally:
            lp.close()

    threads = [threading.Thread(target=worker, args=("oxloop",)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LIVENESS)
    assert results == [True, True, True]


def test_run_wraps_coroutine_in_task(any_loop):
    seen = []

    async def main():
        seen.append(asyncio.current_task())

    any_loop.run_until_complete(main())
    assert isinstance(seen[0], asyncio.Task)
