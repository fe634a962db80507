"""Micro-benchmarks of the loop core, for bench/bench.py.

Each benchmark runs on a fresh loop and reports the operations done, the process CPU time
(user and system, `resource.getrusage`) and the wall time:

* `call_soon`:  N callbacks through `loop.call_soon` (scheduled 1000 at a time by a driver
                callback; one op = one callback scheduled and run);
* `call_later`: N timers through `loop.call_later` with delays of 0-0.9 ms, 1000 at a
                time, every 4th one cancelled right away (one op = one timer);
* `sleep0`:     two tasks each `await asyncio.sleep(0)` N/2 times (one op = one switch);
* `future`:     one task creates a Future, has `call_soon` set its result, awaits it, N
                times (one op = one create/set/await);
* `gather`:     `asyncio.gather` of N trivial coroutines (one op = one task);
* `queue`:      an `asyncio.Queue(maxsize=100)`, one producer task putting N items and one
                consumer task getting them (one op = one item through the queue).

As a worker for the harness (one process per loop, started once):

    python bench/micro.py --loop oxloop --worker [--warmup-scale 0.05]

warms up (every benchmark once, at --warmup-scale times its size, at least 1000 ops), then
reads `{"bench": NAME, "n": N}` lines on stdin and answers each with one JSON line. Alone:

    python bench/micro.py --loop uvloop [--bench call_soon,...] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time

# Default operation counts (the harness scales them down for --quick).
SIZES = {
    "call_soon": 1_000_000,
    "call_later": 200_000,
    "sleep0": 400_000,
    "future": 300_000,
    "gather": 100_000,
    "queue": 200_000,
}
BATCH = 1000


def new_loop(kind):
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    raise ValueError(kind)


def bench_call_soon(loop, n):
    done = loop.create_future()
    call_soon = loop.call_soon

    def cb():
        pass

    def driver(left):
        for _ in range(BATCH):
            call_soon(cb)
        if left > 1:
            call_soon(driver, left - 1)
        else:
            call_soon(done.set_result, None)

    call_soon(driver, n // BATCH)
    loop.run_until_complete(done)
    return (n // BATCH) * BATCH


def bench_call_later(loop, n):
    done = loop.create_future()
    call_later = loop.call_later
    delays = [(i % 10) * 1e-4 for i in range(BATCH)]
    batches = n // BATCH
    expected = BATCH - len(range(0, BATCH, 4))
    state = [0, batches]  # timers fired in this batch, batches left

    def fired():
        state[0] += 1
        if state[0] == expected:
            state[0] = 0
            state[1] -= 1
            if state[1]:
                driver()
            else:
                done.set_result(None)

    def driver():
        handles = [call_later(d, fired) for d in delays]
        for h in handles[::4]:
            h.cancel()

    loop.call_soon(driver)
    loop.run_until_complete(done)
    return batches * BATCH


def bench_sleep0(loop, n):
    async def switcher(k):
        for _ in range(k):
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(switcher(n // 2), switcher(n // 2))

    loop.run_until_complete(main())
    return (n // 2) * 2


def bench_future(loop, n):
    async def main():
        create = loop.create_future
        call_soon = loop.call_soon
        for i in range(n):
            fut = create()
            call_soon(fut.set_result, i)
            await fut

    loop.run_until_complete(main())
    return n


def bench_gather(loop, n):
    async def trivial():
        return 1

    async def main():
        return sum(await asyncio.gather(*[trivial() for _ in range(n)]))

    if loop.run_until_complete(main()) != n:
        raise AssertionError("gather lost results")
    return n


def bench_queue(loop, n):
    async def main():
        q = asyncio.Queue(maxsize=100)

        async def producer():
            for i in range(n):
                await q.put(i)

        async def consumer():
            total = 0
            for _ in range(n):
                total += await q.get()
            return total

        _, total = await asyncio.gather(producer(), consumer())
        if total != n * (n - 1) // 2:
            raise AssertionError("queue lost items")

    loop.run_until_complete(main())
    return n


BENCHES = {
    "call_soon": bench_call_soon,
    "call_later": bench_call_later,
    "sleep0": bench_sleep0,
    "future": bench_future,
    "gather": bench_gather,
    "queue": bench_queue,
}


def run_one(kind, name, n):
    """Run benchmark `name` with `n` ops on a fresh `kind` loop: ops, user/sys CPU, wall."""
    loop = new_loop(kind)
    asyncio.set_event_loop(loop)
    try:
        gc.collect()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        ops = BENCHES[name](loop, n)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return {
        "ops": ops,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "wall": wall,
    }


def worker(kind, warmup_scale=0.05):
    # Warm up every benchmark once (imports, caches, allocator pools), then serve requests.
    for name, size in SIZES.items():
        run_one(kind, name, max(BATCH, int(size * warmup_scale)))
    print(json.dumps({"ready": kind}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        print(json.dumps(run_one(kind, req["bench"], req["n"])), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, choices=["oxloop", "asyncio", "uvloop"])
    ap.add_argument("--worker", action="store_true", help="serve requests on stdin")
    ap.add_argument("--warmup-scale", type=float, default=0.05, help="worker warm-up size")
    ap.add_argument("--bench", default=",".join(BENCHES))
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    if args.worker:
        worker(args.loop, args.warmup_scale)
        return
    for name in args.bench.split(","):
        r = run_one(args.loop, name, int(SIZES[name] * args.scale))
        cpu = r["user"] + r["sys"]
        print(
            f"{name:10} {r['ops'] / cpu / 1e6:7.3f} M ops/CPU-s  "
            f"user {r['user']:.3f} s  sys {r['sys']:.3f} s  wall {r['wall']:.3f} s"
        )


if __name__ == "__main__":
    main()
