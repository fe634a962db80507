"""Tests of what the loop keeps between calls on its hot paths: `create_future` and
`create_task` see a patched `asyncio.futures.Future` / `asyncio.tasks.Task` at once (oxloop
keeps the last one it found while the module is unchanged), and a handle keeps its one
argument without a tuple until asked (`_args` is then the same tuple every time)."""

import asyncio
import asyncio.futures
import asyncio.tasks
import contextvars
import gc
import os
import sys
import weakref

import pytest
from support import run_forever_once


class _OtherFuture(asyncio.Future):
    pass


class _OtherTask(asyncio.Task):
    pass


def test_create_future_follows_asyncio_futures_future_within_a_run(any_loop, monkeypatch):
    original = asyncio.futures.Future
    types = []

    async def main():
        types.append(type(any_loop.create_future()))
        monkeypatch.setattr(asyncio.futures, "Future", _OtherFuture)
        types.append(type(any_loop.create_future()))
        types.append(type(any_loop.create_future()))
        monkeypatch.setattr(asyncio.futures, "Future", original)
        types.append(type(any_loop.create_future()))
        # Another attribute of the module changes: still the same Future.
        monkeypatch.setattr(asyncio.futures, "_unrelated_attribute", 1, raising=False)
        types.append(type(any_loop.create_future()))

    any_loop.run_until_complete(main())
    assert types == [original, _OtherFuture, _OtherFuture, original, original]


def test_create_task_follows_asyncio_tasks_task_within_a_run(any_loop, monkeypatch):
    original = asyncio.tasks.Task
    types = []

    async def work():
        return 1

    async def main():
        for patched in (None, _OtherTask, None):
            monkeypatch.setattr(asyncio.tasks, "Task", patched or original)
            task = any_loop.create_task(work())
            types.append(type(task))
            assert await task == 1

    any_loop.run_until_complete(main())
    assert types == [original, _OtherTask, original]


def test_create_future_without_asyncio_futures_future_fails_as_stock(any_loop, monkeypatch):
    any_loop.run_until_complete(asyncio.sleep(0))  # looked up once already
    monkeypatch.delattr(asyncio.futures, "Future")
    with pytest.raises(AttributeError, match="Future"):
        any_loop.create_future()


def test_create_future_falls_back_to_the_module_getattr(any_loop, monkeypatch):
    any_loop.create_future()
    monkeypatch.delattr(asyncio.futures, "Future")
    monkeypatch.setattr(asyncio.futures, "__getattr__", lambda name: _OtherFuture, raising=False)
    assert type(any_loop.create_future()) is _OtherFuture


def test_a_patched_future_type_is_not_kept_alive_by_a_closed_loop(monkeypatch):
    import oxloop

    class Transient(asyncio.Future):
        pass

    ref = weakref.ref(Transient)
    monkeypatch.setattr(asyncio.futures, "Future", Transient)
    loop = oxloop.new_event_loop()
    assert type(loop.create_future()) is Transient
    loop.close()
    del loop
    monkeypatch.undo()
    del Transient
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("args", [(), ("one",), ("one", 2)])
def test_args_is_one_tuple_kept_by_the_handle(any_loop, args):
    got = []
    handle = any_loop.call_soon(lambda *a: got.append(a), *args)
    first = handle._args
    assert first == args and type(first) is tuple
    assert handle._args is first
    run_forever_once(any_loop)
    assert got == [args]
    assert handle._args is first


@pytest.mark.parametrize("args", [(), ("one",), ("one", 2)])
def test_args_of_a_handle_that_ran_without_being_asked(any_loop, args):
    got = []
    handle = any_loop.call_soon(lambda *a: got.append(a), *args)
    run_forever_once(any_loop)
    assert got == [args]
    assert handle._args == args
    assert handle._args is handle._args


def test_one_argument_shows_in_the_repr_and_the_error_report(any_loop):
    reports = []
    any_loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))

    def fails(arg):
        raise ValueError(arg)

    handle = any_loop.call_soon(fails, "the-arg")
    # 3.13 shows a callback's arguments only in debug mode.
    shown = "fails()" if sys.version_info >= (3, 13) else "fails('the-arg')"
    assert shown in repr(handle)
    run_forever_once(any_loop)
    assert len(reports) == 1
    assert shown in reports[0]["message"]
    assert reports[0]["handle"] is handle
    assert isinstance(reports[0]["exception"], ValueError)


def test_a_callback_that_cancels_its_own_handle_keeps_its_argument(any_loop):
    got = []
    handles = []

    def cb(arg):
        handles[0].cancel()
        got.append(arg)
        got.append(handles[0]._args)

    handles.append(any_loop.call_soon(cb, ["payload"]))
    run_forever_once(any_loop)
    assert got == [["payload"], None]
    assert handles[0].cancelled()


def test_a_bound_method_gets_its_one_argument(any_loop):
    class Receiver:
        def __init__(self):
            self.got = []

        def take(self, arg):
            self.got.append(arg)

    r = Receiver()
    any_loop.call_soon(r.take, 7)
    any_loop.call_later(0, r.take, 8)
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert r.got == [7, 8]


def test_timer_handles_compare_by_their_one_argument(any_loop):
    a = any_loop.call_at(100.0, print, 1)
    b = any_loop.call_at(100.0, print, 1)
    c = any_loop.call_at(100.0, print, 2)
    assert a == b and a != c
    for h in (a, b, c):
        h.cancel()


class _CallableInstance:
    def __init__(self, got):
        self.got = got

    def __call__(self, *args):
        self.got.append(args)


def _callables(got):
    import functools

    def plain(*args):
        got.append(args)

    class Method:
        def take(self, *args):
            got.append(args)

    return {
        "function": plain,
        "bound method": Method().take,
        "lambda": lambda *a: got.append(a),
        "partial": functools.partial(plain),
        "instance with __call__": _CallableInstance(got),
    }


@pytest.mark.parametrize(
    "kind", ["function", "bound method", "lambda", "partial", "instance with __call__"]
)
@pytest.mark.parametrize("args", [(), (1,), (1, 2)])
def test_every_kind_of_callable_gets_its_arguments(any_loop, kind, args):
    got = []
    any_loop.call_soon(_callables(got)[kind], *args)
    any_loop.call_later(0, _callables(got)[kind], *args)
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert got == [args, args]


def test_builtins_and_classes_as_callbacks(any_loop):
    got = []
    any_loop.call_soon(got.append, "appended")
    any_loop.call_soon(got.extend, ("a", "b"))
    any_loop.call_soon(got.append, dict)
    run_forever_once(any_loop)
    assert got == ["appended", "a", "b", dict]


def test_a_callback_returning_a_value_is_fine(any_loop):
    reports = []
    any_loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
    any_loop.call_soon(lambda x: [x] * 3, "v")
    any_loop.call_soon(int, "12")
    run_forever_once(any_loop)
    assert reports == []


def test_a_builtin_callback_that_raises_is_reported(any_loop):
    reports = []
    any_loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
    any_loop.call_soon(int, "not a number")
    run_forever_once(any_loop)
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], ValueError)
    shown = "int()" if sys.version_info >= (3, 13) else "int('not a number')"
    assert reports[0]["message"].startswith(f"Exception in callback {shown}")


CTX_VAR = contextvars.ContextVar("call_paths_var", default=None)


def test_a_handed_out_context_is_tracked_and_outlives_the_handle(any_loop):
    contexts = []

    def cb():
        CTX_VAR.set("set inside")

    for _ in range(3):
        handle = any_loop.call_soon(cb)
        contexts.append(handle._context)  # get_context() is 3.12+ on stock
        assert gc.is_tracked(contexts[-1])
        del handle
    run_forever_once(any_loop)
    # The handles were reused or freed; the contexts handed out are whole.
    for _ in range(5):
        any_loop.call_soon(lambda: None)
    run_forever_once(any_loop)
    gc.collect()
    assert [ctx.run(CTX_VAR.get) for ctx in contexts] == ["set inside"] * 3


@pytest.mark.parametrize("hand_out", [False, True])
def test_a_cycle_through_a_kept_handle_and_its_context_is_collected(any_loop, hand_out):
    class Box:
        pass

    holder = [Box()]

    def cb():
        if hand_out:
            holder[0].context = holder[0].handle._context
        CTX_VAR.set(holder[0])

    holder[0].handle = any_loop.call_soon(cb)
    run_forever_once(any_loop)
    ref = weakref.ref(holder.pop())
    gc.collect()
    assert ref() is None


def test_many_queued_callbacks_in_fresh_contexts_run_in_them(any_loop):
    seen = []

    def cb(i):
        assert CTX_VAR.get() is None
        CTX_VAR.set(i)
        seen.append(CTX_VAR.get())

    for i in range(3000):
        any_loop.call_soon(cb, i)
    gc.collect()
    run_forever_once(any_loop)
    gc.collect()
    assert seen == list(range(3000))


class _Node:
    pass


def test_a_cycle_through_a_removed_readers_context_is_collected(any_loop):
    # A reader's handle is not hidden from the collector like a scheduled one, and
    # neither is the context it copied.
    r, w = os.pipe()
    box = {}

    def on_readable():
        node = _Node()
        CTX_VAR.set(node)  # the handle's own context refers to node
        box["node"] = node
        os.read(r, 1)

    try:
        os.write(w, b"x")
        handle = any_loop._add_reader(r, on_readable)
        run_forever_once(any_loop)
        run_forever_once(any_loop)
        any_loop.remove_reader(r)
        node = box.pop("node")
        node.handle = handle  # node -> handle -> its context -> node
        ref = weakref.ref(node)
        del node, handle
        gc.collect()
        assert ref() is None
    finally:
        os.close(r)
        os.close(w)


def test_a_reader_handle_reused_by_call_soon_is_hidden_and_collectable(any_loop):
    # A reader removed while its event is queued behind the remover: its handle is done
    # with and may be reused by call_soon; cycles through the new callback's context are
    # still collected.
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        any_loop.add_reader(r, lambda: None)
        any_loop.call_soon(lambda: any_loop.call_soon(any_loop.remove_reader, r))
        for _ in range(3):
            run_forever_once(any_loop)
        refs = []
        for _ in range(20):
            node = _Node()
            ctx = contextvars.copy_context()
            ctx.run(CTX_VAR.set, node)
            node.handle = ctx.run(any_loop.call_soon, lambda: None)
            refs.append(weakref.ref(node))
            del node, ctx
            run_forever_once(any_loop)
        gc.collect()
        assert [ref() for ref in refs if ref() is not None] == []
    finally:
        os.close(r)
        os.close(w)


def test_asyncio_futures_given_a_module_class_with_a_property_is_followed(any_loop, monkeypatch):
    class Module(type(asyncio.futures)):
        @property
        def Future(self):  # noqa: N802 (the attribute's name)
            return _OtherFuture

    any_loop.create_future()  # the loop has looked the type up once
    monkeypatch.setattr(asyncio.futures, "__class__", Module)
    assert type(any_loop.create_future()) is _OtherFuture
