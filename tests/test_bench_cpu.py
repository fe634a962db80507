"""Tests for bench/bench.py's reading of a load generator result into server CPU per
request (exact run time, split by the sampled utime/stime ticks)."""

import importlib.util
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
try:
    _spec = importlib.util.spec_from_file_location("bench_main", os.path.join(BENCH, "bench.py"))
    bench = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(bench)
finally:
    sys.path.remove(BENCH)

TCK = bench.CLK_TCK


def result(ut, st, ns=None):
    r = {"server_utime_ticks": ut, "server_stime_ticks": st}
    if ns is not None:
        r["server_cpu_ns"] = ns
    return r


def test_exact_total_split_by_ticks():
    # 2 ms of run time over 100 requests is 20 us per request, a quarter of it user.
    user, sys_ = bench.server_cpu_us(result(1, 3, 2_000_000), 100)
    assert abs(user + sys_ - 20.0) < 1e-9
    assert abs(user - 5.0) < 1e-9


def test_ticks_alone_without_schedstat():
    user, sys_ = bench.server_cpu_us(result(2 * TCK, TCK, -1), 1000)
    assert (user, sys_) == (2000.0, 1000.0)


def test_ticks_alone_from_an_older_loadgen():
    assert bench.server_cpu_us(result(TCK, 0), 1) == (1e6, 0.0)


def test_no_tick_sampled_falls_back_to_the_ticks():
    # Nothing to split by: the (zero) tick figures, not a guess.
    assert bench.server_cpu_us(result(0, 0, 5000), 10) == (0.0, 0.0)


def test_perf_share_splits_the_exact_total():
    r = result(1, 3, 2_000_000)
    r["server_user_share"] = 0.1
    user, sys_ = bench.server_cpu_us(r, 100)
    assert abs(user - 2.0) < 1e-9
    assert abs(sys_ - 18.0) < 1e-9


def test_perf_share_needs_the_exact_total():
    r = result(TCK, TCK, -1)
    r["server_user_share"] = 0.1
    assert bench.server_cpu_us(r, 1) == (1e6, 1e6)


def test_user_share_of_perf_script_addresses():
    ips = "ffffffff81e2867e\n7fcb7488b380\nffffffff81e5fe1b\n55d0c0a1b2c3\n"
    assert bench.user_share(ips) == 0.5
    assert bench.user_share("") is None
