"""What every command shares: where it prints, how it fails, and the event loop it runs
coroutines on."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from tidings.kit import loops

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make`` returns to its end, and return its result."""
    # The same event loop as the API's (uvloop where installed): the worker spends a
    # quarter of its time in it.
    return loops.run(make())


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the exit, code 1, is for the caller to raise."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)
