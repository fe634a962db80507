"""Type stubs for the public oxloop API."""

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from typing_extensions import deprecated

from ._oxloop import LoopCore
from ._watchdog import StallReport as StallReport

_T = TypeVar("_T")

__version__: str

class Loop(LoopCore, asyncio.AbstractEventLoop):
    def __init__(self) -> None: ...

if sys.version_info >= (3, 14):
    @deprecated("asyncio's policy system is deprecated since Python 3.14; use oxloop.run()")
    class EventLoopPolicy(asyncio.events._AbstractEventLoopPolicy):
        def new_event_loop(self) -> Loop: ...

    @deprecated("asyncio's policy system is deprecated since Python 3.14; use oxloop.run()")
    def install() -> None: ...

else:
    class EventLoopPolicy(asyncio.unix_events.DefaultEventLoopPolicy):
        def new_event_loop(self) -> Loop: ...

    def install() -> None: ...

def new_event_loop() -> Loop: ...
def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    stall_threshold: float | None = None,
) -> _T: ...
