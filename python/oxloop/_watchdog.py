"""Stall reports: what the Rust watchdog found blocking the loop, and where they go.

The watchdog thread calls `stall_started` while a callback is still holding the loop;
the loop thread calls `stall_finished` when it returns. Reports go to the `oxloop` logger
at WARNING, or to the callback given to `loop.set_stall_watchdog`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import traceback
from asyncio import tasks

logger = logging.getLogger("oxloop")


@dataclasses.dataclass(frozen=True)
class StallReport:
    """One callback or task step that held the event loop too long."""

    duration: float  # seconds: so far (finished=False) or in total (finished=True)
    finished: bool
    handle: str  # repr of the handle that was running
    task: str | None  # repr of the task, when the handle was a task step
    task_name: str | None
    stack: str  # the loop thread's Python stack when the stall was noticed
    thread_id: int  # the loop thread's threading.get_ident()

    def message(self) -> str:
        what = self.task if self.task is not None else self.handle
        if self.finished:
            return f"Event loop was blocked for {self.duration:.3f} s by {what}"
        return (
            f"Event loop blocked for {self.duration:.3f} s (and counting) by {what}\n"
            f"Loop thread stack (most recent call last):\n{self.stack}"
        )


def _task_of(handle):
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    return owner if isinstance(owner, tasks.Task) else None


def _deliver(report: StallReport, callback) -> None:
    if callback is None:
        logger.warning(report.message())
        return
    try:
        callback(report)
    except Exception:
        logger.exception("oxloop: the stall watchdog callback failed")


def stall_started(handle, duration: float, thread_id: int, callback, running: bool) -> StallReport:
    """The ongoing report. `running` is False when the callback held the GIL until it
    returned (C code), so its stack could not be read while it was stuck."""
    frame = sys._current_frames().get(thread_id) if running else None
    if frame is not None:
        stack = "".join(traceback.format_stack(frame)).rstrip()
    elif running:
        stack = "<no Python frame>"
    else:
        stack = "<not captured: the callback held the GIL until it returned>"
    task = _task_of(handle)
    report = StallReport(
        duration=duration,
        finished=False,
        handle=repr(handle),
        task=repr(task) if task is not None else None,
        task_name=task.get_name() if task is not None else None,
        stack=stack,
        thread_id=thread_id,
    )
    _deliver(report, callback)
    return report


def stall_finished(report: StallReport, duration: float, callback) -> None:
    _deliver(dataclasses.replace(report, duration=duration, finished=True), callback)
