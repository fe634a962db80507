"""oxloop: an asyncio event loop for CPython whose core is written in Rust.

Opt in per loop: `oxloop.run(main())`, `asyncio.run(main(), loop_factory=oxloop.new_event_loop)`
(3.12+), or, through asyncio's policy system (deprecated since Python 3.14),
`oxloop.install()`. Importing oxloop changes nothing in asyncio.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import coroutines, events, unix_events

from ._loop import Loop
from ._watchdog import StallReport

__version__ = "0.1.0"

# CPython 3.14 deprecates asyncio's policy system (removal planned for 3.16): its policy
# classes are reached through a module __getattr__ that warns, and
# get/set_event_loop_policy warn. oxloop's policy API follows on the same versions:
# `oxloop.EventLoopPolicy` warns on access as `asyncio.DefaultEventLoopPolicy` does (and is
# left out of __all__, as stock's are), and `install()` warns as set_event_loop_policy does.
_POLICY_DEPRECATED = sys.version_info >= (3, 14)
_POLICY_ADVICE = "use oxloop.run(main()) or asyncio.run(main(), loop_factory=oxloop.new_event_loop)"

__all__ = ["Loop", "StallReport", "install", "new_event_loop", "run"]
if not _POLICY_DEPRECATED:
    __all__.insert(0, "EventLoopPolicy")


def new_event_loop() -> Loop:
    """Return a new oxloop event loop."""
    return Loop()


if _POLICY_DEPRECATED:
    _BasePolicy = unix_events._DefaultEventLoopPolicy
else:
    _BasePolicy = unix_events.DefaultEventLoopPolicy


class _EventLoopPolicy(_BasePolicy):
    """An asyncio event loop policy whose loops are oxloop loops.

    Based on the stock Unix policy, so its child-watcher API (3.13 and earlier) keeps
    working.
    """

    def new_event_loop(self) -> Loop:
        return Loop()


_EventLoopPolicy.__name__ = _EventLoopPolicy.__qualname__ = "EventLoopPolicy"

if not _POLICY_DEPRECATED:
    EventLoopPolicy = _EventLoopPolicy


def __getattr__(name: str):
    # Reached only for names not in the module (3.14+: EventLoopPolicy).
    if name == "EventLoopPolicy" and _POLICY_DEPRECATED:
        warnings.warn(
            "oxloop.EventLoopPolicy is deprecated and slated for removal with asyncio's "
            f"policy system in Python 3.16; {_POLICY_ADVICE}",
            DeprecationWarning,
            stacklevel=2,
        )
        return _EventLoopPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install() -> None:
    """Make asyncio's policy create oxloop loops (`asyncio.set_event_loop_policy`).

    Deprecated on Python 3.14 and later, with asyncio's policy system.
    """
    if _POLICY_DEPRECATED:
        warnings.warn(
            "oxloop.install() is deprecated and slated for removal with asyncio's policy "
            f"system in Python 3.16; {_POLICY_ADVICE}",
            DeprecationWarning,
            stacklevel=2,
        )
        events._set_event_loop_policy(_EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(_EventLoopPolicy())


def run(main, *, debug=None, stall_threshold=None):
    """Run coroutine `main` on a new oxloop loop, as `asyncio.run` does, and close it.

    `stall_threshold` (seconds) turns on the stall watchdog for that loop.
    """
    factory = new_event_loop
    if stall_threshold:

        def factory():
            loop = new_event_loop()
            loop.set_stall_watchdog(stall_threshold)
            return loop

    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=factory)
    if sys.version_info >= (3, 11):
        # asyncio.run checks this before making a loop; Runner alone would not.
        if events._get_running_loop() is not None:
            raise RuntimeError("asyncio.run() cannot be called from a running event loop")
        with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)
    return _run_310(main, debug, factory)


def _run_310(main, debug, factory):
    # Python 3.10 has no asyncio.Runner: the same steps as its asyncio.run.
    if events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = factory()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop) -> None:
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for task in pending:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
