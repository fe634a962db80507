"""Tests of create_task/create_future edge cases: closed loop, names, factories, debug traces."""

import asyncio
import contextvars
import gc
import sys
import weakref

import pytest
from support import make_loop


async def _work(x):
    return x


def test_create_task_on_a_closed_loop_raises_and_leaves_the_coroutine(any_loop):
    any_loop.close()
    coro = _work(1)
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            any_loop.create_task(coro)
    finally:
        coro.close()


def test_create_future_on_a_closed_loop_still_works(any_loop):
    any_loop.close()
    fut = any_loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert not fut.done()


def test_create_task_name_none_keeps_the_default_name(any_loop):
    task = any_loop.create_task(_work(1), name=None)
    assert task.get_name().startswith("Task-")
    assert any_loop.run_until_complete(task) == 1


def test_create_task_name_is_converted_to_str(any_loop):
    task = any_loop.create_task(_work(1), name=42)
    assert task.get_name() == "42"
    any_loop.run_until_complete(task)


def test_factory_task_gets_the_name(any_loop):
    any_loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
    task = any_loop.create_task(_work(1), name="via-factory")
    assert task.get_name() == "via-factory"
    any_loop.run_until_complete(task)


def test_factory_errors_propagate(any_loop):
    def factory(loop, coro, **kw):
        coro.close()
        raise LookupError("no tasks today")

    any_loop.set_task_factory(factory)
    with pytest.raises(LookupError, match="no tasks today"):
        any_loop.create_task(_work(1))


def test_task_factory_attribute_is_the_factory(any_loop):
    def factory(loop, coro, **kw):
        return asyncio.Task(coro, loop=loop, **kw)

    any_loop.set_task_factory(factory)
    assert any_loop._task_factory is factory
    any_loop.set_task_factory(None)
    assert any_loop._task_factory is None


@pytest.mark.parametrize("kind", ["oxloop", "stock"])
def test_a_loop_whose_task_factory_refers_to_it_is_collected(kind):
    loop = make_loop(kind)

    def factory(lp, coro, **kw):
        return asyncio.Task(coro, loop=lp, **kw)

    factory.loop = loop  # a reference cycle through the factory
    loop.set_task_factory(factory)
    loop.close()
    ref = weakref.ref(loop)
    del loop, factory
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="context= is 3.11+")
def test_create_task_context_none_copies_the_current_context(any_loop):
    var = contextvars.ContextVar("v", default="unset")

    async def read():
        return var.get()

    token = var.set("outer")
    try:
        task = any_loop.create_task(read(), context=None)
    finally:
        var.reset(token)
    assert any_loop.run_until_complete(task) == "outer"


def test_debug_task_traceback_ends_at_the_caller(any_loop):
    any_loop.set_debug(True)
    task = any_loop.create_task(_work(1))
    last = task._source_traceback[-1]
    assert last.name == "test_debug_task_traceback_ends_at_the_caller"
    any_loop.run_until_complete(task)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.10 has no create_task(context=)")
@pytest.mark.parametrize("ctx", [None, "copy"])
def test_create_task_context_refused_on_310(any_loop, ctx):
    async def coro():
        pass

    c = coro()
    context = contextvars.copy_context() if ctx == "copy" else None
    try:
        with pytest.raises(TypeError, match="unexpected keyword argument 'context'"):
            any_loop.create_task(c, context=context)
    finally:
        c.close()
