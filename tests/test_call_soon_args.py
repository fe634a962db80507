"""Tests of every argument shape call_soon accepts or rejects (oxloop parses the common ones
by hand)."""

import contextvars
import functools

import pytest
from support import run_forever_once

VAR = contextvars.ContextVar("call_soon_args_var", default="unset")


def _record(got):
    def cb(*args):
        got.append((args, VAR.get()))

    return cb


@pytest.mark.parametrize("args", [(), (1,), (1, "two", None), tuple(range(20))])
def test_positional_arguments_are_passed(any_loop, args):
    got = []
    any_loop.call_soon(_record(got), *args)
    run_forever_once(any_loop)
    assert got == [(args, "unset")]


@pytest.mark.parametrize("args", [(), (1,), (1, 2, 3)])
def test_context_keyword_with_any_number_of_arguments(any_loop, args):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "inside")
    any_loop.call_soon(_record(got), *args, context=ctx)
    run_forever_once(any_loop)
    assert got == [(args, "inside")]


def test_context_none_means_the_current_context(any_loop):
    got = []
    token = VAR.set("current")
    try:
        any_loop.call_soon(_record(got), 5, context=None)
    finally:
        VAR.reset(token)
    run_forever_once(any_loop)
    assert got == [((5,), "current")]


def test_context_from_a_keyword_dict(any_loop):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "dict")
    any_loop.call_soon(_record(got), **{"context": ctx})
    run_forever_once(any_loop)
    assert got == [((), "dict")]


def test_callback_by_keyword(any_loop):
    got = []
    any_loop.call_soon(callback=_record(got))
    run_forever_once(any_loop)
    assert got == [((), "unset")]


def test_callback_and_context_by_keyword(any_loop):
    got = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "kw")
    any_loop.call_soon(context=ctx, callback=_record(got))
    run_forever_once(any_loop)
    assert got == [((), "kw")]


def test_missing_callback_is_a_type_error(any_loop):
    with pytest.raises(TypeError, match="callback"):
        any_loop.call_soon()
    with pytest.raises(TypeError, match="callback"):
        any_loop.call_soon(context=None)


@pytest.mark.parametrize("kwargs", [{"foo": 1}, {"context": None, "foo": 1}, {"delay": 1}])
def test_unknown_keywords_are_a_type_error(any_loop, kwargs):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        any_loop.call_soon(print, **kwargs)


def test_called_through_the_class(any_loop):
    got = []
    type(any_loop).call_soon(any_loop, _record(got), 7)
    run_forever_once(any_loop)
    assert got == [((7,), "unset")]


def test_the_returned_handle_describes_the_call(any_loop):
    handle = any_loop.call_soon(print, 1, 2)
    assert handle._callback is print
    assert handle._args == (1, 2)
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()


def test_closed_loop_rejects_every_shape(any_loop):
    any_loop.close()
    ctx = contextvars.copy_context()
    for call in (
        lambda: any_loop.call_soon(print),
        lambda: any_loop.call_soon(print, 1, context=ctx),
        lambda: any_loop.call_soon(callback=print),
    ):
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            call()


class _CallableObject:
    def __init__(self, got):
        self.got = got

    def __call__(self, *args):
        self.got.append(("object", args))


def test_every_kind_of_callable_gets_its_arguments(any_loop):
    got = []

    def function(*args):
        got.append(("function", args))

    class Kind:
        def method(self, *args):
            got.append(("method", args))

    any_loop.call_soon(function, 1, 2)
    any_loop.call_soon(Kind().method, 3)
    any_loop.call_soon(_CallableObject(got), 4, 5)
    any_loop.call_soon(functools.partial(function, 6), 7)
    any_loop.call_soon(got.append, ("builtin", (8,)))
    run_forever_once(any_loop)
    assert got == [
        ("function", (1, 2)),
        ("method", (3,)),
        ("object", (4, 5)),
        ("function", (6, 7)),
        ("builtin", (8,)),
    ]


def test_a_class_as_the_callback(any_loop):
    made = []

    class Made:
        def __init__(self, *args):
            made.append(args)

    any_loop.call_soon(Made, 1, "a")
    any_loop.call_soon(Made)
    run_forever_once(any_loop)
    assert made == [(1, "a"), ()]
