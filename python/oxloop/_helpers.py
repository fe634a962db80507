"""Formatting and debug helpers shared by the Rust core and the Python glue.

They produce the stock loop's exact texts (callback sources, slow-callback warnings,
exception-handler log lines) so that logs read the same on oxloop as on asyncio.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from asyncio import coroutines, format_helpers, tasks
from asyncio.log import logger

# 3.13 shows callback arguments only in debug mode and takes a `debug` keyword for it.
_SOURCE_PARAMS = inspect.signature(format_helpers._format_callback_source).parameters
_SOURCE_TAKES_DEBUG = "debug" in _SOURCE_PARAMS

# 3.14 deprecates asyncio.iscoroutinefunction; its loop calls the private twin instead.
iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", coroutines.iscoroutinefunction)


def format_callback_source(callback, args, debug: bool) -> str:
    if _SOURCE_TAKES_DEBUG:
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def extract_stack(limit: int):
    # Frame 0 is this function; frame 1 the Python code that called into the loop.
    return format_helpers.extract_stack(sys._getframe(1), limit)


def check_callback(callback, method: str) -> None:
    if coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")


def describe_handle(handle) -> str:
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, tasks.Task):
        return repr(owner)
    return str(handle)


def log_slow_callback(handle, seconds: float) -> None:
    logger.warning("Executing %s took %.3f seconds", describe_handle(handle), seconds)


def exception_log_text(context: dict, current_handle) -> str:
    """The message `default_exception_handler` logs for `context`."""
    lines = [context.get("message") or "Unhandled exception in event loop"]
    extra = dict(context)
    if "source_traceback" not in extra and current_handle is not None:
        created = current_handle._source_traceback
        if created:
            extra["handle_traceback"] = created
    for key in sorted(extra):
        if key in ("message", "exception"):
            continue
        value = extra[key]
        if key == "source_traceback":
            stack = "".join(traceback.format_list(value)).rstrip()
            value = "Object created at (most recent call last):\n" + stack
        elif key == "handle_traceback":
            stack = "".join(traceback.format_list(value)).rstrip()
            value = "Handle created at (most recent call last):\n" + stack
        else:
            value = repr(value)
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
