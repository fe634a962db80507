"""Tests of get_debug (oxloop installs a direct entry for it): value, arguments, callers."""

import asyncio
import inspect

import pytest


def test_get_debug_follows_set_debug(any_loop):
    any_loop.set_debug(False)
    assert any_loop.get_debug() is False
    any_loop.set_debug(True)
    assert any_loop.get_debug() is True


def test_get_debug_takes_no_arguments(any_loop):
    with pytest.raises(TypeError):
        any_loop.get_debug(True)
    assert list(inspect.signature(any_loop.get_debug).parameters) == []


def test_get_debug_through_the_class(any_loop):
    assert type(any_loop).get_debug(any_loop) is any_loop.get_debug()


def test_futures_and_tasks_see_debug_mode(any_loop):
    any_loop.set_debug(True)
    fut = any_loop.create_future()
    assert fut._source_traceback

    async def work():
        return asyncio.current_task()._source_traceback

    assert any_loop.run_until_complete(work())
    any_loop.set_debug(False)
    assert not any_loop.create_future()._source_traceback


@pytest.mark.parametrize("value", [0, 1, "", "yes", None])
def test_set_debug_takes_any_object_by_its_truth(any_loop, value):
    any_loop.set_debug(value)
    try:
        assert bool(any_loop.get_debug()) == bool(value)
    finally:
        any_loop.set_debug(False)
