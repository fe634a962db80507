"""Type stubs for the public oxloop API."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._oxloop import LoopCore
from ._watchdog import StallReport as StallReport

_T = TypeVar("_T")

__version__: str

class Loop(LoopCore, asyncio.AbstractEventLoop):
    def __init__(self) -> None: ...

class EventLoopPolicy(asyncio.unix_events.DefaultEventLoopPolicy):
    def new_event_loop(self) -> Loop: ...

def new_event_loop() -> Loop: ...
def install() -> None: ...
def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    stall_threshold: float | None = None,
) -> _T: ...
