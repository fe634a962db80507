"""Tests of debug mode: get/set_debug, PYTHONASYNCIODEBUG and -X dev, slow callbacks, checks."""

import asyncio
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback

import pytest
from support import LIVENESS, clean_env, make_loop, run, run_forever_once, run_python

import oxloop

PROBE = """
import asyncio, oxloop
lp = oxloop.new_event_loop()
print("new_event_loop", lp.get_debug())
lp.close()
async def main():
    return asyncio.get_running_loop().get_debug()
print("run", oxloop.run(main()))
"""


def probe(*args, **env):
    proc = run_python(PROBE, *args, env=clean_env(**env))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_debug_is_off_by_default():
    assert probe() == ["new_event_loop", "False", "run", "False"]


def test_pythonasynciodebug_turns_debug_on():
    assert probe(PYTHONASYNCIODEBUG="1") == ["new_event_loop", "True", "run", "True"]


def test_dev_mode_turns_debug_on():
    assert probe("-X", "dev") == ["new_event_loop", "True", "run", "True"]


def test_pythonasynciodebug_is_ignored_with_dash_e():
    assert probe("-E", PYTHONASYNCIODEBUG="1") == ["new_event_loop", "False", "run", "False"]


def test_set_debug_round_trip(any_loop):
    assert any_loop.get_debug() is False
    any_loop.set_debug(True)
    assert any_loop.get_debug() is True
    seen = []
    any_loop.call_soon(lambda: seen.append(any_loop.get_debug()))
    run_forever_once(any_loop)
    assert seen == [True]
    any_loop.set_debug(False)
    assert any_loop.get_debug() is False


def test_slow_callback_duration_default(any_loop):
    assert any_loop.slow_callback_duration == 0.1


SLOW_RE = re.compile(r"^Executing <.*> took \d+\.\d{3} seconds$", re.DOTALL)


def test_slow_callback_is_logged_in_debug_mode(any_loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    any_loop.set_debug(True)
    any_loop.slow_callback_duration = 0.02

    def slow_callback():
        time.sleep(0.05)

    any_loop.call_soon(slow_callback)
    run_forever_once(any_loop)
    records = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert SLOW_RE.match(msg), msg
    assert "slow_callback" in msg


def test_slow_task_step_is_logged_in_debug_mode(any_loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    any_loop.set_debug(True)
    any_loop.slow_callback_duration = 0.02

    async def slow_step():
        time.sleep(0.05)  # a deliberately blocking task step

    any_loop.run_until_complete(slow_step())
    msgs = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno == logging.WARNING
    ]
    assert any(SLOW_RE.match(m) and "slow_step" in m for m in msgs), msgs


def test_slow_callback_is_not_logged_without_debug(any_loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    any_loop.slow_callback_duration = 0.001
    any_loop.call_soon(time.sleep, 0.02)
    run_forever_once(any_loop)
    assert not [r for r in caplog.records if r.getMessage().startswith("Executing ")]


def test_fast_callback_is_not_logged_in_debug_mode(any_loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    any_loop.set_debug(True)
    any_loop.slow_callback_duration = LIVENESS
    any_loop.call_soon(lambda: None)
    run_forever_once(any_loop)
    assert not [r for r in caplog.records if r.getMessage().startswith("Executing ")]


def test_debug_mode_rejects_cross_thread_call_soon(any_loop):
    any_loop.set_debug(True)
    errors = []
    done = any_loop.create_future()

    def from_thread():
        try:
            any_loop.call_soon(lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))
        any_loop.call_soon_threadsafe(done.set_result, None)

    any_loop.call_soon(lambda: threading.Thread(target=from_thread).start())
    run(any_loop, done)
    assert errors == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_mode_rejects_coroutines_as_callbacks(any_loop, method):
    any_loop.set_debug(True)

    async def coro_func():
        pass

    args = {
        "call_soon": (),
        "call_later": (1,),
        "call_at": (any_loop.time() + 1,),
        "call_soon_threadsafe": (),
    }[method]
    # stock call_later delegates to call_at, so its message names call_at
    name = "call_at" if method == "call_later" else method
    with pytest.raises(TypeError, match=rf"coroutines cannot be used with {name}\(\)"):
        getattr(any_loop, method)(*args, coro_func)


def test_debug_mode_rejects_non_callables(any_loop):
    any_loop.set_debug(True)
    with pytest.raises(TypeError, match=r"a callable object was expected by call_soon\(\)"):
        any_loop.call_soon(42)


def test_debug_mode_enables_coroutine_origin_tracking(any_loop):
    any_loop.set_debug(True)
    before = sys.get_coroutine_origin_tracking_depth()
    seen = []
    any_loop.call_soon(lambda: seen.append(sys.get_coroutine_origin_tracking_depth()))
    run_forever_once(any_loop)
    assert seen[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_debug_handles_record_where_they_were_created(any_loop):
    any_loop.set_debug(True)
    contexts = []
    any_loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

    def bad():
        raise ValueError

    any_loop.call_soon(bad)
    run_forever_once(any_loop)
    assert len(contexts) == 1
    text = "".join(traceback.format_list(contexts[0]["source_traceback"]))
    assert "test_debug_handles_record_where_they_were_created" in text


def test_debug_log_shows_where_the_failing_callback_was_scheduled(any_loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    any_loop.set_debug(True)

    def bad():
        raise ValueError("debug-logged")

    any_loop.call_soon(bad)
    run_forever_once(any_loop)
    records = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.ERROR]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert "\nsource_traceback: Object created at (most recent call last):\n" in msg
    assert "test_debug_log_shows_where_the_failing_callback_was_scheduled" in msg


def test_debug_log_adds_the_current_handle_traceback(any_loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    any_loop.set_debug(True)

    def report():
        any_loop.call_exception_handler({"message": "from inside a callback"})

    any_loop.call_soon(report)
    run_forever_once(any_loop)
    records = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.ERROR]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith("from inside a callback\nhandle_traceback: Handle created at")
    assert "test_debug_log_adds_the_current_handle_traceback" in msg


def test_debug_mode_rejects_coroutines_in_run_in_executor(any_loop):
    any_loop.set_debug(True)

    async def coro_func():
        pass

    with pytest.raises(TypeError, match=r"coroutines cannot be used with run_in_executor\(\)"):
        any_loop.run_in_executor(None, coro_func)


LOOP_CODE = (os.path.dirname(asyncio.__file__), os.path.dirname(oxloop.__file__))


def _schedule_deep(lp, method, depth=15):
    # Deeper than asyncio's 10-frame capture limit, so truncation differences show.
    if depth:
        return _schedule_deep(lp, method, depth - 1)
    if method == "call_soon":
        return lp.call_soon(_fail)
    if method == "call_soon_threadsafe":
        return lp.call_soon_threadsafe(_fail)
    if method == "call_later":
        return lp.call_later(0, _fail)
    if method == "add_reader":
        a, b = socket.socketpair()
        lp.add_reader(a, _fail_once, lp, a, b)
        b.send(b"x")
        return None
    if method == "add_signal_handler":
        lp.add_signal_handler(signal.SIGUSR1, _fail)
        lp.call_soon(signal.raise_signal, signal.SIGUSR1)
        return None
    return lp.call_at(lp.time(), _fail)


def _fail():
    raise ValueError("traced")


def _fail_once(lp, a, b):
    lp.remove_reader(a)
    a.close()
    b.close()
    _fail()


@pytest.mark.parametrize(
    "method",
    [
        "call_soon",
        "call_soon_threadsafe",
        "call_later",
        "call_at",
        "add_reader",
        "add_signal_handler",
    ],
)
def test_debug_source_traceback_matches_stock(loop, method):
    stock = make_loop("stock")
    try:
        traces = []
        for lp in (loop, stock):
            lp.set_debug(True)
            contexts = []
            lp.set_exception_handler(lambda _loop, ctx, out=contexts: out.append(ctx))
            done = lp.create_future()
            _schedule_deep(lp, method)
            lp.call_later(0.01, done.set_result, None)
            run(lp, done)
            lp.remove_signal_handler(signal.SIGUSR1)
            assert len(contexts) == 1
            # Stock keeps its own add_reader/add_signal_handler frames; compare user frames.
            traces.append(
                [
                    (f.name, f.lineno)
                    for f in contexts[0]["source_traceback"]
                    if not f.filename.startswith(LOOP_CODE)
                ]
            )
        assert traces[0] == traces[1]
    finally:
        stock.close()
