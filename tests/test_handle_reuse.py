"""Tests that reusing spent handles (oxloop keeps emptied ones for call_soon) is invisible."""

import contextvars
import gc
import weakref

import pytest
from support import run_forever_once

VAR = contextvars.ContextVar("reuse_var", default="unset")


def _churn(loop, n=600):
    """Schedule and run many throwaway callbacks (enough to cycle any handle pool)."""
    for _ in range(n):
        loop.call_soon(int)
    run_forever_once(loop)


def test_a_handle_the_caller_kept_is_never_reused(any_loop):
    got = []
    kept = any_loop.call_soon(got.append, "kept")
    run_forever_once(any_loop)
    _churn(any_loop)
    assert got == ["kept"]
    assert kept._callback == got.append
    assert kept._args == ("kept",)
    assert not kept.cancelled()
    assert "append" in repr(kept)


def test_a_weakly_referenced_handle_is_never_reused(any_loop):
    got = []
    ref = weakref.ref(any_loop.call_soon(got.append, 1))
    run_forever_once(any_loop)
    _churn(any_loop)
    # The handle was dropped: a weak reference must not come back to life as another one.
    handle = ref()
    assert handle is None or (handle._callback == got.append and handle._args == (1,))


def test_a_handle_in_a_reference_cycle_is_still_collected(any_loop):
    class Box:
        pass

    box = Box()
    box.handle = any_loop.call_soon(lambda b: None, box)
    ref = weakref.ref(box)
    del box
    run_forever_once(any_loop)
    _churn(any_loop)
    gc.collect()
    assert ref() is None


def test_a_cancelled_handle_kept_by_the_caller_stays_cancelled(any_loop):
    got = []
    handle = any_loop.call_soon(got.append, 1)
    handle.cancel()
    run_forever_once(any_loop)
    _churn(any_loop)
    assert handle.cancelled()
    assert got == []


def test_a_handle_cancelled_after_it_ran_does_not_cancel_a_later_callback(any_loop):
    got = []
    handle = any_loop.call_soon(got.append, 1)
    run_forever_once(any_loop)
    # If the same object were reused for the next callback, this would cancel it.
    for i in range(300):
        any_loop.call_soon(got.append, i + 2)
    handle.cancel()
    run_forever_once(any_loop)
    assert got == [1, *range(2, 302)]


def test_reused_handles_run_in_their_own_context(any_loop):
    seen = []

    def record():
        seen.append(VAR.get())

    for round_ in range(3):
        for i in range(300):
            ctx = contextvars.copy_context()
            ctx.run(VAR.set, f"{round_}-{i}")
            any_loop.call_soon(record, context=ctx)
        any_loop.call_soon(record)  # the current (empty) context: "unset"
        run_forever_once(any_loop)
    expected = []
    for round_ in range(3):
        expected += [f"{round_}-{i}" for i in range(300)] + ["unset"]
    assert seen == expected


def test_arguments_of_run_callbacks_are_released(any_loop):
    class Arg:
        pass

    refs = []
    for _ in range(50):
        arg = Arg()
        refs.append(weakref.ref(arg))
        any_loop.call_soon(lambda a: None, arg)
        del arg
    run_forever_once(any_loop)
    gc.collect()
    assert all(r() is None for r in refs)


def test_handles_a_callback_looks_at_keep_their_state(any_loop):
    # Handles a callback looks at while running (via its own reference) keep their state.
    states = []
    handles = {}

    def look(key):
        h = handles[key]
        states.append((key, h.cancelled(), h._args))

    for key in range(100):
        handles[key] = any_loop.call_soon(look, key)
    run_forever_once(any_loop)
    assert states == [(k, False, (k,)) for k in range(100)]
    _churn(any_loop)
    assert all(handles[k]._args == (k,) for k in handles)


def test_handles_raising_in_callbacks_still_report_the_right_handle(any_loop):
    reports = []
    any_loop.set_exception_handler(lambda lp, ctx: reports.append(ctx["handle"]))

    def boom(i):
        raise ValueError(i)

    for i in range(20):
        any_loop.call_soon(boom, i)
    run_forever_once(any_loop)
    _churn(any_loop)
    assert [h._args for h in reports] == [(i,) for i in range(20)]
    assert all(h._callback is boom for h in reports)


@pytest.mark.parametrize("debug", [False, True])
def test_reuse_survives_debug_toggling(any_loop, debug):
    any_loop.set_debug(debug)
    got = []
    for i in range(500):
        any_loop.call_soon(got.append, i)
    run_forever_once(any_loop)
    any_loop.set_debug(not debug)
    for i in range(500):
        any_loop.call_soon(got.append, i)
    run_forever_once(any_loop)
    assert got == list(range(500)) * 2


def test_stall_reports_keep_their_handle_while_handles_are_reused(loop):
    """Under the stall watchdog handles are still reused; a report still names its own."""
    import threading
    import time

    reports = []
    finished = threading.Event()

    def collect(report):
        reports.append(report)
        if report.finished:
            finished.set()

    def stall():
        time.sleep(0.2)

    loop.set_stall_watchdog(0.05, callback=collect)
    try:
        _churn(loop)
        loop.call_soon(stall)
        run_forever_once(loop)
        assert finished.wait(10)
        _churn(loop)
    finally:
        loop.set_stall_watchdog(None)
    assert len(reports) == 2
    assert all("stall" in r.handle for r in reports), [r.handle for r in reports]
    assert reports[1].duration >= 0.2
