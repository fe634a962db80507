"""Tests of futures and tasks on the loop: creation, task factories, cancellation."""

import asyncio
import contextvars
import sys

import pytest
from support import LIVENESS, VAR, run, run_forever_once

PY314 = sys.version_info >= (3, 14)


def test_create_future_is_an_asyncio_future_of_this_loop(any_loop):
    fut = any_loop.create_future()
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is any_loop
    assert not fut.done()
    any_loop.call_soon(fut.set_result, "value")
    assert any_loop.run_until_complete(fut) == "value"


def test_future_done_callbacks_run_through_the_loop(any_loop):
    fut = any_loop.create_future()
    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(5)
    assert seen == []  # never synchronously
    run_forever_once(any_loop)
    assert seen == [5]


def test_create_task_returns_a_task_with_name(any_loop):
    async def work():
        await asyncio.sleep(0)
        return "done"

    task = any_loop.create_task(work(), name="worker")
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is any_loop
    assert task.get_name() == "worker"
    assert any_loop.run_until_complete(task) == "done"


def test_create_task_default_name(any_loop):
    task = any_loop.create_task(asyncio.sleep(0))
    assert task.get_name().startswith("Task-")
    any_loop.run_until_complete(task)


def test_create_task_copies_the_current_context(any_loop):
    async def read():
        value = VAR.get()
        VAR.set("changed-in-task")
        return value

    def schedule():
        VAR.set("creator")
        return any_loop.create_task(read())

    ctx = contextvars.copy_context()
    task = ctx.run(schedule)
    assert any_loop.run_until_complete(task) == "creator"
    assert ctx[VAR] == "creator"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is 3.11+")
def test_create_task_context_argument(any_loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "given")

    async def read():
        value = VAR.get()
        VAR.set("changed-in-task")
        return value

    task = any_loop.create_task(read(), context=ctx)
    if sys.version_info >= (3, 12):  # Task.get_context() is 3.12+
        assert task.get_context() is ctx
    assert any_loop.run_until_complete(task) == "given"
    assert ctx[VAR] == "changed-in-task"


def test_task_factory_get_set_and_validation(any_loop):
    assert any_loop.get_task_factory() is None

    def factory(loop, coro, **kwargs):
        return asyncio.Task(coro, loop=loop, **kwargs)

    any_loop.set_task_factory(factory)
    assert any_loop.get_task_factory() is factory
    any_loop.set_task_factory(None)
    assert any_loop.get_task_factory() is None
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        any_loop.set_task_factory(42)


def test_task_factory_calling_convention(any_loop):
    calls = []

    def factory(loop, coro, **kwargs):
        calls.append((loop, coro, kwargs))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def work(x):
        return x

    any_loop.set_task_factory(factory)
    coro = work(1)
    task = any_loop.create_task(coro, name="named")
    # 3.14 hands every keyword argument to the factory; before, the loop named the task.
    assert calls == [(any_loop, coro, {"name": "named"} if PY314 else {})]
    assert task.get_name() == "named"
    assert any_loop.run_until_complete(task) == 1

    if sys.version_info >= (3, 11):
        ctx = contextvars.copy_context()
        coro = work(2)
        task = any_loop.create_task(coro, context=ctx)
        assert calls[-1] == (any_loop, coro, {"context": ctx})
        assert any_loop.run_until_complete(task) == 2

    async def main():
        return await asyncio.create_task(work(3))

    n = len(calls)
    assert any_loop.run_until_complete(main()) == 3
    # run_until_complete(coro) and asyncio.create_task() both go through the factory
    assert len(calls) == n + 2


def test_task_factory_may_return_a_custom_task(any_loop):
    class MyTask(asyncio.Task):
        pass

    any_loop.set_task_factory(lambda loop, coro, **kw: MyTask(coro, loop=loop, **kw))

    async def main():
        return type(asyncio.current_task())

    assert any_loop.run_until_complete(main()) is MyTask


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
def test_eager_task_factory(any_loop):
    any_loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def child():
        steps.append(("child-start", asyncio.current_task()))
        await asyncio.sleep(0)
        steps.append(("child-end", None))
        return 7

    async def instant():
        return "instant"

    async def main():
        t = any_loop.create_task(child())
        steps.append(("after-create", None))
        fast = asyncio.create_task(instant())
        fast_done = fast.done()
        return t, await t, fast_done, await fast

    t, result, fast_done, fast_result = any_loop.run_until_complete(main())
    assert [s for s, _ in steps] == ["child-start", "after-create", "child-end"]
    assert steps[0][1] is t
    assert result == 7
    assert fast_done is True and fast_result == "instant"


# -- cancellation ------------------------------------------------------------------------------


def test_cancel_a_sleeping_task(any_loop):
    seen = []

    async def sleeper():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        t = any_loop.create_task(sleeper())
        await asyncio.sleep(0)
        assert t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return t

    t = run(any_loop, main())
    assert t.cancelled()
    assert seen == ["cancelled"]


def test_cancel_message_is_delivered(any_loop):
    async def sleeper():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            return exc.args

    async def main():
        t = any_loop.create_task(sleeper())
        await asyncio.sleep(0)
        t.cancel("because")
        return await t

    assert run(any_loop, main()) == ("because",)


def test_cancelling_a_task_cancels_the_awaited_future(any_loop):
    async def main():
        fut = any_loop.create_future()
        t = any_loop.create_task(asyncio.wait_for(fut, None))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return fut

    assert run(any_loop, main()).cancelled()


def test_shield_protects_the_inner_task(any_loop):
    async def inner():
        await asyncio.sleep(0.02)
        return "inner-done"

    async def main():
        inner_task = any_loop.create_task(inner())
        outer = asyncio.ensure_future(asyncio.shield(inner_task))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner_task

    assert run(any_loop, main()) == "inner-done"


def test_wait_for_timeout_cancels_and_raises(any_loop):
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow(), 0.02)

    run(any_loop, main())
    assert cancelled == [True]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
def test_asyncio_timeout_context_manager(any_loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(3600)
        async with asyncio.timeout(LIVENESS):
            await asyncio.sleep(0)
        return "ok"

    assert run(any_loop, main()) == "ok"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is 3.11+")
def test_task_group(any_loop):
    async def boom():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def sleeper(log):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def main():
        log = []
        with pytest.raises(ExceptionGroup) as info:  # noqa: F821 (builtin on 3.11+)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sleeper(log))
                tg.create_task(boom())
        return log, info.value

    log, eg = run(any_loop, main())
    assert log == ["cancelled"]
    assert [type(e) for e in eg.exceptions] == [ValueError]


# -- everyday asyncio on the loop --------------------------------------------------------------


def test_gather_preserves_order(any_loop):
    async def delayed(x, d):
        await asyncio.sleep(d)
        return x

    async def main():
        return await asyncio.gather(delayed(1, 0.03), delayed(2, 0.01), delayed(3, 0))

    assert run(any_loop, main()) == [1, 2, 3]


def test_sleep_ordering(any_loop):
    order = []

    async def sleeper(x, deadline):
        await asyncio.sleep(deadline - any_loop.time())
        order.append(x)

    async def main():
        base = any_loop.time()  # common base: stalls between task starts can't reorder
        await asyncio.gather(*(sleeper(x, base + x / 100) for x in (5, 1, 4, 2, 3)))

    run(any_loop, main())
    assert order == [1, 2, 3, 4, 5]


def test_queue_producer_consumer(any_loop):
    async def main():
        q = asyncio.Queue(maxsize=3)
        got = []

        async def producer():
            for i in range(50):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                got.append(item)

        await asyncio.gather(producer(), consumer())
        return got

    assert run(any_loop, main()) == list(range(50))


def test_event_lock_semaphore(any_loop):
    async def main():
        ev = asyncio.Event()
        lock = asyncio.Lock()
        sem = asyncio.Semaphore(2)
        active = [0]
        peak = [0]
        order = []

        async def worker(i):
            await ev.wait()
            async with sem:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                await asyncio.sleep(0.001)
                active[0] -= 1
            async with lock:
                order.append(i)

        tasks = [asyncio.ensure_future(worker(i)) for i in range(6)]
        await asyncio.sleep(0)
        ev.set()
        await asyncio.gather(*tasks)
        return peak[0], sorted(order)

    assert run(any_loop, main()) == (2, list(range(6)))


def test_to_thread_propagates_context(any_loop):
    async def main():
        VAR.set("for-thread")
        return await asyncio.to_thread(VAR.get)

    assert run(any_loop, contextvars.copy_context().run(main)) == "for-thread"


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="create_task(context=) exists on 3.11+")
def test_create_task_has_no_context_argument_on_310(any_loop):
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(TypeError):
            any_loop.create_task(coro, context=contextvars.copy_context())
    finally:
        coro.close()


@pytest.mark.skipif(not PY314, reason="create_task(coro, **kwargs) is 3.14's")
def test_create_task_hands_keyword_arguments_on(any_loop):
    # 3.14: create_task(coro, **kwargs) passes them to Task() (eager_start among them).
    assert_eager_start_reaches_the_task(any_loop)

    async def work():
        return 7

    coro = work()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        any_loop.create_task(coro, bogus=1)
    coro.close()


def assert_eager_start_reaches_the_task(lp):
    """`create_task(coro, eager_start=True, name=...)`: the task runs its first step at
    once, before create_task returns, and has the name."""
    order = []

    async def work():
        order.append("ran")
        return 7

    async def main():
        task = lp.create_task(work(), eager_start=True, name="eager")
        order.append("created")
        assert task.get_name() == "eager"
        return await task

    assert lp.run_until_complete(main()) == 7
    assert order == ["ran", "created"]


@pytest.mark.skipif(PY314, reason="3.14 takes any keyword argument")
def test_create_task_refuses_other_keyword_arguments(any_loop):
    if sys.version_info >= (3, 13, 3):
        pytest.skip("3.13.3 and later take them (see the next test)")

    async def work():
        return 1

    coro = work()
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'eager_start'"):
        any_loop.create_task(coro, eager_start=True)
    coro.close()


@pytest.mark.skipif(sys.version_info[:2] != (3, 13), reason="3.13.3's create_task(**kwargs)")
def test_create_task_of_a_later_313_hands_other_keywords_on(loop, monkeypatch):
    # 3.13.3+ (3.13.4's contract): other keywords go to Task() or the factory; the loop
    # still names the task (with a factory) and hands `context` only when given. This
    # checkout may have an earlier 3.13: oxloop reads sys.version_info when such a call
    # comes, so present a later one.
    monkeypatch.setattr(sys, "version_info", (3, 13, 9, "final", 0))
    assert_eager_start_reaches_the_task(loop)

    async def work():
        return 7

    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    task = loop.create_task(work(), name="named", context=ctx, eager_start=False)
    assert calls == [{"context": ctx, "eager_start": False}]
    assert task.get_name() == "named"
    assert loop.run_until_complete(task) == 7
