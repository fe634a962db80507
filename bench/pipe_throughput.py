"""Pipe throughput to and from a child process: oxloop vs stock asyncio vs uvloop.

Three workloads, each through `asyncio.create_subprocess_exec` and its streams:

* `cat`:    the parent writes N bytes to `cat`'s stdin and reads them back from its stdout
            (both pipes busy at once; every byte counted, the first KiB compared);
* `stdin`:  the parent writes N bytes to `cat > /dev/null`;
* `stdout`: the parent reads N bytes that `dd if=/dev/zero bs=1M` writes (large writes:
            with a producer writing 8 KiB at a time, as `head -c` does, a reader that keeps
            up wakes once per 8 KiB and a slower reader gets more per wake-up).

Each measurement is one child, from spawn to exit, in bytes per second of payload. The
loops are interleaved round by round (oxloop, asyncio, uvloop, oxloop, ...) so drift on a
shared machine hits them alike; the table shows medians and each loop's throughput
relative to uvloop's.

    python bench/pipe_throughput.py [--size-mb 128] [--rounds 5] [--chunk-kb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import oxloop

try:
    import uvloop
except ImportError:  # pragma: no cover - reported in the output
    uvloop = None


def make_loop(kind):
    if kind == "oxloop":
        return oxloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    return uvloop.new_event_loop()


async def through_cat(size, chunk):
    block = bytes(range(256)) * (chunk // 256)
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )

    async def feed():
        sent = 0
        while sent < size:
            proc.stdin.write(block)
            sent += len(block)
            await proc.stdin.drain()
        proc.stdin.close()

    async def drain_out():
        got = 0
        head = b""
        while True:
            data = await proc.stdout.read(chunk)
            if not data:
                return got, head
            if len(head) < 1024:
                head += data[: 1024 - len(head)]
            got += len(data)

    _, (got, head) = await asyncio.gather(feed(), drain_out())
    await proc.wait()
    if got != size or head != block[: len(head)]:
        raise AssertionError(f"cat returned {got} bytes, expected {size}")
    return got


async def into_stdin(size, chunk):
    block = b"x" * chunk
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "cat > /dev/null", stdin=asyncio.subprocess.PIPE
    )
    sent = 0
    while sent < size:
        proc.stdin.write(block)
        sent += len(block)
        await proc.stdin.drain()
    proc.stdin.close()
    if await proc.wait() != 0:
        raise AssertionError("cat > /dev/null failed")
    return sent


async def from_stdout(size, chunk):
    proc = await asyncio.create_subprocess_exec(
        "dd",
        "if=/dev/zero",
        "bs=1M",
        f"count={size >> 20}",
        "status=none",
        stdout=asyncio.subprocess.PIPE,
    )
    got = 0
    while True:
        data = await proc.stdout.read(chunk)
        if not data:
            break
        got += len(data)
    await proc.wait()
    if got != size:
        raise AssertionError(f"read {got} bytes, expected {size}")
    return got


WORKLOADS = {"cat": through_cat, "stdin": into_stdin, "stdout": from_stdout}


def measure(kind, workload, size, chunk):
    loop = make_loop(kind)
    try:
        t0 = time.perf_counter()
        moved = loop.run_until_complete(WORKLOADS[workload](size, chunk))
        elapsed = time.perf_counter() - t0
    finally:
        loop.close()
    return moved / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=128, help="payload per child (MiB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk-kb", type=int, default=256, help="write/read size (KiB)")
    ap.add_argument("--workloads", default="cat,stdin,stdout")
    args = ap.parse_args()
    size = args.size_mb << 20
    chunk = args.chunk_kb << 10
    loops = ["oxloop", "asyncio"] + (["uvloop"] if uvloop is not None else [])
    workloads = args.workloads.split(",")
    print(
        f"Python {sys.version.split()[0]}, {args.size_mb} MiB per child, "
        f"{args.chunk_kb} KiB chunks, {args.rounds} rounds; loops: {', '.join(loops)}"
    )
    if uvloop is None:
        print("uvloop not installed: no ratios")
    rates = {(w, k): [] for w in workloads for k in loops}
    for w in workloads:
        for k in loops:  # warm-up, not counted
            measure(k, w, min(size, 8 << 20), chunk)
    for r in range(args.rounds):
        for w in workloads:
            for k in loops:
                rates[w, k].append(measure(k, w, size, chunk))
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    print()
    print("| workload | loop | median MB/s | min | max | vs uvloop |")
    print("|---|---|---|---|---|---|")
    for w in workloads:
        base = statistics.median(rates[w, "uvloop"]) if uvloop is not None else None
        for k in loops:
            xs = rates[w, k]
            med = statistics.median(xs)
            ratio = f"{med / base:.2f}x" if base else "-"
            print(
                f"| `{w}` | {k} | {med / 1e6:.0f} | {min(xs) / 1e6:.0f} | "
                f"{max(xs) / 1e6:.0f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
