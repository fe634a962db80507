"""Tests of exception handling: handlers, contexts, and the stock 'asyncio' logger output."""

import asyncio
import contextvars
import gc
import logging
import socket
import sys

import pytest
from support import VAR, make_loop, run, run_forever_once


@pytest.fixture
def asyncio_log(caplog):
    """Records of the 'asyncio' logger at WARNING and above."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    return caplog


def asyncio_records(caplog, level=logging.ERROR):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno == level]


def test_exception_handler_get_set_and_validation(any_loop):
    assert any_loop.get_exception_handler() is None

    def handler(loop, context):
        pass

    any_loop.set_exception_handler(handler)
    assert any_loop.get_exception_handler() is handler
    any_loop.set_exception_handler(None)
    assert any_loop.get_exception_handler() is None
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        any_loop.set_exception_handler("not callable")


def test_callback_exception_goes_to_the_handler_with_stock_context(any_loop):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append((loop, ctx)))

    def bad():
        raise ZeroDivisionError("in callback")

    h = any_loop.call_soon(bad)
    any_loop.call_soon(calls.append, "loop kept going")
    run_forever_once(any_loop)
    assert len(calls) == 2 and calls[1] == "loop kept going"
    loop, ctx = calls[0]
    assert loop is any_loop
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h


def test_timer_callback_exception_goes_to_the_handler(any_loop):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append(ctx))
    done = any_loop.create_future()

    def bad():
        raise OSError("in timer")

    h = any_loop.call_later(0.001, bad)
    any_loop.call_later(0.01, done.set_result, None)
    run(any_loop, done)
    assert len(calls) == 1
    assert calls[0]["handle"] is h
    assert isinstance(calls[0]["exception"], OSError)


def test_default_handler_logs_callback_exception_on_asyncio_logger(any_loop, asyncio_log):
    def bad():
        raise ZeroDivisionError("logged")

    any_loop.call_soon(bad)
    run_forever_once(any_loop)
    records = asyncio_records(asyncio_log)
    assert len(records) == 1
    rec = records[0]
    assert rec.getMessage().startswith("Exception in callback ")
    assert "\nhandle: <Handle " in rec.getMessage()
    assert rec.exc_info[0] is ZeroDivisionError
    assert str(rec.exc_info[1]) == "logged"


def test_default_exception_handler_output_format(any_loop, asyncio_log):
    exc = RuntimeError("explicit")
    try:
        raise exc
    except RuntimeError:
        pass
    any_loop.default_exception_handler(
        {"message": "Something broke", "exception": exc, "zeta": 1, "alpha": "a"}
    )
    records = asyncio_records(asyncio_log)
    assert len(records) == 1
    assert records[0].getMessage() == "Something broke\nalpha: 'a'\nzeta: 1"
    assert records[0].exc_info[1] is exc


def test_default_exception_handler_without_message_or_exception(any_loop, asyncio_log):
    any_loop.default_exception_handler({"other": [1]})
    records = asyncio_records(asyncio_log)
    assert len(records) == 1
    assert records[0].getMessage() == "Unhandled exception in event loop\nother: [1]"
    assert not records[0].exc_info


def test_call_exception_handler_uses_default_handler(any_loop, asyncio_log):
    any_loop.call_exception_handler({"message": "direct call"})
    assert [r.getMessage() for r in asyncio_records(asyncio_log)] == ["direct call"]


def test_call_exception_handler_uses_custom_handler(any_loop, asyncio_log):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append((loop, ctx)))
    context = {"message": "to custom", "extra": 1}
    any_loop.call_exception_handler(context)
    assert calls == [(any_loop, context)]
    assert asyncio_records(asyncio_log) == []


def test_failing_custom_handler_falls_back_to_default(any_loop, asyncio_log):
    def handler(loop, ctx):
        raise ValueError("handler failed")

    any_loop.set_exception_handler(handler)
    any_loop.call_exception_handler({"message": "original"})
    records = asyncio_records(asyncio_log)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert msg.startswith("Unhandled error in exception handler\ncontext: ")
    assert "'original'" in msg
    assert records[0].exc_info[0] is ValueError


def test_custom_handler_can_delegate_to_default(any_loop, asyncio_log):
    def handler(loop, ctx):
        loop.default_exception_handler(ctx)

    any_loop.set_exception_handler(handler)
    any_loop.call_exception_handler({"message": "delegated"})
    assert [r.getMessage() for r in asyncio_records(asyncio_log)] == ["delegated"]


def test_task_exception_never_retrieved_is_reported(any_loop):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append(ctx))

    async def fail():
        raise LookupError("unretrieved")

    task = any_loop.create_task(fail())
    run(any_loop, asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()
    assert len(calls) == 1
    ctx = calls[0]
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], LookupError)
    assert isinstance(ctx["future"], asyncio.Task)


def test_exception_in_add_reader_callback_goes_to_handler(any_loop):
    calls = []
    any_loop.set_exception_handler(lambda loop, ctx: calls.append(ctx))
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        done = any_loop.create_future()

        def bad():
            any_loop.remove_reader(a)
            done.set_result(None)
            raise ValueError("in reader")

        any_loop.add_reader(a, bad)
        run(any_loop, done)
        run_forever_once(any_loop)
        assert len(calls) == 1
        assert calls[0]["message"].startswith("Exception in callback ")
        assert isinstance(calls[0]["exception"], ValueError)
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="handler runs in the handle context on 3.12+"
)
def test_custom_handler_runs_in_the_failing_handle_context(any_loop):
    seen = []
    any_loop.set_exception_handler(lambda loop, ctx: seen.append(VAR.get()))
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "handle-ctx")

    def bad():
        raise ValueError

    any_loop.call_soon(bad, context=ctx)
    run_forever_once(any_loop)
    assert seen == ["handle-ctx"]


def _raiser(*args):
    raise ValueError("compare")


def _fail_soon(lp):
    # One call site for both loops, so debug-mode tracebacks agree too.
    return lp.call_soon(_raiser, 1, "a")


@pytest.mark.parametrize("debug", [False, True])
def test_callback_exception_log_text_matches_stock(loop, caplog, debug):
    caplog.set_level(logging.ERROR, logger="asyncio")
    stock = make_loop("stock")
    try:
        texts = []
        for lp in (loop, stock):
            lp.set_debug(debug)
            caplog.clear()
            _fail_soon(lp)
            run_forever_once(lp)
            records = asyncio_records(caplog)
            assert len(records) == 1
            texts.append(records[0].getMessage())
        assert texts[0] == texts[1]
    finally:
        stock.close()
