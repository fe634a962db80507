"""Benchmark: how late a 1 kHz fixed-rate timer fires on oxloop, stock asyncio and uvloop.

Each run drives one fresh loop with a fixed-rate ticker (next deadline = previous deadline +
period) for --seconds, in one of two variants:

  call_at  the callback reschedules itself with loop.call_at(next_deadline, ...)
  sleep    a coroutine awaits asyncio.sleep(next_deadline - now)

Lateness is time.monotonic() at the callback (or after the sleep) minus the deadline; the
deadlines are on the time.monotonic() clock, which all three loops share on Linux (uvloop's
loop.time() is that clock cut to whole milliseconds, so its timers can fire early: negative
lateness, counted as "early"). CPU% is the process CPU time (time.process_time()) over wall
time for the run: ~100% means the loop spins.

Loops are interleaved to spread machine noise: round 1 runs A B C, round 2 B C A, and so on.
A benchmark, not a test: it asserts nothing.

    python bench/timer_lateness.py [--seconds 10] [--rounds 1] [--rate 1000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import platform
import statistics
import sys
import time

import oxloop

try:
    import uvloop
except ImportError:  # optional
    uvloop = None

# Ticks dropped at the start of each run (first wake-ups pay for page faults and caches).
WARMUP_TICKS = 20


def new_loop(kind):
    if kind == "oxloop":
        return oxloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        return uvloop.new_event_loop()
    raise ValueError(kind)


def available_loops():
    kinds = ["oxloop", "asyncio"]
    if uvloop is not None:
        kinds.append("uvloop")
    return kinds


def ticker_call_at(loop, ticks, period):
    """Fixed-rate ticker with loop.call_at; returns (lateness list, future done at the end)."""
    lateness = []
    done = loop.create_future()
    now = time.monotonic

    def tick(deadline, left):
        lateness.append(now() - deadline)
        if left == 0:
            done.set_result(None)
            return
        nxt = deadline + period
        loop.call_at(nxt, tick, nxt, left - 1)

    first = now() + period
    loop.call_at(first, tick, first, ticks - 1)
    return lateness, done


async def ticker_sleep(ticks, period):
    """Fixed-rate ticker with asyncio.sleep; returns the lateness list."""
    lateness = []
    now = time.monotonic
    deadline = now() + period
    for _ in range(ticks):
        await asyncio.sleep(max(deadline - now(), 0.0))
        lateness.append(now() - deadline)
        deadline += period
    return lateness


def measure(kind, variant, seconds, rate):
    """One run on a fresh loop: lateness statistics and CPU use."""
    period = 1.0 / rate
    ticks = max(int(seconds * rate), WARMUP_TICKS + 1)
    loop = new_loop(kind)
    try:
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if variant == "call_at":
            lateness, done = ticker_call_at(loop, ticks, period)
            loop.run_until_complete(done)
        else:
            lateness = loop.run_until_complete(ticker_sleep(ticks, period))
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    finally:
        loop.close()
    return summarize(lateness[WARMUP_TICKS:], kind, variant, wall, cpu)


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(lateness, kind, variant, wall, cpu):
    us = sorted(x * 1e6 for x in lateness)
    return {
        "loop": kind,
        "variant": variant,
        "samples": len(us),
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "max_us": us[-1] if us else float("nan"),
        "mean_us": statistics.fmean(us) if us else float("nan"),
        "early": sum(1 for x in us if x < 0),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_pct": 100.0 * cpu / wall if wall > 0 else float("nan"),
    }


def pooled(runs):
    """Per (variant, loop) over all rounds: the median of each run's figures."""
    out = []
    keys = []
    for r in runs:
        key = (r["variant"], r["loop"])
        if key not in keys:
            keys.append(key)
    for variant, kind in keys:
        group = [r for r in runs if (r["variant"], r["loop"]) == (variant, kind)]
        row = {"loop": kind, "variant": variant, "runs": len(group)}
        for field in ("p50_us", "p99_us", "max_us", "mean_us", "cpu_pct"):
            row[field] = statistics.median(r[field] for r in group)
        row["early"] = sum(r["early"] for r in group)
        row["samples"] = sum(r["samples"] for r in group)
        out.append(row)
    return out


def print_table(rows, title, round_col):
    print(title)
    head = f"{'variant':<8} {'loop':<8} "
    head += f"{'round':>5} " if round_col else f"{'runs':>5} "
    head += f"{'samples':>8} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>10} {'early':>6} {'CPU%':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['variant']:<8} {r['loop']:<8} "
        line += f"{r['round'] if round_col else r['runs']:>5} "
        line += (
            f"{r['samples']:>8} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f} {r['max_us']:>10.1f} "
            f"{r['early']:>6} {r['cpu_pct']:>6.1f}"
        )
        print(line)
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all loops")
    parser.add_argument("--rate", type=float, default=1000.0, help="ticks per second (Hz)")
    parser.add_argument(
        "--loops",
        default=",".join(available_loops()),
        help="comma-separated subset of: oxloop, asyncio, uvloop",
    )
    parser.add_argument(
        "--variants", default="call_at,sleep", help="comma-separated subset of: call_at, sleep"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)

    kinds = [k for k in args.loops.split(",") if k]
    for k in kinds:
        if k not in ("oxloop", "asyncio", "uvloop"):
            parser.error(f"unknown loop {k!r}")
        if k == "uvloop" and uvloop is None:
            parser.error("uvloop is not installed")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in ("call_at", "sleep"):
            parser.error(f"unknown variant {v!r}")

    runs = []
    for rnd in range(args.rounds):
        shift = rnd % len(kinds)
        order = kinds[shift:] + kinds[:shift]
        for variant in variants:
            for kind in order:
                result = measure(kind, variant, args.seconds, args.rate)
                result["round"] = rnd + 1
                runs.append(result)
                if not args.json:
                    print(
                        f"  round {rnd + 1} {variant:<7} {kind:<7} "
                        f"p99 {result['p99_us']:8.1f} µs  CPU {result['cpu_pct']:5.1f}%",
                        file=sys.stderr,
                    )

    summary = pooled(runs)
    config = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rate_hz": args.rate,
        "loops": kinds,
        "variants": variants,
        "warmup_ticks": WARMUP_TICKS,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "oxloop": oxloop.__version__,
        "uvloop": getattr(uvloop, "__version__", None),
    }
    if args.json:
        json.dump({"config": config, "runs": runs, "summary": summary}, sys.stdout, indent=2)
        print()
        return
    print(
        f"\nTimer lateness at {args.rate:g} Hz, {args.seconds:g} s per run, "
        f"{args.rounds} round(s), Python {config['python']}\n"
    )
    order = sorted(
        runs, key=lambda r: (variants.index(r["variant"]), kinds.index(r["loop"]), r["round"])
    )
    print_table(order, "Runs:", round_col=True)
    if args.rounds > 1:
        print_table(summary, "Median over rounds:", round_col=False)


if __name__ == "__main__":
    main()
