"""The event loop every Tidings process runs on: uvloop where it is installed, the
standard asyncio loop elsewhere (Windows, which uvloop does not support)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is installed wherever it runs
    uvloop = None  # type: ignore[assignment]

UVLOOP = uvloop is not None
"""Whether processes run on uvloop."""

UVICORN_LOOP = "uvloop" if UVLOOP else "asyncio"
"""The same choice, in the words of uvicorn's ``loop`` option."""


def factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A new event loop of the kind processes run on; None means asyncio's own."""
    return uvloop.new_event_loop if uvloop is not None else None


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop of that kind."""
    with asyncio.Runner(loop_factory=factory()) as runner:
        return runner.run(main)


def name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """What the running loop (or ``loop``) is: ``uvloop`` or ``asyncio``."""
    loop = loop or asyncio.get_running_loop()
    return type(loop).__module__.split(".", 1)[0]
