"""Helpers shared by the test modules: loop makers, liveness-bounded runs, subprocess runs."""

import asyncio
import contextvars
import os
import subprocess
import sys

import oxloop

# Generous upper bound for things that must happen "soon". A liveness guard, never a speed check.
LIVENESS = 10.0

# A context variable for the contextvars-propagation tests.
VAR = contextvars.ContextVar("VAR", default="default")

# Handle.get_context() / Task.get_context() exist in stock asyncio from 3.12 on.
STOCK_HAS_GET_CONTEXT = sys.version_info >= (3, 12)

# CPython 3.13.0's run_forever() resets the running-loop state even when its own "already
# running" check fails, so stock re-entry checks can't be compared on that exact release.
STOCK_REENTRY_BROKEN = sys.version_info[:3] == (3, 13, 0)


def make_loop(kind):
    """Return a new loop of the given kind: 'oxloop' or 'stock' (asyncio.SelectorEventLoop)."""
    if kind == "oxloop":
        return oxloop.new_event_loop()
    if kind == "stock":
        return asyncio.SelectorEventLoop()
    raise ValueError(kind)


def is_stock(loop):
    """True if ``loop`` is the stock asyncio loop rather than an oxloop one."""
    return not isinstance(loop, oxloop.Loop)


def close_loop(loop):
    """Close ``loop`` unless it is closed already."""
    if not loop.is_closed():
        loop.close()


def run(loop, aw, timeout=LIVENESS):
    """Run ``aw`` to completion on ``loop`` with a liveness timeout."""
    return loop.run_until_complete(asyncio.wait_for(aw, timeout))


def run_forever_once(loop):
    """Run one ``run_forever`` pass: everything already queued runs, then the loop stops."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def clean_env(**extra):
    """The current environment minus asyncio debug switches, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS")
    }
    env.update(extra)
    return env


def run_python(code, *args, env=None, timeout=60):
    """Run ``code`` in a fresh interpreter (same Python, same oxloop); return CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
    )


def open_fds():
    """The set of file descriptors open in this process."""
    return set(os.listdir("/proc/self/fd"))


def os_thread_count():
    """Number of OS threads in this process (sees Rust threads too, not only Python ones)."""
    return len(os.listdir("/proc/self/task"))


class Watchdog:
    """Liveness guard: a far-off timer that completes ``fut`` and records that it had to fire.

    A test that waits for a wake-up asserts ``not watchdog.fired``: if the loop only woke
    because this timer expired, the wake-up under test never happened.
    """

    def __init__(self, loop, fut, timeout=LIVENESS):
        self.fired = False

        def fire():
            self.fired = True
            if not fut.done():
                fut.set_result("watchdog")

        self.handle = loop.call_later(timeout, fire)

    def cancel(self):
        self.handle.cancel()
