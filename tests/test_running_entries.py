"""Tests of call_soon, create_future, create_task and time called while the loop runs.

oxloop enters these methods by a shorter path while the loop runs on the calling thread
(outside debug mode) than before it runs, from another thread or in debug mode; each test
here calls them from inside a running loop, where that path is taken, and checks the
stock behaviour: arguments, keywords, contexts, errors, debug mode, other threads.
"""

import asyncio
import contextvars
import gc
import inspect
import sys
import threading
import time
import weakref

import pytest
from support import make_loop, run

VAR = contextvars.ContextVar("running_entries_var", default="unset")


def inside(loop, fn):
    """Call `fn()` from a callback of the running `loop`; return its result or raise."""
    out = loop.create_future()

    def call():
        try:
            out.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out.set_exception(exc)

    loop.call_soon(call)
    return loop.run_until_complete(out)


def _record(got):
    def cb(*args):
        got.append((args, VAR.get()))

    return cb


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("args", [(), (1,), (1, "two", None), tuple(range(20))])
def test_call_soon_passes_positional_arguments(any_loop, args):
    got = []
    inside(any_loop, lambda: any_loop.call_soon(_record(got), *args))
    run(any_loop, _settle())
    assert got == [(args, "unset")]


@pytest.mark.parametrize("args", [(), (1,), (1, 2, 3)])
def test_call_soon_context_keyword(any_loop, args):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "inside")
    inside(any_loop, lambda: any_loop.call_soon(_record(got), *args, context=ctx))
    run(any_loop, _settle())
    assert got == [(args, "inside")]


def test_call_soon_context_none_and_the_current_context(any_loop):
    got = []

    def schedule():
        VAR.set("current")  # the callback runs in a copy of this context
        any_loop.call_soon(_record(got), 1, context=None)
        any_loop.call_soon(_record(got), 2)

    # call_soon copies the context of the callback that calls it
    inside(any_loop, lambda: contextvars.copy_context().run(schedule))
    run(any_loop, _settle())
    assert got == [((1,), "current"), ((2,), "current")]


def test_call_soon_keyword_shapes(any_loop):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "kw")

    def schedule():
        any_loop.call_soon(callback=_record(got))
        any_loop.call_soon(context=ctx, callback=_record(got))
        any_loop.call_soon(_record(got), **{"context": ctx})

    inside(any_loop, schedule)
    run(any_loop, _settle())
    assert got == [((), "unset"), ((), "kw"), ((), "kw")]


@pytest.mark.parametrize(
    "call",
    [
        lambda lp: lp.call_soon(),
        lambda lp: lp.call_soon(context=None),
        lambda lp: lp.call_soon(print, foo=1),
        lambda lp: lp.call_soon(print, context=None, foo=1),
    ],
)
def test_call_soon_argument_errors_are_the_stock_type_errors(any_loop, call):
    assert_same_type_error_inside_and_out(any_loop, call)


def assert_same_type_error_inside_and_out(loop, call):
    with pytest.raises(TypeError) as outside_info:
        call(loop)
    with pytest.raises(TypeError) as inside_info:
        inside(loop, lambda: call(loop))
    assert str(inside_info.value) == str(outside_info.value)


def test_call_soon_returns_a_handle_describing_the_call(any_loop):
    handle = inside(any_loop, lambda: any_loop.call_soon(print, 1, 2))
    assert handle._callback is print
    assert handle._args == (1, 2)
    handle.cancel()
    assert handle.cancelled()


def test_call_soon_a_handle_cancelled_before_it_runs_does_not_run(any_loop):
    got = []

    def schedule():
        any_loop.call_soon(got.append, 1).cancel()
        any_loop.call_soon(got.append, 2)

    inside(any_loop, schedule)
    run(any_loop, _settle())
    assert got == [2]


def test_call_soon_in_debug_mode_checks_the_callback(any_loop):
    any_loop.set_debug(True)

    async def coro():
        pass

    c = coro()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
            inside(any_loop, lambda: any_loop.call_soon(c))
    finally:
        c.close()
    with pytest.raises(TypeError, match="a callable object was expected by call_soon"):
        inside(any_loop, lambda: any_loop.call_soon(42))


def test_call_soon_in_debug_mode_records_where_the_handle_was_made(any_loop):
    any_loop.set_debug(True)
    handle = inside(any_loop, lambda: any_loop.call_soon(print))
    assert handle._source_traceback
    handle.cancel()


def test_call_soon_from_another_thread_outside_debug_mode_schedules(any_loop):
    got = []
    done = any_loop.create_future()

    def from_thread():
        any_loop.call_soon(got.append, "from thread")
        any_loop.call_soon_threadsafe(done.set_result, None)

    any_loop.call_soon(lambda: threading.Thread(target=from_thread).start())
    run(any_loop, done)
    run(any_loop, _settle())
    assert got == ["from thread"]


def test_create_future_while_running(any_loop):
    fut = inside(any_loop, any_loop.create_future)
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is any_loop
    assert not fut.done()


def test_create_future_in_debug_mode_records_a_traceback(any_loop):
    any_loop.set_debug(True)
    assert inside(any_loop, any_loop.create_future)._source_traceback


def test_create_future_takes_no_arguments(any_loop):
    with pytest.raises(TypeError):
        inside(any_loop, lambda: any_loop.create_future(1))
    assert list(inspect.signature(any_loop.create_future).parameters) == []


class _MyFuture(asyncio.Future):
    pass


class _MyTask(asyncio.Task):
    pass


def test_create_future_uses_asyncio_futures_future_as_it_is_now(any_loop, monkeypatch):
    monkeypatch.setattr(asyncio.futures, "Future", _MyFuture)
    assert type(any_loop.create_future()) is _MyFuture
    assert type(inside(any_loop, any_loop.create_future)) is _MyFuture


def test_create_task_uses_asyncio_tasks_task_as_it_is_now(any_loop, monkeypatch):
    async def work():
        return 5

    monkeypatch.setattr(asyncio.tasks, "Task", _MyTask)
    task = inside(any_loop, lambda: any_loop.create_task(work()))
    assert type(task) is _MyTask
    assert any_loop.run_until_complete(task) == 5


@pytest.mark.parametrize("name", [None, "named", 42])
def test_create_task_while_running(any_loop, name):
    async def work():
        return VAR.get()

    task = inside(any_loop, lambda: any_loop.create_task(work(), name=name))
    assert task.get_loop() is any_loop
    if name is None:
        assert task.get_name().startswith("Task-")
    else:
        assert task.get_name() == str(name)
    assert any_loop.run_until_complete(task) == "unset"


def test_time_is_the_monotonic_clock(any_loop):
    before = time.monotonic()
    inner = inside(any_loop, any_loop.time)
    assert before <= inner <= time.monotonic()
    assert list(inspect.signature(any_loop.time).parameters) == []
    with pytest.raises(TypeError):
        any_loop.time(1)


def test_a_run_loop_is_freed_by_its_reference_count():
    loop = make_loop("oxloop")
    loop.run_until_complete(_uses_futures_and_tasks())
    loop.close()
    ref = weakref.ref(loop)
    gc.disable()
    try:
        del loop
        assert ref() is None
    finally:
        gc.enable()


async def _uses_futures_and_tasks():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    await fut
    await loop.create_task(asyncio.sleep(0))


def test_futures_and_tasks_made_in_two_runs_and_between(any_loop):
    for _ in range(2):
        any_loop.run_until_complete(_uses_futures_and_tasks())
        assert any_loop.create_future().get_loop() is any_loop


def _timer_calls(lp):
    return {
        "call_later": lambda *a, **k: lp.call_later(0, *a, **k),
        "call_at": lambda *a, **k: lp.call_at(lp.time(), *a, **k),
    }


@pytest.mark.parametrize("method", ["call_later", "call_at"])
@pytest.mark.parametrize("args", [(), (1,), (1, "two", None)])
def test_timers_pass_arguments_and_context(any_loop, method, args):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "timer")

    def schedule():
        call = _timer_calls(any_loop)[method]
        call(_record(got), *args)
        call(_record(got), *args, context=ctx)
        call(callback=_record(got))

    inside(any_loop, schedule)
    run(any_loop, asyncio.sleep(0.01))
    assert got == [(args, "unset"), (args, "timer"), ((), "unset")]


@pytest.mark.parametrize(
    "call",
    [
        lambda lp: lp.call_later(None, print),
        lambda lp: lp.call_later("soon", print),
        lambda lp: lp.call_later(1),
        lambda lp: lp.call_later(1, print, foo=1),
        lambda lp: lp.call_later(),
        lambda lp: lp.call_at(1, print, context=None, foo=1),
        lambda lp: lp.call_at(),
    ],
)
def test_timer_argument_errors_are_the_stock_type_errors(any_loop, call):
    assert_same_type_error_inside_and_out(any_loop, call)


@pytest.mark.parametrize("delay", [0, 0.5, 10**6, True])
def test_call_later_deadline(any_loop, delay):
    def schedule():
        before = any_loop.time()
        timer = any_loop.call_later(delay, print)
        after = any_loop.time()
        timer.cancel()
        return before, timer.when(), after

    before, when, after = inside(any_loop, schedule)
    assert before + delay <= when <= after + delay


def test_call_at_deadline_and_cancel(any_loop):
    got = []

    def schedule():
        keep = any_loop.call_at(any_loop.time(), got.append, "kept")
        dropped = any_loop.call_at(any_loop.time(), got.append, "dropped")
        dropped.cancel()
        return keep, dropped

    keep, dropped = inside(any_loop, schedule)
    run(any_loop, asyncio.sleep(0.01))
    assert got == ["kept"]
    assert dropped.cancelled() and not keep.cancelled()


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timers_in_debug_mode_check_the_callback_and_record_a_traceback(any_loop, method):
    any_loop.set_debug(True)
    # stock call_later hands over to call_at: its messages say call_at
    with pytest.raises(TypeError, match=r"a callable object was expected by call_at\(\)"):
        inside(any_loop, lambda: _timer_calls(any_loop)[method](42))
    timer = inside(any_loop, lambda: _timer_calls(any_loop)[method](print))
    assert timer._source_traceback
    timer.cancel()


def test_timer_entries_keep_their_signatures(any_loop):
    for name in ("call_soon", "call_later", "call_at"):
        params = inspect.signature(getattr(any_loop, name)).parameters
        assert list(params)[-2:] == ["args", "context"]


def test_create_task_uses_the_task_factory_while_running(any_loop):
    made = []

    def factory(lp, coro, **kw):
        made.append(kw)
        return asyncio.Task(coro, loop=lp, **kw)

    async def work():
        return 3

    any_loop.set_task_factory(factory)
    task = inside(any_loop, lambda: any_loop.create_task(work()))
    assert made == [{}]
    assert any_loop.run_until_complete(task) == 3


def test_create_task_context_keyword_while_running(any_loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task context")

    async def work():
        return VAR.get()

    if sys.version_info < (3, 11):
        coro = work()
        try:
            assert_same_type_error_inside_and_out(
                any_loop, lambda lp: lp.create_task(coro, context=ctx)
            )
        finally:
            coro.close()
        return
    task = inside(any_loop, lambda: any_loop.create_task(work(), context=ctx))
    assert any_loop.run_until_complete(task) == "task context"


def test_create_task_argument_errors_while_running(any_loop):
    assert_same_type_error_inside_and_out(any_loop, lambda lp: lp.create_task())
    coro = _settle()
    try:
        assert_same_type_error_inside_and_out(any_loop, lambda lp: lp.create_task(coro, 1))
    finally:
        coro.close()


def test_cancel_while_running(any_loop):
    got = []

    def schedule():
        handle = any_loop.call_soon(got.append, "soon")
        timer = any_loop.call_later(0, got.append, "later")
        for h in (handle, timer, handle, timer):  # twice: cancelling again changes nothing
            assert h.cancel() is None
        any_loop.call_soon(got.append, "kept")
        return handle, timer

    handle, timer = inside(any_loop, schedule)
    run(any_loop, asyncio.sleep(0.01))
    assert got == ["kept"]
    assert handle.cancelled() and timer.cancelled()
    assert handle._callback is None and timer._args is None


def test_cancel_argument_errors_while_running(any_loop):
    handle = any_loop.call_soon(print)
    timer = any_loop.call_later(3600, print)
    assert_same_type_error_inside_and_out(any_loop, lambda lp: handle.cancel(1))
    assert_same_type_error_inside_and_out(any_loop, lambda lp: timer.cancel(1))
    handle.cancel()
    timer.cancel()


def test_cancelled_timers_leave_the_loop_while_running(loop):
    def schedule():
        for timer in [loop.call_later(3600, print) for _ in range(300)]:
            timer.cancel()

    inside(loop, schedule)
    run(loop, asyncio.sleep(0))
    assert loop.stats()["timers_pending"] < 300


def test_a_callback_that_cancels_its_own_handle_runs_to_its_end(any_loop):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "own")
    holder = {}

    def cb(arg):
        holder.pop("handle").cancel()  # drops the callback and the arguments
        got.append((arg, VAR.get()))

    holder["handle"] = any_loop.call_soon(cb, ["arg"], context=ctx)
    del ctx
    run(any_loop, _settle())
    assert got == [(["arg"], "own")]
