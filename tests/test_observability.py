"""Tests of oxloop's production observability: the stall watchdog and loop.stats() metrics."""

import asyncio
import ctypes
import gc
import logging
import os
import re
import socket
import threading
import time
import warnings
import weakref

import pytest
from support import LIVENESS, clean_env, os_thread_count, run, run_forever_once, run_python

import oxloop

# Stall threshold for the tests that want a stall reported, and how long those stalls last: the
# stall is several thresholds long so "still happening" and "over" are far apart.
THRESHOLD = 0.05
STALL = 0.3

# Threshold for the tests that want no report: far above anything a short callback takes, even
# on a loaded machine.
QUIET_THRESHOLD = 0.25

DURATION_RE = re.compile(r"(\d+\.\d{3}) s\b")


@pytest.fixture(autouse=True)
def no_stall_env(monkeypatch):
    """Every test starts without OXLOOP_STALL_MS, whatever the runner's environment says."""
    monkeypatch.delenv("OXLOOP_STALL_MS", raising=False)


def busy_wait(seconds):
    """Hold the loop thread (and, between switch intervals, the GIL) in a Python busy loop."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def sleepy_block(seconds):
    """Hold the loop thread in a blocking sleep (the GIL is released)."""
    time.sleep(seconds)


# libc through PyDLL: its calls keep the GIL held, like a long C-extension call.
LIBC_WITH_GIL = ctypes.PyDLL(None)


def gil_hog(seconds):
    """Hold the loop thread in C code that keeps the GIL (ctypes.PyDLL calls don't release it)."""
    LIBC_WITH_GIL.usleep(int(seconds * 1e6))


def wait_until(predicate, timeout=LIVENESS):
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.01)


class Reports:
    """A watchdog callback that keeps the reports it receives (from any thread)."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()
        self.ongoing = threading.Event()

    def __call__(self, report):
        with self.lock:
            self.items.append(report)
        if not report.finished:
            self.ongoing.set()

    def wait(self, n):
        """Wait (liveness-bounded) for ``n`` reports; return a snapshot of them."""
        wait_until(lambda: len(self.items) >= n)
        with self.lock:
            return list(self.items)


def watched_loop(loop, threshold=THRESHOLD):
    """Turn the watchdog on for ``loop`` with a collecting callback; return the collector."""
    reports = Reports()
    loop.set_stall_watchdog(threshold, callback=reports)
    return reports


def stall_then_stop(loop, blocker, seconds):
    """Run ``blocker(seconds)`` as one callback on ``loop``, then a short idle spell, then stop."""
    loop.call_soon(blocker, seconds)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()


def oxloop_records(caplog):
    return [r for r in caplog.records if r.name == "oxloop"]


def check_pair(reports, func_name, seconds, threshold=THRESHOLD):
    """The two reports of one stall of ``seconds`` inside function ``func_name``."""
    ongoing, finished = reports
    for r in reports:
        assert isinstance(r, oxloop.StallReport)
        assert isinstance(r.duration, float)
        assert isinstance(r.handle, str)
        assert isinstance(r.stack, str)
        assert type(r.thread_id) is int
        assert func_name in r.stack
    assert (ongoing.finished, finished.finished) == (False, True)
    assert ongoing.duration >= threshold
    assert finished.duration >= seconds
    assert finished.duration < seconds + LIVENESS
    assert ongoing.duration <= finished.duration
    assert ongoing.stack == finished.stack
    assert ongoing.handle == finished.handle
    assert ongoing.thread_id == finished.thread_id


# -- stall watchdog: reports ---------------------------------------------------------------------


def test_watchdog_is_off_by_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="oxloop")
    stall_then_stop(loop, sleepy_block, STALL)
    time.sleep(0.1)  # a late report from a watchdog thread would land here
    assert oxloop_records(caplog) == []


def test_stall_in_a_callback_is_reported_once_ongoing_and_once_finished(loop):
    reports = watched_loop(loop)
    stall_then_stop(loop, busy_wait, STALL)
    got = reports.wait(2)
    check_pair(got, "busy_wait", STALL)
    ongoing = got[0]
    assert "busy_wait" in ongoing.handle
    assert ongoing.task is None
    assert ongoing.task_name is None
    assert ongoing.thread_id == threading.get_ident()


def test_stall_in_a_blocking_sleep_is_reported(loop):
    reports = watched_loop(loop)
    stall_then_stop(loop, sleepy_block, STALL)
    check_pair(reports.wait(2), "sleepy_block", STALL)


def test_ongoing_report_arrives_while_the_stall_is_still_happening(loop):
    reports = watched_loop(loop)
    seen = []

    def block_until_reported():
        # Holds the loop until the watchdog has reported it: only a report made during the
        # stall can end it before the liveness bound.
        seen.append(reports.ongoing.wait(LIVENESS))

    loop.call_soon(block_until_reported)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    got = reports.wait(2)
    assert [r.finished for r in got] == [False, True]
    assert "block_until_reported" in got[0].stack


def test_exactly_two_reports_per_stall_even_with_idle_time_after(loop):
    reports = watched_loop(loop)

    async def main():
        sleepy_block(STALL)
        await asyncio.sleep(0.4)  # idle in the poll for many thresholds: not a stall

    run(loop, main())
    time.sleep(0.1)
    assert [r.finished for r in reports.wait(2)] == [False, True]
    time.sleep(0.1)
    assert len(reports.items) == 2


def test_two_separate_stalls_give_four_reports(loop):
    reports = watched_loop(loop)

    async def main():
        loop.call_soon(busy_wait, STALL)
        await asyncio.sleep(0.1)
        loop.call_soon(sleepy_block, STALL)
        await asyncio.sleep(0.1)

    run(loop, main())
    got = reports.wait(4)
    assert len(got) == 4
    check_pair(got[:2], "busy_wait", STALL)
    check_pair(got[2:], "sleepy_block", STALL)
    assert "sleepy_block" not in got[0].stack
    assert "busy_wait" not in got[2].stack


def test_stall_in_a_named_task_step_names_the_task(loop):
    reports = watched_loop(loop)

    async def slowpoke_body():
        await asyncio.sleep(0)
        busy_wait(STALL)  # the second step of the task stalls

    async def main():
        task = asyncio.create_task(slowpoke_body(), name="slowpoke")
        await task

    run(loop, main())
    got = reports.wait(2)
    check_pair(got, "busy_wait", STALL)
    for r in got:
        assert r.task_name == "slowpoke"
        assert isinstance(r.task, str)
        assert "slowpoke" in r.task
        assert "slowpoke_body" in r.stack


def test_stall_in_an_unnamed_task_reports_its_default_name(loop):
    reports = watched_loop(loop)
    names = []

    async def body():
        names.append(asyncio.current_task().get_name())
        sleepy_block(STALL)

    run(loop, body())
    got = reports.wait(2)
    check_pair(got, "sleepy_block", STALL)
    assert [r.task_name for r in got] == names * 2
    assert all(isinstance(r.task, str) for r in got)


def test_short_callbacks_and_idle_polls_produce_no_report(loop):
    reports = watched_loop(loop, QUIET_THRESHOLD)

    async def main():
        for _ in range(200):
            loop.call_soon(lambda: None)
            await asyncio.sleep(0)
        await asyncio.sleep(2 * QUIET_THRESHOLD)  # long, but blocked in the poll

    run(loop, main())
    time.sleep(0.1)
    assert reports.items == []


def test_short_callbacks_adding_up_past_the_threshold_are_not_a_stall(loop):
    # 200 callbacks of 2 ms in one iteration hold the loop 0.4 s in all, but none of them is a
    # stall: the threshold applies to one callback or task step.
    reports = watched_loop(loop, QUIET_THRESHOLD)
    for _ in range(200):
        loop.call_soon(busy_wait, 0.002)
    loop.call_soon(loop.stop)
    loop.run_forever()
    time.sleep(0.1)
    assert reports.items == []


def test_reports_go_to_the_callback_instead_of_the_logger(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="oxloop")
    reports = watched_loop(loop)
    stall_then_stop(loop, sleepy_block, STALL)
    assert len(reports.wait(2)) == 2
    assert oxloop_records(caplog) == []


def test_a_failing_report_callback_does_not_stop_the_watchdog(loop):
    calls = []

    def broken(report):
        calls.append(report.finished)
        raise RuntimeError("report sink is down")

    loop.set_stall_watchdog(THRESHOLD, callback=broken)
    stall_then_stop(loop, sleepy_block, STALL)
    stall_then_stop(loop, sleepy_block, STALL)
    wait_until(lambda: len(calls) >= 4)
    assert calls == [False, True, False, True]


def test_time_between_runs_is_not_a_stall(loop):
    reports = watched_loop(loop)
    run_forever_once(loop)
    time.sleep(STALL)  # the loop is not running: nothing holds it
    run_forever_once(loop)
    time.sleep(0.1)
    assert reports.items == []


def test_report_thread_id_is_the_loop_thread(loop):
    reports = watched_loop(loop)
    idents = []

    def run_in_thread():
        idents.append(threading.get_ident())
        stall_then_stop(loop, sleepy_block, STALL)

    t = threading.Thread(target=run_in_thread)
    t.start()
    t.join(LIVENESS)
    assert not t.is_alive()
    got = reports.wait(2)
    check_pair(got, "sleepy_block", STALL)
    assert idents[0] != threading.get_ident()
    assert [r.thread_id for r in got] == idents * 2


def test_stall_in_the_last_step_before_close_is_still_reported_finished(loop):
    reports = watched_loop(loop)
    loop.call_soon(sleepy_block, STALL)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    got = reports.wait(2)
    assert [r.finished for r in got] == [False, True]
    assert got[1].duration >= STALL


def test_watchdog_enabled_from_inside_a_running_loop(loop):
    reports = Reports()

    async def main():
        loop.set_stall_watchdog(THRESHOLD, callback=reports)
        await asyncio.sleep(0)
        sleepy_block(STALL)

    run(loop, main())
    check_pair(reports.wait(2), "sleepy_block", STALL)


def test_set_stall_watchdog_again_replaces_the_callback(loop):
    first = watched_loop(loop)
    second = watched_loop(loop)
    stall_then_stop(loop, sleepy_block, STALL)
    assert len(second.wait(2)) == 2
    time.sleep(0.1)
    assert first.items == []


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_set_stall_watchdog_off_turns_it_off(loop, caplog, off):
    caplog.set_level(logging.DEBUG, logger="oxloop")
    reports = watched_loop(loop)
    loop.set_stall_watchdog(off)
    stall_then_stop(loop, sleepy_block, STALL)
    time.sleep(0.1)
    assert reports.items == []
    assert oxloop_records(caplog) == []


def test_watchdog_can_be_turned_back_on(loop):
    watched_loop(loop)
    loop.set_stall_watchdog(None)
    reports = watched_loop(loop)
    stall_then_stop(loop, sleepy_block, STALL)
    check_pair(reports.wait(2), "sleepy_block", STALL)


def test_stalls_just_over_the_threshold_report_in_pairs(loop):
    # A stall that ends soon after the threshold may go unnoticed, but once its ongoing report
    # is made, its finished report must follow, however soon the stall ends after detection.
    reports = watched_loop(loop)
    for i in range(60):
        loop.call_soon(busy_wait, THRESHOLD + 0.001 * i)
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
    time.sleep(0.2)
    flags = [r.finished for r in reports.items]
    assert flags == [False, True] * (len(flags) // 2), flags


def test_finished_report_is_not_lost_when_the_stall_ends_during_slow_delivery(loop):
    # The ongoing report's delivery is slow (a handler writing to a slow sink); the stall ends
    # meanwhile. Its finished report must still come.
    reports = Reports()

    def slow_sink(report):
        reports(report)
        if not report.finished:
            time.sleep(0.2)  # releases the GIL: the loop thread moves on

    loop.set_stall_watchdog(THRESHOLD, callback=slow_sink)
    loop.call_soon(lambda: reports.ongoing.wait(LIVENESS))  # stalls until reported
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    got = reports.wait(2)
    assert [r.finished for r in got] == [False, True]
    assert got[1].duration >= got[0].duration


def test_stall_in_c_code_holding_the_gil_is_reported(loop):
    reports = watched_loop(loop)

    def hog_then_more_python(seconds):
        gil_hog(seconds)
        return sum(range(100))

    stall_then_stop(loop, hog_then_more_python, STALL)
    got = reports.wait(2)
    assert [r.finished for r in got] == [False, True]
    assert got[1].duration >= STALL


def test_stall_in_a_c_callback_holding_the_gil_is_reported(loop):
    # No Python frame at all: the GIL is only given up once the callback has returned, so the
    # watchdog cannot report during the stall, but the stall must not go unreported.
    reports = watched_loop(loop)
    loop.call_soon(LIBC_WITH_GIL.usleep, int(STALL * 1e6))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    got = reports.wait(2)
    assert [r.finished for r in got] == [False, True]
    assert got[1].duration >= STALL


def test_stalled_callback_that_raises_still_gets_both_reports(loop):
    reports = watched_loop(loop)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("exception")))

    def stall_and_fail(seconds):
        sleepy_block(seconds)
        raise ValueError("after the stall")

    stall_then_stop(loop, stall_and_fail, STALL)
    check_pair(reports.wait(2), "sleepy_block", STALL)
    assert [type(e) for e in errors] == [ValueError]


def test_watchdog_works_in_debug_mode(loop, caplog):
    caplog.set_level(logging.WARNING)
    loop.set_debug(True)
    reports = watched_loop(loop)
    stall_then_stop(loop, sleepy_block, STALL)
    check_pair(reports.wait(2), "sleepy_block", STALL)


def test_watchdog_turned_off_from_its_own_callback(loop):
    # The report callback runs on the watchdog thread; stopping the watchdog from there must
    # not try to join that thread with itself.
    reports = Reports()
    errors = []

    def turn_off(report):
        reports(report)
        if not report.finished:
            try:
                loop.set_stall_watchdog(None)
            except BaseException as exc:  # a Rust panic surfaces as a BaseException
                errors.append(exc)

    loop.set_stall_watchdog(THRESHOLD, callback=turn_off)
    stall_then_stop(loop, sleepy_block, STALL)
    reports.wait(1)
    time.sleep(0.1)
    assert errors == []
    n = len(reports.items)
    stall_then_stop(loop, sleepy_block, STALL)  # off now
    time.sleep(0.1)
    assert len(reports.items) == n


# -- stall watchdog: default logging -------------------------------------------------------------


def test_default_report_goes_to_the_oxloop_logger_at_warning(loop, caplog):
    caplog.set_level(logging.WARNING, logger="oxloop")
    loop.set_stall_watchdog(THRESHOLD)
    stall_then_stop(loop, sleepy_block, STALL)
    wait_until(lambda: len(oxloop_records(caplog)) >= 2)
    time.sleep(0.1)
    records = oxloop_records(caplog)
    assert len(records) == 2
    ongoing, finished = (r.getMessage() for r in records)
    assert all(r.levelno == logging.WARNING for r in records)

    assert ongoing.startswith("Event loop blocked for")
    so_far = float(DURATION_RE.search(ongoing).group(1))
    assert so_far >= round(THRESHOLD, 3)
    assert "sleepy_block" in ongoing  # the handle repr and the stack both name it
    assert os.path.basename(__file__) in ongoing  # the stack's file lines

    assert finished.startswith("Event loop was blocked for")
    total = float(DURATION_RE.search(finished).group(1))
    assert STALL <= total < STALL + LIVENESS


def test_default_log_names_the_task(loop, caplog):
    caplog.set_level(logging.WARNING, logger="oxloop")
    loop.set_stall_watchdog(THRESHOLD)

    async def slowpoke_body():
        sleepy_block(STALL)

    async def main():
        await asyncio.create_task(slowpoke_body(), name="slowpoke")

    run(loop, main())
    wait_until(lambda: len(oxloop_records(caplog)) >= 2)
    ongoing = oxloop_records(caplog)[0].getMessage()
    assert "slowpoke" in ongoing
    assert "slowpoke_body" in ongoing


def test_oxloop_run_stall_threshold(caplog):
    caplog.set_level(logging.WARNING, logger="oxloop")

    async def main():
        sleepy_block(STALL)
        return "done"

    assert oxloop.run(main(), stall_threshold=THRESHOLD) == "done"
    wait_until(lambda: len(oxloop_records(caplog)) >= 2)
    messages = [r.getMessage() for r in oxloop_records(caplog)]
    assert len(messages) == 2
    assert messages[0].startswith("Event loop blocked for")
    assert messages[1].startswith("Event loop was blocked for")


def test_oxloop_run_without_stall_threshold_reports_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="oxloop")

    async def main():
        sleepy_block(STALL)

    oxloop.run(main())
    time.sleep(0.1)
    assert oxloop_records(caplog) == []


# -- stall watchdog: OXLOOP_STALL_MS -------------------------------------------------------------

ENV_SCRIPT = """
import logging, time
import oxloop
logging.basicConfig(level=logging.WARNING, format="%(name)s:%(levelname)s:%(message)s")

def sleepy_block(seconds):
    time.sleep(seconds)

loop = oxloop.new_event_loop()
loop.call_soon(sleepy_block, 0.3)
loop.call_later(0.05, loop.stop)
loop.run_forever()
loop.close()
time.sleep(0.1)
print("ok")
"""


def env_run(value):
    # The autouse fixture has taken OXLOOP_STALL_MS out of os.environ, so clean_env() lacks it.
    env = clean_env() if value is None else clean_env(OXLOOP_STALL_MS=value)
    proc = run_python(ENV_SCRIPT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    return proc.stderr


def test_oxloop_stall_ms_env_turns_the_watchdog_on():
    err = env_run("50")
    assert err.count("oxloop:WARNING:Event loop blocked for") == 1, err
    assert err.count("oxloop:WARNING:Event loop was blocked for") == 1, err
    assert "sleepy_block" in err


@pytest.mark.parametrize("value", [None, "0"])
def test_no_stall_report_without_oxloop_stall_ms_or_with_zero(value):
    err = env_run(value)
    assert "blocked for" not in err, err


def test_oxloop_stall_ms_is_read_when_a_loop_is_created(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="oxloop")
    before = oxloop.new_event_loop()
    monkeypatch.setenv("OXLOOP_STALL_MS", "50")
    after = oxloop.new_event_loop()
    overridden = oxloop.new_event_loop()
    try:
        overridden.set_stall_watchdog(None)
        stall_then_stop(before, sleepy_block, STALL)
        stall_then_stop(overridden, sleepy_block, STALL)
        time.sleep(0.1)
        assert oxloop_records(caplog) == []
        stall_then_stop(after, sleepy_block, STALL)
        wait_until(lambda: len(oxloop_records(caplog)) >= 2)
        assert len(oxloop_records(caplog)) == 2
    finally:
        for lp in (before, after, overridden):
            lp.close()


# -- stall watchdog: thread lifetime -------------------------------------------------------------


def test_closing_the_loop_stops_the_watchdog_thread():
    before = os_thread_count()
    lp = oxloop.new_event_loop()
    try:
        reports = watched_loop(lp)
        stall_then_stop(lp, sleepy_block, STALL)
        assert len(reports.wait(2)) == 2
    finally:
        lp.close()
    assert wait_until(lambda: os_thread_count() == before), (os_thread_count(), before)


def test_closing_an_env_enabled_loop_stops_the_watchdog_thread(monkeypatch):
    before = os_thread_count()
    monkeypatch.setenv("OXLOOP_STALL_MS", "50")
    lp = oxloop.new_event_loop()
    try:
        run_forever_once(lp)
    finally:
        lp.close()
    assert wait_until(lambda: os_thread_count() == before), (os_thread_count(), before)


def test_many_watched_loops_leave_no_threads_behind():
    before = os_thread_count()
    for _ in range(20):
        lp = oxloop.new_event_loop()
        lp.set_stall_watchdog(THRESHOLD, callback=lambda report: None)
        run_forever_once(lp)
        lp.close()
    assert wait_until(lambda: os_thread_count() == before), (os_thread_count(), before)


def test_unclosed_watched_loop_is_collected_and_stops_its_thread():
    before = os_thread_count()
    lp = oxloop.new_event_loop()
    lp.set_stall_watchdog(THRESHOLD, callback=lambda report: None)
    ref = weakref.ref(lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del lp
        gc.collect()
    assert ref() is None
    assert wait_until(lambda: os_thread_count() == before), (os_thread_count(), before)


def test_unclosed_loop_referenced_by_its_watchdog_callback_is_collected():
    # callback -> loop -> watchdog -> callback: a cycle the garbage collector must see.
    before = os_thread_count()
    lp = oxloop.new_event_loop()
    lp.set_stall_watchdog(THRESHOLD, callback=lambda report, lp=lp: None)
    ref = weakref.ref(lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del lp
        gc.collect()
    assert ref() is None
    assert wait_until(lambda: os_thread_count() == before), (os_thread_count(), before)


# -- loop.stats() --------------------------------------------------------------------------------

INT_KEYS = (
    "iterations",
    "callbacks",
    "timers_pending",
    "fds_watched",
    "open_transports",
    "bytes_read",
    "bytes_written",
)
FLOAT_KEYS = ("busy_time", "poll_time", "busy_ratio")
DELAY_KEYS = ("ready_delay_p50", "ready_delay_p99")


def check_shape(stats):
    assert isinstance(stats, dict)
    assert set(stats) >= {*INT_KEYS, *FLOAT_KEYS, *DELAY_KEYS}
    for key in INT_KEYS:
        assert type(stats[key]) is int, key
        assert stats[key] >= 0, key
    for key in FLOAT_KEYS:
        assert type(stats[key]) is float, key
        assert stats[key] >= 0.0, key
    for key in DELAY_KEYS:
        assert stats[key] is None or type(stats[key]) is float, key
    assert 0.0 <= stats["busy_ratio"] <= 1.0
    total = stats["busy_time"] + stats["poll_time"]
    if total == 0.0:
        assert stats["busy_ratio"] == 0.0
    else:
        assert stats["busy_ratio"] == pytest.approx(stats["busy_time"] / total, rel=1e-6)


def test_stats_of_a_fresh_loop(loop):
    stats = loop.stats()
    check_shape(stats)
    assert stats["iterations"] == 0
    assert stats["callbacks"] == 0
    assert stats["timers_pending"] == 0
    assert stats["fds_watched"] == 0
    assert stats["open_transports"] == 0
    assert stats["bytes_read"] == 0
    assert stats["bytes_written"] == 0
    for key in DELAY_KEYS:
        assert stats[key] in (None, 0.0)


def test_stats_counts_exactly_the_callbacks_run(loop):
    for _ in range(3):
        s1 = loop.stats()
        for _ in range(999):
            loop.call_soon(lambda: None)
        loop.call_soon(loop.stop)  # the 1000th callback
        loop.run_forever()
        s2 = loop.stats()
        check_shape(s2)
        assert s2["callbacks"] - s1["callbacks"] == 1000
        assert s2["iterations"] > s1["iterations"]
    assert s2["callbacks"] >= 3000


def test_stats_counts_timer_and_reader_callbacks(loop, pair):
    a, b = pair
    s1 = loop.stats()
    base = loop.time()
    for i in range(1, 10):
        loop.call_at(base + 0.001 * i, lambda: None)
    loop.call_at(base + 0.02, loop.stop)
    loop.run_forever()
    s2 = loop.stats()
    assert s2["callbacks"] - s1["callbacks"] == 10

    def on_readable():
        loop.remove_reader(a.fileno())
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    b.send(b"x")
    loop.run_forever()
    s3 = loop.stats()
    assert s3["callbacks"] - s2["callbacks"] == 1


def test_stats_counters_never_go_down(loop):
    previous = loop.stats()

    async def main():
        nonlocal previous
        for _ in range(50):
            loop.call_soon(lambda: None)
            await asyncio.sleep(0.001)
            now = loop.stats()
            for key in ("iterations", "callbacks", "busy_time", "poll_time"):
                assert now[key] >= previous[key], key
            previous = now

    run(loop, main())


def test_stats_is_a_fresh_dict_each_call(loop):
    stats = loop.stats()
    stats["callbacks"] = -1
    stats["nonsense"] = True
    again = loop.stats()
    assert again["callbacks"] == 0
    assert "nonsense" not in again
    assert again is not stats


def test_stats_inside_a_running_loop(loop):
    async def main():
        await asyncio.sleep(0)
        return loop.stats()

    stats = run(loop, main())
    check_shape(stats)
    assert stats["iterations"] > 0
    assert stats["callbacks"] > 0


def test_timers_pending_counts_outstanding_timers(loop):
    far = [loop.call_later(100 + i, lambda: None) for i in range(5)]
    far += [loop.call_at(loop.time() + 200 + i, lambda: None) for i in range(3)]
    assert loop.stats()["timers_pending"] == 8

    done = loop.create_future()
    base = loop.time()
    for i in range(3):
        loop.call_at(base + 0.001 * (i + 1), lambda: None)
    loop.call_at(base + 0.01, done.set_result, None)
    assert loop.stats()["timers_pending"] == 12
    run(loop, done)
    assert loop.stats()["timers_pending"] == len(far)
    run_forever_once(loop)
    assert loop.stats()["timers_pending"] == len(far)
    for h in far:
        h.cancel()


def test_timers_pending_counts_timers_made_by_sleeping_tasks(loop):
    async def main():
        sleepers = [asyncio.ensure_future(asyncio.sleep(100)) for _ in range(4)]
        await asyncio.sleep(0)  # let each sleeper schedule its timer
        count = loop.stats()["timers_pending"]
        for s in sleepers:
            s.cancel()
        await asyncio.gather(*sleepers, return_exceptions=True)
        return count

    assert loop.run_until_complete(main()) == 4


def test_fds_watched_counts_fds_with_a_reader_or_writer(loop):
    socks = [socket.socketpair() for _ in range(3)]
    try:
        (a, b), (c, d), (e, f) = socks
        loop.add_reader(a.fileno(), lambda: None)
        loop.add_reader(b.fileno(), lambda: None)
        assert loop.stats()["fds_watched"] == 2
        loop.add_writer(a.fileno(), lambda: None)  # same fd, now read and write
        assert loop.stats()["fds_watched"] == 2
        loop.add_writer(c.fileno(), lambda: None)
        loop.add_reader(e, lambda: None)  # a file object, not an int
        assert loop.stats()["fds_watched"] == 4
        run_forever_once(loop)
        assert loop.stats()["fds_watched"] == 4
        loop.remove_reader(a.fileno())  # a keeps its writer
        assert loop.stats()["fds_watched"] == 4
        loop.remove_writer(a.fileno())
        loop.remove_reader(b.fileno())
        assert loop.stats()["fds_watched"] == 2
        loop.remove_writer(c.fileno())
        loop.remove_reader(e)
        assert loop.stats()["fds_watched"] == 0
    finally:
        for s1, s2 in socks:
            s1.close()
            s2.close()


def test_poll_time_grows_while_the_loop_waits(loop):
    s1 = loop.stats()
    run(loop, asyncio.sleep(0.2))
    s2 = loop.stats()
    check_shape(s2)
    poll = s2["poll_time"] - s1["poll_time"]
    busy = s2["busy_time"] - s1["busy_time"]
    assert poll >= 0.15
    assert busy < poll


def test_busy_time_grows_while_a_callback_runs(loop):
    s1 = loop.stats()
    loop.call_soon(busy_wait, 0.2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    s2 = loop.stats()
    check_shape(s2)
    assert s2["busy_time"] - s1["busy_time"] >= 0.15


def test_ready_delay_percentiles_after_a_workload(loop):
    async def main():
        for _ in range(200):
            for _ in range(10):
                loop.call_soon(lambda: None)
            await asyncio.sleep(0)

    run(loop, main())
    stats = loop.stats()
    check_shape(stats)
    p50, p99 = stats["ready_delay_p50"], stats["ready_delay_p99"]
    assert isinstance(p50, float)
    assert isinstance(p99, float)
    assert 0.0 <= p50 <= p99 < LIVENESS


def test_busy_and_poll_time_do_not_grow_between_runs(loop):
    run_forever_once(loop)
    s1 = loop.stats()
    time.sleep(0.2)  # not running: neither busy nor polling
    run_forever_once(loop)
    s2 = loop.stats()
    assert s2["busy_time"] - s1["busy_time"] < 0.1
    assert s2["poll_time"] - s1["poll_time"] < 0.1


def test_ready_delay_reflects_waiting_behind_a_slow_callback(loop):
    # Every callback queued behind a 0.2 s one waits at least 0.2 s in the ready queue, so
    # (whichever of them are sampled) the median delay is at least that.
    loop.call_soon(busy_wait, 0.2)
    for _ in range(400):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    p50 = loop.stats()["ready_delay_p50"]
    assert p50 is not None
    assert p50 >= 0.2 * 0.9  # histogram buckets are a few % wide


def test_stats_from_another_thread_while_the_loop_runs(loop):
    errors = []
    samples = []
    stop = threading.Event()

    def exporter():
        while not stop.is_set():
            try:
                samples.append(loop.stats())
            except BaseException as exc:
                errors.append(exc)
            time.sleep(0.0005)

    async def main():
        for i in range(500):
            loop.call_soon(lambda: None)
            await asyncio.sleep(0.0002 if i % 5 == 0 else 0)

    t = threading.Thread(target=exporter)
    t.start()
    try:
        run(loop, main())
    finally:
        stop.set()
        t.join(LIVENESS)
    assert errors == []
    assert samples
    for stats in samples:
        check_shape(stats)


def test_stats_on_a_closed_loop_returns_the_final_counters():
    lp = oxloop.new_event_loop()
    try:
        for _ in range(10):
            lp.call_soon(lambda: None)
        run_forever_once(lp)
        final = lp.stats()
    finally:
        lp.close()
    stats = lp.stats()
    check_shape(stats)
    assert stats["callbacks"] == final["callbacks"] >= 11
    assert stats["iterations"] == final["iterations"] > 0
    assert stats["busy_time"] == final["busy_time"]
    assert stats["poll_time"] == final["poll_time"]


FORK_CHILD_SCRIPT = """
import asyncio, os, sys, warnings
import oxloop

warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running (3.12+)
loop = oxloop.new_event_loop()
loop.set_stall_watchdog(0.05)
loop.run_until_complete(asyncio.sleep(0.01))
pid = os.fork()
if pid == 0:
    # The child has the loop but not the watchdog thread: callbacks still run, and
    # turning the watchdog off and closing the loop must not wait for that thread.
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.set_stall_watchdog(None)
    loop.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
loop.run_until_complete(asyncio.sleep(0.01))
loop.close()
print("child", os.waitstatus_to_exitcode(status))
"""


def test_watchdog_in_a_forked_child_is_inert():
    result = run_python(FORK_CHILD_SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child 0"
