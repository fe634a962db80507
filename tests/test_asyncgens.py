"""Tests of async generator support: the firstiter/finalizer hooks and shutdown_asyncgens."""

import asyncio
import gc
import sys

import pytest
from support import run


async def _wait_until(predicate):
    while not predicate():
        await asyncio.sleep(0.001)


def test_finalizer_runs_aclose_on_the_loop(any_loop):
    seen = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            seen.append(asyncio.get_running_loop() is any_loop)
            await asyncio.sleep(0)  # async clean-up is allowed: it runs in a task
            seen.append("cleaned")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        await _wait_until(lambda: len(seen) == 2)

    run(any_loop, main())
    assert seen == [True, "cleaned"]


def test_shutdown_asyncgens_closes_live_generators(any_loop):
    keep = []
    seen = []

    async def agen(tag):
        try:
            yield tag
        finally:
            seen.append(tag)

    async def main():
        for tag in ("a", "b"):
            g = agen(tag)
            keep.append(g)
            await g.__anext__()

    run(any_loop, main())
    assert seen == []
    run(any_loop, any_loop.shutdown_asyncgens())
    assert sorted(seen) == ["a", "b"]


def test_shutdown_asyncgens_reports_errors_to_the_exception_handler(any_loop):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append(ctx))
    keep = []

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    async def main():
        g = agen()
        keep.append(g)
        await g.__anext__()

    run(any_loop, main())
    run(any_loop, any_loop.shutdown_asyncgens())
    assert len(calls) == 1
    ctx = calls[0]
    assert ctx["message"].startswith("an error occurred during closing of asynchronous generator")
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["asyncgen"] is keep[0]


def test_asyncgen_started_after_shutdown_warns(any_loop):
    run(any_loop, any_loop.shutdown_asyncgens())

    async def agen():
        yield 1

    async def main():
        g = agen()
        with pytest.warns(ResourceWarning, match=r"after loop.shutdown_asyncgens\(\) call"):
            await g.__anext__()
        await g.aclose()

    run(any_loop, main())


def test_shutdown_asyncgens_with_nothing_to_close(any_loop):
    assert run(any_loop, any_loop.shutdown_asyncgens()) is None


def test_finalizer_after_close_is_harmless(any_loop, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    keep = []

    async def agen():
        yield 1

    async def main():
        g = agen()
        keep.append(g)
        await g.__anext__()

    run(any_loop, main())
    any_loop.close()
    keep.clear()
    gc.collect()
    assert unraisable == []


def test_asyncgen_fully_consumed_inside_loop(any_loop):
    async def agen(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main():
        return [x async for x in agen(5)]

    assert run(any_loop, main()) == [0, 1, 2, 3, 4]
