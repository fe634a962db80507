"""Tests that reusing spent timers (oxloop keeps fired TimerHandles for call_later and
call_at) is invisible."""

import asyncio
import contextvars
import gc
import weakref

from support import run

VAR = contextvars.ContextVar("timer_reuse_var", default="unset")


def _fire(loop, n=300):
    """Schedule and fire many throwaway timers (enough to cycle any timer pool)."""

    async def fire():
        done = loop.create_future()
        left = [n]

        def tick():
            left[0] -= 1
            if not left[0]:
                done.set_result(None)

        for i in range(n):
            if i % 2:
                loop.call_later(0, tick)
            else:
                loop.call_at(loop.time(), tick)
        await done

    run(loop, fire())


def test_a_fired_timer_the_caller_kept_is_never_reused(any_loop):
    got = []
    kept = any_loop.call_later(0, got.append, "kept")
    when = kept.when()
    run(any_loop, asyncio.sleep(0.01))
    _fire(any_loop)
    assert got == ["kept"]
    assert kept.when() == when
    assert kept._callback == got.append
    assert kept._args == ("kept",)
    assert not kept.cancelled()
    assert "append" in repr(kept)


def test_a_weakly_referenced_timer_is_never_reused(any_loop):
    got = []
    ref = weakref.ref(any_loop.call_later(0, got.append, 1))
    run(any_loop, asyncio.sleep(0.01))
    _fire(any_loop)
    timer = ref()
    assert timer is None or (timer._callback == got.append and timer._args == (1,))


def test_reused_timers_get_their_own_deadline_arguments_and_context(any_loop):
    got = []
    _fire(any_loop)

    async def schedule():
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        ctx.run(VAR.set, "ctx")
        start = loop.time()
        timers = [
            loop.call_later(0.002, lambda *a: got.append((a, VAR.get())), "later"),
            loop.call_at(start, lambda *a: got.append((a, VAR.get())), "at", context=ctx),
        ]
        whens = [t.when() for t in timers]
        assert whens[0] >= start + 0.002 and whens[1] == start
        assert timers[0] != timers[1] and not timers[0].cancelled()
        await asyncio.sleep(0.01)
        return timers, whens

    timers, whens = run(any_loop, schedule())
    assert sorted(got) == [(("at",), "ctx"), (("later",), "unset")]
    assert [t.when() for t in timers] == whens


def test_a_timer_cancelled_after_it_fired_does_not_cancel_a_later_one(any_loop):
    got = []

    async def main():
        loop = asyncio.get_running_loop()
        first = loop.call_later(0, got.append, 1)
        await asyncio.sleep(0.01)
        second = loop.call_later(0, got.append, 2)
        first.cancel()
        await asyncio.sleep(0.01)
        return second

    second = run(any_loop, main())
    assert got == [1, 2]
    assert not second.cancelled()


def test_a_timer_in_a_reference_cycle_is_still_collected(any_loop):
    class Box:
        pass

    box = Box()
    box.timer = any_loop.call_later(0, lambda b: None, box)
    ref = weakref.ref(box)
    del box
    run(any_loop, asyncio.sleep(0.01))
    _fire(any_loop)
    gc.collect()
    assert ref() is None


def test_arguments_of_fired_timers_are_released(any_loop):
    class Arg:
        pass

    arg = Arg()
    ref = weakref.ref(arg)
    any_loop.call_later(0, lambda a: None, arg)
    del arg
    run(any_loop, asyncio.sleep(0.01))
    assert ref() is None
