"""Tests that scheduled handles never keep garbage alive.

oxloop hides the handles it holds (queued callbacks, pending timers) from the cycle
collector and shows them again when it lets go if anyone else still holds them; these
tests check that every cycle through a handle is still collected, as with the stock loop.
"""

import asyncio
import gc
import weakref

import pytest
from support import is_stock, make_loop, run, run_forever_once


class Holder:
    """An object that keeps the handle of its own bound method: a reference cycle."""

    def method(self):
        self.ran = True


def collected(ref):
    gc.collect()
    return ref() is None


def test_cycle_through_a_run_call_soon_handle_is_collected(any_loop):
    obj = Holder()
    obj.handle = any_loop.call_soon(obj.method)
    run_forever_once(any_loop)
    assert obj.ran
    ref = weakref.ref(obj)
    del obj
    assert collected(ref)


def test_cycle_through_a_cancelled_timer_is_collected(any_loop):
    obj = Holder()
    obj.handle = any_loop.call_later(3600, obj.method)
    obj.handle.cancel()
    run_forever_once(any_loop)
    ref = weakref.ref(obj)
    del obj
    assert collected(ref)


def test_cycle_through_a_fired_timer_is_collected(any_loop):
    obj = Holder()
    obj.handle = any_loop.call_later(0, obj.method)
    run(any_loop, asyncio.sleep(0.01))
    assert obj.ran
    ref = weakref.ref(obj)
    del obj
    assert collected(ref)


def test_cycle_through_a_timer_pending_at_close_is_collected(any_loop):
    obj = Holder()
    obj.handle = any_loop.call_later(3600, obj.method)
    any_loop.close()
    ref = weakref.ref(obj)
    del obj
    assert collected(ref)


def test_cycle_through_a_cancelled_queued_handle_is_collected(any_loop):
    obj = Holder()
    obj.handle = any_loop.call_soon(obj.method)
    obj.handle.cancel()
    run_forever_once(any_loop)
    ref = weakref.ref(obj)
    del obj
    assert collected(ref)


def test_handles_are_tracked_again_once_the_loop_lets_go(any_loop):
    soon = any_loop.call_soon(lambda: None)
    timer = any_loop.call_later(0, lambda: None)
    if not is_stock(any_loop):
        # While the loop holds them they are hidden from the collector.
        assert not gc.is_tracked(soon)
        assert not gc.is_tracked(timer)
    run(any_loop, asyncio.sleep(0.01))
    assert gc.is_tracked(soon)
    assert gc.is_tracked(timer)


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_cycle_through_the_loops_own_state_is_collected(kind):
    # The exception handler and the task factory are the loop's own state (oxloop keeps
    # the handler in a slot): a cycle through them back to the loop is still collected.
    ref = _loop_in_a_cycle(kind)
    assert collected(ref)


def _loop_in_a_cycle(kind):
    loop = make_loop(kind)
    holder = Holder()
    holder.loop = loop
    loop.set_exception_handler(lambda lp, ctx, holder=holder: None)
    loop.set_task_factory(lambda lp, coro, holder=holder: asyncio.Task(coro, loop=lp))
    loop.close()
    return weakref.ref(loop)


def test_code_can_still_set_attributes_on_a_loop(any_loop):
    any_loop.custom = 1
    assert any_loop.custom == 1
    assert any_loop.__dict__["custom"] == 1
    del any_loop.custom
    assert not hasattr(any_loop, "custom")
