"""Tests of signals: add/remove_signal_handler, wake-ups on signals, SIGINT/KeyboardInterrupt."""

import asyncio
import os
import signal
import sys
import threading
import time

import pytest
from support import LIVENESS, Watchdog, make_loop, run, run_forever_once, run_python

SIGS = (signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def safe_signals():
    """Never let a stray SIGUSR1/2 kill the test process; restore dispositions afterwards."""
    saved = {s: signal.getsignal(s) for s in SIGS + (signal.SIGINT,)}
    for s in SIGS:
        signal.signal(s, lambda *_: None)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(-1)


def kill_main_later(sig, delay, started=None):
    """From a helper thread, send ``sig`` to the main thread ``delay`` s after ``started``."""

    def go():
        if started is not None:
            assert started.wait(LIVENESS)
        time.sleep(delay)
        signal.pthread_kill(threading.main_thread().ident, sig)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_signal_handler_runs_as_a_loop_callback(any_loop):
    got = any_loop.create_future()

    def on_signal(*args):
        got.set_result((args, asyncio.get_running_loop() is any_loop))

    any_loop.add_signal_handler(signal.SIGUSR1, on_signal, "a", 2)
    any_loop.call_soon(signal.raise_signal, signal.SIGUSR1)
    assert run(any_loop, got) == (("a", 2), True)


def run_until_signalled(loop, got, started, sig):
    """Block the loop on `got`, send `sig` to the main thread once it runs, return the result.

    Fails if the loop only woke up because the liveness watchdog fired.
    """
    watchdog = Watchdog(loop, got)
    loop.call_soon(started.set)
    t = kill_main_later(sig, 0.1, started)
    try:
        result = loop.run_until_complete(got)
        assert not watchdog.fired
        return result
    finally:
        watchdog.cancel()
        t.join(LIVENESS)


def test_signal_wakes_a_blocked_loop(any_loop):
    got = any_loop.create_future()
    started = threading.Event()
    any_loop.add_signal_handler(signal.SIGUSR1, lambda: got.set_result("signalled"))
    assert run_until_signalled(any_loop, got, started, signal.SIGUSR1) == "signalled"


def test_signal_from_another_thread_with_os_kill(any_loop):
    got = any_loop.create_future()
    any_loop.add_signal_handler(signal.SIGUSR2, lambda: got.set_result("ok"))
    watchdog = Watchdog(any_loop, got)
    any_loop.call_soon(
        lambda: threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR2)).start()
    )
    try:
        assert any_loop.run_until_complete(got) == "ok"
        assert not watchdog.fired
    finally:
        watchdog.cancel()


def test_add_signal_handler_replaces_the_previous_one(any_loop):
    calls = []
    done = any_loop.create_future()
    any_loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")

    def second():
        calls.append("second")
        done.set_result(None)

    any_loop.add_signal_handler(signal.SIGUSR1, second)
    any_loop.call_soon(signal.raise_signal, signal.SIGUSR1)
    run(any_loop, done)
    assert calls == ["second"]


def test_remove_signal_handler_return_values_and_restores_default(any_loop):
    assert any_loop.remove_signal_handler(signal.SIGUSR1) is False
    any_loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert any_loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert any_loop.remove_signal_handler(signal.SIGUSR1) is False


def test_removing_the_sigint_handler_restores_default_int_handler(any_loop):
    any_loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert any_loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_removed_handler_is_not_called(any_loop):
    calls = []
    any_loop.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    any_loop.remove_signal_handler(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, lambda *_: None)  # keep the process alive
    signal.raise_signal(signal.SIGUSR1)
    run(any_loop, asyncio.sleep(0.02))
    assert calls == []


def test_close_removes_signal_handlers(any_loop):
    any_loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    any_loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    any_loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_signal_handler_errors(any_loop):
    async def coro_func():
        pass

    with pytest.raises(TypeError, match="sig must be an int"):
        any_loop.add_signal_handler("SIGUSR1", lambda: None)
    with pytest.raises(ValueError, match="invalid signal number"):
        any_loop.add_signal_handler(0x7FFF, lambda: None)
    with pytest.raises(ValueError, match="invalid signal number"):
        any_loop.remove_signal_handler(0x7FFF)
    with pytest.raises(RuntimeError, match=f"sig {int(signal.SIGKILL)} cannot be caught"):
        any_loop.add_signal_handler(signal.SIGKILL, lambda: None)
    with pytest.raises(TypeError, match="coroutines cannot be used with add_signal_handler"):
        any_loop.add_signal_handler(signal.SIGUSR1, coro_func)
    assert signal.set_wakeup_fd(-1) == -1


def test_add_signal_handler_on_closed_loop(any_loop):
    any_loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.add_signal_handler(signal.SIGUSR1, lambda: None)


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_add_signal_handler_outside_the_main_thread_raises(kind):
    errors = []

    def worker():
        lp = make_loop(kind)
        try:
            lp.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            lp.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join(LIVENESS)
    assert len(errors) == 1
    assert "main thread" in str(errors[0])


def test_python_signal_handler_runs_while_the_loop_is_blocked(any_loop):
    got = any_loop.create_future()
    started = threading.Event()

    def handler(signum, frame):
        any_loop.call_soon_threadsafe(lambda: got.done() or got.set_result("handled"))

    signal.signal(signal.SIGUSR2, handler)
    assert run_until_signalled(any_loop, got, started, signal.SIGUSR2) == "handled"


def test_exception_from_python_signal_handler_propagates(any_loop):
    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    signal.signal(signal.SIGUSR2, handler)
    started = threading.Event()
    fired = []
    watchdog = any_loop.call_later(LIVENESS, lambda: fired.append(any_loop.stop()))
    any_loop.call_soon(started.set)
    t = kill_main_later(signal.SIGUSR2, 0.1, started)
    try:
        with pytest.raises(Interrupted):
            any_loop.run_forever()
        assert fired == []
    finally:
        watchdog.cancel()
        t.join(LIVENESS)
    assert not any_loop.is_running()
    signal.signal(signal.SIGUSR2, lambda *_: None)
    run_forever_once(any_loop)


# -- SIGINT and KeyboardInterrupt, in a subprocess ---------------------------------------------

SIGINT_PRELUDE = """
import asyncio, signal, sys, threading, time
import oxloop

def interrupt_soon():
    def go():
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    threading.Thread(target=go, daemon=True).start()

async def main():
    interrupt_soon()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        print("main-cancelled", flush=True)
        raise
"""

RUNNERS = {
    "oxloop.run": "oxloop.run(main())",
    "installed-policy": "oxloop.install(); asyncio.run(main())",
    "stock-asyncio.run": "asyncio.run(main())",
}
if sys.version_info >= (3, 12):
    RUNNERS["loop_factory"] = "asyncio.run(main(), loop_factory=oxloop.new_event_loop)"


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_sigint_raises_keyboard_interrupt_from_run(runner):
    code = (
        SIGINT_PRELUDE
        + f"""
try:
    {RUNNERS[runner]}
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
else:
    print("returned normally", flush=True)
"""
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["main-cancelled", "KeyboardInterrupt"], proc.stderr


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_sigint_interrupts_run_forever(kind):
    factory = "oxloop.new_event_loop()" if kind == "oxloop" else "asyncio.SelectorEventLoop()"
    code = (
        SIGINT_PRELUDE
        + f"""
loop = {factory}
loop.call_soon(interrupt_soon)
try:
    loop.run_forever()
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print("running" if loop.is_running() else "stopped", flush=True)
loop.close()
"""
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["KeyboardInterrupt", "stopped"], proc.stderr


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_sigint_with_loop_signal_handler_calls_it_instead(kind):
    factory = "oxloop.new_event_loop()" if kind == "oxloop" else "asyncio.SelectorEventLoop()"
    code = (
        SIGINT_PRELUDE
        + f"""
loop = {factory}
fut = loop.create_future()
loop.add_signal_handler(signal.SIGINT, fut.set_result, "handled")
loop.call_soon(interrupt_soon)
print(loop.run_until_complete(fut), flush=True)
loop.close()
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
"""
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["handled", "True"], proc.stderr
