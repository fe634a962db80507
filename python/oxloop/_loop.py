"""`oxloop.Loop`: the public event loop class.

The engine (ready queue, timers, polling, readers/writers, signal dispatch) is the Rust
`LoopCore`; this class adds what runs once per call or only on slow paths: the
run_forever/run_until_complete wrappers, tasks and task factories, the exception handler,
the default executor, name resolution, signal-handler installation and async generator
hooks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import signal
import socket
import sys
import threading
import warnings
import weakref
from asyncio import coroutines, events, futures, tasks
from asyncio.log import logger

from . import _helpers
from ._datagram import DatagramMethods
from ._net import NetMethods
from ._oxloop import LoopCore, _set_helpers
from ._process import ProcessMethods
from ._sock import SockMethods

_set_helpers(
    _helpers.format_callback_source,
    _helpers.extract_stack,
    _helpers.check_callback,
    _helpers.log_slow_callback,
)

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)
_DEBUG_STACK_DEPTH = 10


def _stop_when_done(fut) -> None:
    # Stop the loop that run_until_complete is running, unless the future ended with
    # SystemExit/KeyboardInterrupt: those propagate out of run_forever by themselves.
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return
    futures._get_loop(fut).stop()


def _ignore_signal(signum, frame) -> None:
    """C-level handler: the wakeup fd does the work, the loop runs the real callback."""


class Loop(
    ProcessMethods, NetMethods, DatagramMethods, SockMethods, LoopCore, asyncio.AbstractEventLoop
):
    """An asyncio event loop whose core runs in Rust."""

    # The loop's own Python-side state lives in slots, not in the instance __dict__ (which
    # stays for anything else code sets on a loop): the C Future and Task look `call_soon`
    # and `get_debug` up on the loop per call, and a method lookup searches the instance
    # dict after the type, a miss in a dict of a dozen keys (about 100 instructions).
    __slots__ = (
        "_exception_handler",
        "_default_executor",
        "_executor_shutdown_called",
        "_asyncgens",
        "_asyncgens_shutdown_called",
        "_coroutine_origin_tracking_enabled",
        "_coroutine_origin_tracking_saved_depth",
        "_signal_socks",
        "_signals",
        "_unix_inodes",
        "_child_watches",
    )

    def __init__(self) -> None:
        self._exception_handler = None
        self._task_factory = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._signal_socks = None  # (read end, write end) once a signal handler exists
        self._signals = set()
        self._unix_inodes = {}  # listening Unix socket -> inode, to unlink on close (3.13)
        self._child_watches = {}  # pid -> _process._ChildWatch of each child not reaped yet
        self.set_debug(coroutines._is_debug_mode())
        stall_ms = os.environ.get("OXLOOP_STALL_MS", "").strip()
        if stall_ms:
            try:
                threshold = int(stall_ms) / 1000
            except ValueError:
                raise ValueError(
                    f"OXLOOP_STALL_MS must be a whole number of milliseconds, got {stall_ms!r}"
                ) from None
            self.set_stall_watchdog(threshold)

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # ----------------------------------------------------------------- running

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _check_closed(self) -> None:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def run_forever(self) -> None:
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_until_stopped()
        finally:
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_until_complete(self, future):
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller cannot see this task, so don't warn if it is left pending.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # The exception is raised here: retrieve it so it is not logged too.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._signals:
            if sys.is_finalizing():
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown "
                    f"stage, skipping signal handlers removal",
                    ResourceWarning,
                    stacklevel=1,
                    source=self,
                )
                self._signals.clear()
            else:
                for sig in list(self._signals):
                    self.remove_signal_handler(sig)
        if self.get_debug():
            logger.debug("Close %r", self)
        self._close_children()
        self._close_core()
        if self._signal_socks is not None:
            for s in self._signal_socks:
                s.close()
            self._signal_socks = None
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ------------------------------------------------------------------- debug

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # ----------------------------------------------------------- futures/tasks

    # create_future and create_task are LoopCore's (Rust); _task_factory is its property.

    def set_task_factory(self, factory) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    # -------------------------------------------------------------- exceptions

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context) -> None:
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception else False
        text = _helpers.exception_log_text(context, self._current_handle)
        logger.error(text, exc_info=exc_info)

    def call_exception_handler(self, context) -> None:
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            ctx = None
            if _PY312:
                owner = context.get("task") or context.get("future") or context.get("handle")
                if owner is not None and hasattr(owner, "get_context"):
                    ctx = owner.get_context()
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )

    # --------------------------------------------------------------- executors

    def _check_default_executor(self) -> None:
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            _helpers.check_callback(func, "run_in_executor")
        if executor is None:
            self._check_default_executor()
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            if _PY311:
                raise TypeError("executor must be ThreadPoolExecutor instance")
            # 3.10 still accepts other executors, with a warning.
            warnings.warn(
                "Using the default executor that is not an instance of "
                "ThreadPoolExecutor is deprecated and will be prohibited in Python 3.9",
                DeprecationWarning,
                2,
            )
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None) -> None:
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()
        thread = threading.Thread(target=self._join_executor, args=(executor, done))
        thread.start()
        try:
            if timeout is None:
                await done
            else:
                await asyncio.wait_for(asyncio.shield(done), timeout)
        except asyncio.TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    def _join_executor(self, executor, done) -> None:
        try:
            executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, done, None)
        except Exception as ex:
            if not self.is_closed() and not done.cancelled():
                self.call_soon_threadsafe(done.set_exception, ex)

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # ----------------------------------------------------------------- signals

    def _check_signal(self, sig) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args) -> None:
        if coroutines.iscoroutine(callback) or _helpers.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._signal_socks is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._signal_socks = (rsock, wsock)
            self._set_signal_fd(rsock.fileno())
        try:
            # Raises ValueError outside the main thread.
            signal.set_wakeup_fd(self._signal_socks[1].fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        self._add_signal_handle(sig, callback, *args)
        self._signals.add(sig)
        try:
            signal.signal(sig, _ignore_signal)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            self._signals.discard(sig)
            self._remove_signal_handle(sig)
            if not self._signals:
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig) -> bool:
        self._check_signal(sig)
        if sig not in self._signals:
            return False
        self._signals.discard(sig)
        self._remove_signal_handle(sig)
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signals:
            self._clear_wakeup_fd()
        return True

    def _clear_wakeup_fd(self) -> None:
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    # ------------------------------------------------------ async generators

    def _asyncgen_firstiter_hook(self, agen) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )


def _set_result_unless_cancelled(fut, result) -> None:
    if not fut.cancelled():
        fut.set_result(result)
