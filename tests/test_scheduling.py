"""Tests of callback scheduling: call_soon/later/at/soon_threadsafe, handles, time()."""

import asyncio
import contextvars
import gc
import socket
import sys
import threading
import time
import weakref

import pytest
from support import (
    LIVENESS,
    STOCK_HAS_GET_CONTEXT,
    VAR,
    Watchdog,
    is_stock,
    make_loop,
    run,
    run_forever_once,
)

# A timer must never run before its deadline (stock allows clock-resolution slack, ~1ns).
EARLY_SLACK = 1e-6


def test_call_soon_is_fifo(any_loop):
    order = []
    for i in range(200):
        any_loop.call_soon(order.append, i)
    run_forever_once(any_loop)
    assert order == list(range(200))


def test_call_soon_passes_positional_args(any_loop):
    got = []
    any_loop.call_soon(lambda *a: got.append(a), 1, "two", None)
    run_forever_once(any_loop)
    assert got == [(1, "two", None)]


def test_callbacks_added_by_a_callback_run_after_those_already_queued(any_loop):
    order = []
    done = any_loop.create_future()

    def first():
        order.append("first")
        any_loop.call_soon(third)

    def third():
        order.append("third")
        done.set_result(None)

    any_loop.call_soon(first)
    any_loop.call_soon(order.append, "second")
    run(any_loop, done)
    assert order == ["first", "second", "third"]


def test_call_soon_returns_a_cancellable_handle(any_loop):
    ran = []
    h = any_loop.call_soon(ran.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    run_forever_once(any_loop)
    assert ran == []


def test_callback_cancelling_a_later_ready_callback(any_loop):
    ran = []
    handles = {}

    def a():
        ran.append("a")
        handles["b"].cancel()

    any_loop.call_soon(a)
    handles["b"] = any_loop.call_soon(ran.append, "b")
    any_loop.call_soon(ran.append, "c")
    run_forever_once(any_loop)
    assert ran == ["a", "c"]


def test_timers_run_in_deadline_order(any_loop):
    order = []
    done = any_loop.create_future()
    base = any_loop.time()  # one base, so a stall between the calls can't reorder deadlines
    any_loop.call_at(base + 0.03, order.append, 3)
    any_loop.call_at(base + 0.01, order.append, 1)
    any_loop.call_at(base + 0.02, order.append, 2)
    any_loop.call_at(base + 0.04, done.set_result, None)
    run(any_loop, done)
    assert order == [1, 2, 3]


def test_call_later_runs_in_delay_order(any_loop):
    order = []
    done = any_loop.create_future()
    any_loop.call_later(0.2, order.append, "late")
    any_loop.call_later(0, order.append, "soon")
    any_loop.call_later(0.25, done.set_result, None)
    run(any_loop, done)
    assert order == ["soon", "late"]


def test_call_later_when_is_now_plus_delay(any_loop):
    t0 = any_loop.time()
    h = any_loop.call_later(100, lambda: None)
    t1 = any_loop.time()
    assert t0 + 100 <= h.when() <= t1 + 100
    h.cancel()


def test_call_at_when_is_exact(any_loop):
    when = any_loop.time() + 123.25
    h = any_loop.call_at(when, lambda: None)
    assert h.when() == when
    h.cancel()


def test_timer_never_fires_before_its_deadline(any_loop):
    fired = []
    done = any_loop.create_future()
    whens = []
    for delay in (0.0, 0.001, 0.005, 0.02, 0.05):
        h = any_loop.call_later(delay, lambda: fired.append(any_loop.time()))
        whens.append(h.when())
    any_loop.call_later(0.06, done.set_result, None)
    run(any_loop, done)
    assert len(fired) == len(whens)
    for when, at in zip(whens, fired, strict=True):
        assert at >= when - EARLY_SLACK


def test_call_at_fires_at_or_after_when(any_loop):
    seen = any_loop.create_future()
    when = any_loop.time() + 0.03
    any_loop.call_at(when, lambda: seen.set_result(any_loop.time()))
    assert run(any_loop, seen) >= when - EARLY_SLACK


@pytest.mark.parametrize("delay", [0, -1, -1000.5])
def test_call_later_with_zero_or_negative_delay_runs_soon(any_loop, delay):
    done = any_loop.create_future()
    any_loop.call_later(delay, done.set_result, delay)
    assert run(any_loop, done) == delay


def test_call_at_in_the_past_runs_soon(any_loop):
    done = any_loop.create_future()
    any_loop.call_at(any_loop.time() - 50, done.set_result, "past")
    assert run(any_loop, done) == "past"


def skip_stock_310(loop):
    if is_stock(loop) and sys.version_info < (3, 11):
        pytest.skip("stock 3.10 asserts instead of raising TypeError")


def test_call_later_none_delay_is_a_type_error(any_loop):
    skip_stock_310(any_loop)
    with pytest.raises(TypeError, match="delay must not be None"):
        any_loop.call_later(None, lambda: None)


def test_call_at_none_when_is_a_type_error(any_loop):
    skip_stock_310(any_loop)
    with pytest.raises(TypeError, match="when cannot be None"):
        any_loop.call_at(None, lambda: None)


def test_cancelled_timer_does_not_run(any_loop):
    ran = []
    h = any_loop.call_later(0.01, ran.append, "x")
    h.cancel()
    assert h.cancelled()
    run(any_loop, asyncio.sleep(0.05))
    assert ran == []


def test_callback_can_cancel_a_timer_due_in_the_same_iteration(any_loop):
    ran = []
    done = any_loop.create_future()
    when = any_loop.time() + 0.02
    handles = {}

    def first():
        ran.append("first")
        handles["second"].cancel()

    any_loop.call_at(when, first)
    handles["second"] = any_loop.call_at(when + 1e-6, ran.append, "second")
    any_loop.call_at(when + 0.02, done.set_result, None)
    run(any_loop, done)
    assert ran == ["first"]


def test_many_cancelled_timers_are_skipped_and_the_rest_run_in_order(any_loop):
    ran = []
    handles = []
    for i in range(20000):
        handles.append(any_loop.call_later(i * 2e-6, ran.append, i))
    keep = set(range(0, 20000, 97))
    for i, h in enumerate(handles):
        if i not in keep:
            h.cancel()
    done = any_loop.create_future()
    any_loop.call_later(0.05, done.set_result, None)
    run(any_loop, done)
    assert ran == sorted(keep)


def test_cancelled_far_timers_release_their_callback_arguments(any_loop):
    class Payload:
        pass

    refs = []
    for _ in range(2000):
        p = Payload()
        refs.append(weakref.ref(p))
        any_loop.call_later(3600, lambda _p: None, p).cancel()
    del p
    run(any_loop, asyncio.sleep(0.01))
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_loop_stays_live_after_many_cancelled_timers(any_loop):
    for i in range(50000):
        any_loop.call_later(1000 + i, lambda: None).cancel()
    done = any_loop.create_future()
    any_loop.call_later(0.01, done.set_result, "alive")
    assert run(any_loop, done) == "alive"


def test_timers_persist_between_runs(any_loop):
    fired = any_loop.create_future()
    any_loop.call_later(0.2, fired.set_result, "timer")
    run(any_loop, asyncio.sleep(0))
    assert not fired.done()
    assert run(any_loop, fired) == "timer"


def test_time_is_monotonic_and_tracks_sleep(any_loop):
    t0 = any_loop.time()
    assert isinstance(t0, float)
    samples = [any_loop.time() for _ in range(1000)]
    assert samples == sorted(samples)
    run(any_loop, asyncio.sleep(0.05))
    assert any_loop.time() - t0 >= 0.05 - EARLY_SLACK


def test_asyncio_sleep_does_not_return_early(any_loop):
    async def main():
        t0 = any_loop.time()
        await asyncio.sleep(0.03)
        return any_loop.time() - t0

    assert run(any_loop, main()) >= 0.03 - EARLY_SLACK


def test_handles_have_the_asyncio_handle_interface(any_loop):
    h = any_loop.call_soon(lambda: None)
    t = any_loop.call_later(10, lambda: None)
    for handle in (h, t):
        assert callable(handle.cancel) and callable(handle.cancelled)
        if not is_stock(any_loop) or STOCK_HAS_GET_CONTEXT:
            assert isinstance(handle.get_context(), contextvars.Context)
    assert isinstance(t.when(), float)
    t.cancel()
    h.cancel()


def test_handle_get_context_returns_the_given_context(any_loop):
    if is_stock(any_loop) and not STOCK_HAS_GET_CONTEXT:
        pytest.skip("stock Handle.get_context() is 3.12+")
    ctx = contextvars.Context()
    handles = [
        any_loop.call_soon(lambda: None, context=ctx),
        any_loop.call_later(10, lambda: None, context=ctx),
        any_loop.call_at(any_loop.time() + 10, lambda: None, context=ctx),
        any_loop.call_soon_threadsafe(lambda: None, context=ctx),
    ]
    for h in handles:
        assert h.get_context() is ctx
        h.cancel()


# -- contextvars -------------------------------------------------------------------------------


def test_call_soon_runs_in_a_copy_of_the_scheduling_context(any_loop):
    seen = []

    def callback():
        seen.append(VAR.get())
        VAR.set("set-by-callback")

    def schedule():
        VAR.set("at-schedule")
        any_loop.call_soon(callback)
        VAR.set("after-schedule")

    outer = contextvars.copy_context()
    outer.run(schedule)
    run_forever_once(any_loop)
    assert seen == ["at-schedule"]
    assert outer[VAR] == "after-schedule"  # the callback's change stayed in its copy
    assert VAR.get() == "default"


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_context_argument_is_used_and_mutated_in_place(any_loop, method):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in-ctx")
    seen = []
    done = any_loop.create_future()

    def callback():
        seen.append(VAR.get())
        VAR.set("changed")
        done.set_result(None)

    if method == "call_soon":
        any_loop.call_soon(callback, context=ctx)
    elif method == "call_later":
        any_loop.call_later(0.001, callback, context=ctx)
    elif method == "call_at":
        any_loop.call_at(any_loop.time() + 0.001, callback, context=ctx)
    else:
        any_loop.call_soon_threadsafe(callback, context=ctx)
    run(any_loop, done)
    assert seen == ["in-ctx"]
    assert ctx[VAR] == "changed"
    assert VAR.get() == "default"


def test_timer_callback_sees_context_from_scheduling_time(any_loop):
    seen = any_loop.create_future()

    def schedule():
        VAR.set("timer-ctx")
        any_loop.call_later(0.005, lambda: seen.set_result(VAR.get()))

    contextvars.copy_context().run(schedule)
    assert run(any_loop, seen) == "timer-ctx"


# -- call_soon_threadsafe ----------------------------------------------------------------------


def test_call_soon_threadsafe_wakes_a_blocked_loop(any_loop):
    fut = any_loop.create_future()
    started = threading.Event()

    def worker():
        assert started.wait(LIVENESS)
        time.sleep(0.1)  # give the loop time to block in its poll
        any_loop.call_soon_threadsafe(fut.set_result, "woken")

    # The watchdog is the only timer: without a wake-up the loop sleeps until it fires.
    watchdog = Watchdog(any_loop, fut)
    any_loop.call_soon(started.set)
    t = threading.Thread(target=worker)
    t.start()
    try:
        assert any_loop.run_until_complete(fut) == "woken"
        assert not watchdog.fired
    finally:
        watchdog.cancel()
        t.join(LIVENESS)


def test_call_soon_threadsafe_wakes_a_loop_with_no_timers(any_loop):
    fut = any_loop.create_future()
    started = threading.Event()

    def worker():
        assert started.wait(LIVENESS)
        time.sleep(0.05)
        any_loop.call_soon_threadsafe(fut.set_result, "woken")

    # No timer at all: the loop polls with no timeout until the wake-up (or pytest-timeout).
    any_loop.call_soon(started.set)
    t = threading.Thread(target=worker)
    t.start()
    try:
        assert any_loop.run_until_complete(fut) == "woken"
    finally:
        t.join(LIVENESS)


def test_call_soon_threadsafe_from_many_threads(any_loop):
    n_threads, per_thread = 4, 500
    seen = {i: [] for i in range(n_threads)}
    total = [0]
    done = any_loop.create_future()
    barrier = threading.Barrier(n_threads)

    def record(tid, i):
        seen[tid].append(i)
        total[0] += 1
        if total[0] == n_threads * per_thread:
            done.set_result(None)

    def worker(tid):
        barrier.wait(LIVENESS)
        for i in range(per_thread):
            any_loop.call_soon_threadsafe(record, tid, i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    any_loop.call_soon(lambda: [t.start() for t in threads])
    try:
        run(any_loop, done)
    finally:
        for t in threads:
            t.join(LIVENESS)
    for tid in range(n_threads):
        assert seen[tid] == list(range(per_thread))


def test_call_soon_threadsafe_returns_a_handle_that_can_be_cancelled(any_loop):
    ran = []
    h = any_loop.call_soon_threadsafe(ran.append, 1)
    h.cancel()
    run_forever_once(any_loop)
    assert ran == []


# -- edge cases --------------------------------------------------------------------------------


def _schedule_for_repr(loop, kind):
    # One call site for both loops, so debug-mode "created at" lines agree too.
    if kind == "soon":
        return loop.call_soon(print, 1, "a")
    return loop.call_at(1234.5, print, "x")


@pytest.mark.parametrize("kind", ["soon", "at"])
@pytest.mark.parametrize("debug", [False, True])
def test_handle_repr_matches_stock(loop, debug, kind):
    stock = make_loop("stock")
    try:
        reprs = []
        for lp in (loop, stock):
            lp.set_debug(debug)
            h = _schedule_for_repr(lp, kind)
            before = repr(h)
            h.cancel()
            reprs.append((before, repr(h)))
        assert reprs[0] == reprs[1]
    finally:
        stock.close()


def test_call_soon_rejects_unknown_keywords(any_loop):
    with pytest.raises(TypeError):
        any_loop.call_soon(print, bogus=1)
    with pytest.raises(TypeError):
        any_loop.call_later(1, print, bogus=1)


@pytest.mark.parametrize("exc_type", [asyncio.CancelledError, GeneratorExit, ArithmeticError])
def test_callback_raising_other_base_exceptions_goes_to_the_handler(any_loop, exc_type):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append(type(ctx["exception"])))

    def bad():
        raise exc_type

    any_loop.call_soon(bad)
    any_loop.call_soon(calls.append, "next")
    run_forever_once(any_loop)
    assert calls == [exc_type, "next"]


def test_callbacks_after_a_keyboard_interrupt_run_on_the_next_run(any_loop):
    ran = []

    def interrupt():
        raise KeyboardInterrupt

    any_loop.call_soon(ran.append, "before")
    any_loop.call_soon(interrupt)
    any_loop.call_soon(ran.append, "after")
    with pytest.raises(KeyboardInterrupt):
        any_loop.run_forever()
    assert ran == ["before"]
    run_forever_once(any_loop)
    assert ran == ["before", "after"]


def test_self_rescheduling_callback_does_not_starve_timers(any_loop):
    spins = [0]
    done = any_loop.create_future()

    def spin():
        spins[0] += 1
        if not done.done():
            any_loop.call_soon(spin)

    any_loop.call_soon(spin)
    any_loop.call_later(0.02, done.set_result, "timer ran")
    assert run(any_loop, done) == "timer ran"
    assert spins[0] > 1


def test_self_rescheduling_callback_does_not_starve_io(any_loop):
    a, b = socket.socketpair()
    try:
        done = any_loop.create_future()

        def spin():
            if not done.done():
                any_loop.call_soon(spin)

        def on_readable():
            any_loop.remove_reader(a)
            done.set_result(a.recv(10))

        any_loop.add_reader(a, on_readable)
        any_loop.call_soon(spin)
        any_loop.call_later(0.01, b.send, b"io")
        assert run(any_loop, done) == b"io"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("delay", [float("inf"), 1e12, 2**63])
def test_huge_delays_are_accepted(any_loop, delay):
    ran = []
    h = any_loop.call_later(delay, ran.append, "never")
    done = any_loop.create_future()
    any_loop.call_later(0.01, done.set_result, "alive")
    assert run(any_loop, done) == "alive"
    assert ran == []
    h.cancel()


def test_loop_time_is_the_monotonic_clock(any_loop):
    # Stock loops use time.monotonic(); code mixes the two, so the clocks must agree.
    before = time.monotonic()
    t = any_loop.time()
    after = time.monotonic()
    assert before - 0.001 <= t <= after + 0.001


def test_stop_from_another_thread(any_loop):
    started = threading.Event()
    any_loop.call_soon(started.set)

    def stopper():
        assert started.wait(LIVENESS)
        time.sleep(0.05)
        any_loop.call_soon_threadsafe(any_loop.stop)

    watchdog_fired = []
    watchdog = any_loop.call_later(LIVENESS, lambda: watchdog_fired.append(any_loop.stop()))
    t = threading.Thread(target=stopper)
    t.start()
    try:
        any_loop.run_forever()
        assert watchdog_fired == []
    finally:
        watchdog.cancel()
        t.join(LIVENESS)
