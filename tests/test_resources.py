"""Tests that loops release what they hold: no leaked fds or threads after close(), GC warnings."""

import asyncio
import gc
import signal
import socket
import time
import warnings
import weakref

import pytest
from support import LIVENESS, open_fds, os_thread_count, run

import oxloop


def settle(predicate):
    """Wait (bounded by LIVENESS) for ``predicate`` to hold; return its last value."""
    deadline = time.monotonic() + LIVENESS
    while True:
        gc.collect()
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def exercise(lp, *, executor=False, signals=False):
    """Use a loop's machinery a little, so close() has something to release."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:

        async def main():
            lp.call_later(3600, lambda: None)
            lp.add_writer(b, lambda: None)
            lp.call_soon_threadsafe(lambda: None)
            b.send(b"x")
            data = await lp.sock_recv(a, 1)
            lp.remove_writer(b)
            if executor:
                await lp.run_in_executor(None, sum, [1, 2])
            return data

        if signals:
            lp.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert run(lp, main()) == b"x"
    finally:
        a.close()
        b.close()


# The closed loops stay referenced while fds and threads are counted: close() itself must
# release them, not the garbage collector.


def test_no_fds_leak_after_close():
    gc.collect()
    before = open_fds()
    closed = []
    for _ in range(20):
        lp = oxloop.new_event_loop()
        exercise(lp)
        lp.close()
        closed.append(lp)
    gc.collect()
    after = open_fds()
    assert after - before == set()
    assert len(after) <= len(before)


def test_no_fds_leak_with_signal_handlers():
    gc.collect()
    before = open_fds()
    closed = []
    try:
        for _ in range(5):
            lp = oxloop.new_event_loop()
            exercise(lp, signals=True)
            lp.close()
            closed.append(lp)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    gc.collect()
    assert open_fds() - before == set()


def test_no_fds_leak_from_unused_loops():
    gc.collect()
    before = open_fds()
    loops = [oxloop.new_event_loop() for _ in range(50)]
    for lp in loops:
        lp.close()
    gc.collect()
    assert open_fds() - before == set()


def test_no_threads_left_after_close():
    gc.collect()
    before = os_thread_count()
    closed = []
    for _ in range(5):
        lp = oxloop.new_event_loop()
        exercise(lp)
        lp.close()
        closed.append(lp)
    assert settle(lambda: os_thread_count() <= before), (os_thread_count(), before)


def test_executor_threads_end_after_close():
    gc.collect()
    before = os_thread_count()
    lp = oxloop.new_event_loop()
    exercise(lp, executor=True)
    lp.close()
    assert settle(lambda: os_thread_count() <= before), (os_thread_count(), before)


def test_executor_threads_end_after_run():
    gc.collect()
    before = os_thread_count()

    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            *(loop.run_in_executor(None, time.sleep, 0.01) for _ in range(8))
        )

    oxloop.run(main())
    assert settle(lambda: os_thread_count() <= before), (os_thread_count(), before)


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_unclosed_loop_warns_and_frees_fds_when_collected(kind):
    gc.collect()
    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lp = oxloop.new_event_loop() if kind == "oxloop" else asyncio.SelectorEventLoop()
        lp.run_until_complete(asyncio.sleep(0))
        del lp
        gc.collect()
    assert any(
        issubclass(w.category, ResourceWarning) and "unclosed event loop" in str(w.message)
        for w in caught
    ), [str(w.message) for w in caught]
    assert open_fds() - before == set()


def test_closed_loop_is_garbage_collected():
    lp = oxloop.new_event_loop()
    exercise(lp)
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None
