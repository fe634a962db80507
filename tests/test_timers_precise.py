"""Correctness tests of precise (sub-millisecond) timers: never early, ordered, re-armed right.

No speed assertions: lateness is measured by bench/timer_lateness.py, not here.
"""

import asyncio
import math
import random
import socket
import threading
import time

import pytest
from support import LIVENESS, Watchdog, is_stock, open_fds, run

import oxloop

# Sub-millisecond and low-millisecond delays: the range where epoll's 1 ms timeout is too coarse.
SUB_MS_DELAYS = (0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002)


def early_slack(loop):
    """How early a timer may fire: never for oxloop; stock pops timers due within its clock
    resolution (1 ns on Linux)."""
    return loop._clock_resolution if is_stock(loop) else 0.0


def assert_never_early(loop, fired):
    slack = early_slack(loop)
    early = [(when, at) for when, at in fired if at < when - slack]
    assert early == [], f"{len(early)} of {len(fired)} timers fired early: {early[:5]}"


# -- never before the deadline -------------------------------------------------------------------


def test_batch_of_sub_ms_timers_never_fires_early(any_loop):
    fired = []
    handles = []
    done = any_loop.create_future()

    def record(i):
        fired.append((handles[i].when(), any_loop.time()))

    for _ in range(10):
        for delay in SUB_MS_DELAYS:
            any_loop.call_later(delay, lambda: None).cancel()  # cancelled ones mixed in
            handles.append(any_loop.call_later(delay, record, len(handles)))
    any_loop.call_later(0.01, done.set_result, None)
    run(any_loop, done)
    assert len(fired) == len(handles)
    assert_never_early(any_loop, fired)


def test_chained_sub_ms_call_later_never_fires_early(any_loop):
    # One timer at a time: the loop sleeps right up to each deadline, the path a precise
    # wake-up (timerfd) takes.
    fired = []
    handles = []
    done = any_loop.create_future()
    count = 300

    def tick(i):
        fired.append((handles[i].when(), any_loop.time()))
        if i + 1 == count:
            done.set_result(None)
        else:
            delay = SUB_MS_DELAYS[(i + 1) % len(SUB_MS_DELAYS)]
            handles.append(any_loop.call_later(delay, tick, i + 1))

    handles.append(any_loop.call_later(SUB_MS_DELAYS[0], tick, 0))
    run(any_loop, done)
    assert len(fired) == count
    assert_never_early(any_loop, fired)


def test_call_later_handle_when_is_respected_inside_the_callback(any_loop):
    # The spec's own check: loop.time() >= handle.when() inside the callback.
    seen = []
    done = any_loop.create_future()
    handles = {}

    def tick(i):
        seen.append((handles[i].when(), any_loop.time()))
        if i + 1 == 200:
            done.set_result(None)
        else:
            handles[i + 1] = any_loop.call_later(SUB_MS_DELAYS[i % 9], tick, i + 1)

    handles[0] = any_loop.call_later(0.0001, tick, 0)
    run(any_loop, done)
    assert len(seen) == 200
    assert_never_early(any_loop, seen)


def test_fixed_rate_call_at_never_fires_early(any_loop):
    # next deadline = previous deadline + period, as a 2 kHz ticker does; if the loop falls
    # behind, deadlines are in the past and fire at once, still never early.
    fired = []
    done = any_loop.create_future()
    period = 0.0005
    count = 400

    def tick(when, i):
        fired.append((when, any_loop.time()))
        if i == count:
            done.set_result(None)
        else:
            any_loop.call_at(when + period, tick, when + period, i + 1)

    start = any_loop.time() + period
    any_loop.call_at(start, tick, start, 1)
    run(any_loop, done)
    assert len(fired) == count
    assert_never_early(any_loop, fired)


def test_sleep_loop_wakes_after_each_deadline(any_loop):
    slack = early_slack(any_loop)

    async def main():
        early = []
        for _ in range(200):
            t0 = any_loop.time()
            await asyncio.sleep(0.0005)
            woke = any_loop.time()
            if woke < t0 + 0.0005 - slack:
                early.append(woke - t0)
        return early

    assert run(any_loop, main()) == []


@pytest.mark.parametrize("delay", [1e-9, 1e-7, 1e-6, 5e-6])
def test_tiny_delays_fire_and_not_early(any_loop, delay):
    fired = []
    handles = []
    done = any_loop.create_future()

    def record(i):
        fired.append((handles[i].when(), any_loop.time()))

    for i in range(20):
        handles.append(any_loop.call_later(delay, record, i))
    any_loop.call_later(0.005, done.set_result, None)
    run(any_loop, done)
    assert len(fired) == 20
    assert_never_early(any_loop, fired)


def test_timers_are_not_run_early_by_fd_wakeups(any_loop):
    # A reader keeps waking the poll at arbitrary moments before the deadlines: each wake-up
    # must not run a timer that is not yet due.
    a, b = socket.socketpair()
    a.setblocking(False)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            try:
                b.send(b"x")
            except OSError:
                return
            time.sleep(0.0003)

    def drain():
        try:
            a.recv(4096)
        except BlockingIOError:
            pass

    fired = []
    done = any_loop.create_future()

    def tick(when, i):
        fired.append((when, any_loop.time()))
        if i == 150:
            done.set_result(None)
        else:
            nxt = any_loop.time() + SUB_MS_DELAYS[i % 9]
            any_loop.call_at(nxt, tick, nxt, i + 1)

    any_loop.add_reader(a.fileno(), drain)
    t = threading.Thread(target=writer)
    t.start()
    try:
        first = any_loop.time() + 0.001
        any_loop.call_at(first, tick, first, 1)
        run(any_loop, done)
    finally:
        stop.set()
        t.join(LIVENESS)
        any_loop.remove_reader(a.fileno())
        a.close()
        b.close()
    assert len(fired) == 150
    assert_never_early(any_loop, fired)


# -- ordering ------------------------------------------------------------------------------------


def test_close_deadlines_fire_in_deadline_order(any_loop):
    order = []
    done = any_loop.create_future()
    base = any_loop.time() + 0.001
    idx = list(range(60))
    random.Random(1234).shuffle(idx)
    for i in idx:
        any_loop.call_at(base + i * 1e-6, order.append, i)  # 1 µs apart, scheduled shuffled
    any_loop.call_at(base + 0.001, done.set_result, None)
    run(any_loop, done)
    assert order == list(range(60))


def test_deadlines_spread_over_several_wakeups_fire_in_order(any_loop):
    fired = []
    done = any_loop.create_future()
    base = any_loop.time() + 0.0005
    idx = list(range(40))
    random.Random(99).shuffle(idx)
    for i in idx:
        when = base + i * 50e-6  # 50 µs apart: 2 ms in all
        any_loop.call_at(when, lambda i=i, when=when: fired.append((i, when, any_loop.time())))
    any_loop.call_at(base + 0.003, done.set_result, None)
    run(any_loop, done)
    assert [i for i, _, _ in fired] == list(range(40))
    assert_never_early(any_loop, [(when, at) for _, when, at in fired])


def test_equal_deadlines_fire_in_scheduling_order(loop):
    # oxloop orders equal deadlines by insertion (stock's heap does not promise it).
    order = []
    done = loop.create_future()
    when = loop.time() + 0.0007
    for i in range(50):
        loop.call_at(when, order.append, i)
    loop.call_at(when, done.set_result, None)
    run(loop, done)
    assert order == list(range(50))


# -- bunched timers share a wake-up --------------------------------------------------------------


def _iterations_at_each(loop, offsets, cancel=()):
    """Schedule a timer at each `offsets[i]` seconds from a base 5 ms ahead; return the
    loop iteration each ran in (`loop.stats()["iterations"]`), None for cancelled ones."""
    seen = [None] * len(offsets)
    done = loop.create_future()
    base = loop.time() + 0.005

    def record(i):
        seen[i] = loop.stats()["iterations"]

    handles = [loop.call_at(base + off, record, i) for i, off in enumerate(offsets)]
    for i in cancel:
        handles[i].cancel()
    loop.call_at(base + max(offsets) + 0.001, done.set_result, None)
    run(loop, done)
    return seen


def test_timers_due_within_the_slack_share_one_wake_up(loop):
    # 20 µs apart: one wake-up at the later deadline runs both (neither early). (That a
    # timer 3 ms later gets its own wake-up is not asserted: a loaded machine may wake the
    # loop late enough for any two timers to share one.)
    first, second, _ = _iterations_at_each(loop, [0.0, 20e-6, 0.003])
    assert first == second


def test_a_cancelled_timer_in_the_window_is_skipped_and_the_rest_still_share(loop):
    seen = _iterations_at_each(loop, [0.0, 40e-6, 0.002, 0.002 + 30e-6], cancel=[1])
    assert seen[1] is None
    assert seen[2] == seen[3]


def test_bunched_timers_never_fire_early_and_keep_their_order(any_loop):
    fired = []
    done = any_loop.create_future()
    base = any_loop.time() + 0.002
    offsets = [i * 7e-6 for i in range(30)] + [0.001 + i * 13e-6 for i in range(30)]
    for i, off in enumerate(offsets):
        when = base + off
        any_loop.call_at(when, lambda i=i, when=when: fired.append((i, when, any_loop.time())))
    any_loop.call_at(base + 0.004, done.set_result, None)
    run(any_loop, done)
    assert [i for i, _, _ in fired] == list(range(60))
    assert_never_early(any_loop, [(when, at) for _, when, at in fired])


# -- cancellation and re-arming ------------------------------------------------------------------


def test_cancelled_earliest_timer_neither_fires_nor_blocks_the_next(any_loop):
    ran = []
    done = any_loop.create_future()
    base = any_loop.time()
    early = any_loop.call_at(base + 0.0005, ran.append, "early")
    late = any_loop.call_at(base + 0.001, lambda: (ran.append("late"), done.set_result(None)))
    early.cancel()
    run(any_loop, done)
    assert ran == ["late"]
    assert early.cancelled()
    assert not late.cancelled()


def test_cancelling_the_armed_timer_while_waiting_still_fires_the_next(any_loop):
    # The loop is asleep until `first`; a callback cancels it before it is due, so the loop
    # must wake for `second` instead.
    ran = []
    done = any_loop.create_future()
    first = any_loop.call_later(0.05, ran.append, "first")
    second = any_loop.call_later(0.1, lambda: (ran.append("second"), done.set_result(None)))
    any_loop.call_later(0.01, first.cancel)
    run(any_loop, done)
    assert ran == ["second"]
    assert any_loop.time() >= second.when() - early_slack(any_loop)


def test_cancelling_the_only_timer_leaves_the_loop_wakeable(any_loop):
    ran = []
    fut = any_loop.create_future()
    only = any_loop.call_later(0.002, ran.append, "only")
    any_loop.call_soon(only.cancel)

    def poke():
        time.sleep(0.05)  # after the cancelled deadline has passed
        any_loop.call_soon_threadsafe(fut.set_result, "poked")

    t = threading.Thread(target=poke)
    t.start()
    assert run(any_loop, fut) == "poked"
    t.join(LIVENESS)
    assert ran == []


def test_earlier_timer_added_while_a_later_one_is_armed_fires_first(any_loop):
    # The loop arms its wake-up for `late` (far away); a callback then adds an earlier timer,
    # which must not wait for `late`'s deadline.
    got = any_loop.create_future()
    late = any_loop.call_later(LIVENESS, lambda: None)

    def add_early():
        any_loop.call_later(0.0005, lambda: got.set_result(any_loop.time()))

    any_loop.call_later(0.005, add_early)
    fired_at = run(any_loop, got)
    assert fired_at < late.when()
    late.cancel()


def test_timer_scheduled_from_another_thread_fires(any_loop):
    got = any_loop.create_future()
    watchdog = Watchdog(any_loop, got)
    seen = {}

    def schedule():
        time.sleep(0.02)  # the loop is asleep on the watchdog's far timer by now

        def make_timer():
            seen["handle"] = any_loop.call_later(
                0.0005, lambda: got.set_result(any_loop.time()) if not got.done() else None
            )

        any_loop.call_soon_threadsafe(make_timer)

    t = threading.Thread(target=schedule)
    t.start()
    fired_at = run(any_loop, got)
    t.join(LIVENESS)
    assert not watchdog.fired
    watchdog.cancel()
    assert fired_at >= seen["handle"].when() - early_slack(any_loop)


def test_timer_survives_stop_and_fires_on_the_next_run(any_loop):
    fired = []
    h = any_loop.call_later(0.05, lambda: fired.append(any_loop.time()))
    any_loop.call_later(0.001, any_loop.stop)
    any_loop.run_forever()  # stops with `h` armed and pending
    assert fired == []
    time.sleep(0.06)  # its deadline passes while the loop is not running
    done = any_loop.create_future()
    any_loop.call_later(0.01, done.set_result, None)
    run(any_loop, done)
    assert len(fired) == 1
    assert fired[0] >= h.when()


@pytest.mark.parametrize("when", [math.inf, 1e12, -1e12], ids=["inf", "far", "far-past"])
def test_extreme_deadlines_do_not_break_near_timers(any_loop, when):
    ran = []
    extreme = any_loop.call_at(when, ran.append, "extreme")
    done = any_loop.create_future()
    near = any_loop.call_later(0.001, done.set_result, None)
    run(any_loop, done)
    assert any_loop.time() >= near.when() - early_slack(any_loop)
    if when < 0:
        assert ran == ["extreme"]
    else:
        assert ran == []
        extreme.cancel()


def test_huge_delay_call_later_does_not_fire(any_loop):
    ran = []
    h = any_loop.call_later(1e9, ran.append, "never")
    done = any_loop.create_future()
    any_loop.call_later(0.02, done.set_result, None)
    run(any_loop, done)
    assert ran == []
    h.cancel()


# -- resources -----------------------------------------------------------------------------------


def test_loops_with_pending_precise_timers_close_without_leaking_fds():
    before = open_fds()
    for _ in range(20):
        lp = oxloop.new_event_loop()
        done = lp.create_future()
        lp.call_later(0.0005, done.set_result, None)
        lp.call_later(100, lambda: None)  # still armed-for-later at close
        run(lp, done)
        lp.close()
    assert open_fds() == before
