"""Logs: JSON lines for machines, readable lines in a terminal, through one pipeline.

``configure`` routes both ``structlog`` loggers and the standard library's ``logging``
through the same processors, so every line — Tidings' own and its libraries' — carries
the level, the logger, a UTC timestamp, the trace and span ids of the current span, the
job kind and attempt inside the worker, and whatever ids the code bound with ``bound``
(``event_id``, ``notification_id``, ``delivery_id``).

At INFO and above, email addresses are masked wherever they appear in a line: provider
replies and bounce diagnostics quote them, and they are personal data. Message-IDs look
like addresses (``<id@domain>``) but name a message, not a person, and are what an
operator searches the logs for: a field named ``message_id`` (or ``Message-ID``), a value
labelled ``Message-ID:``, and Tidings' own ``<delivery-id@domain>`` are left as they are.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from tidings.kit import job_context, tracing

Format = Literal["auto", "json", "console"]

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ADDRESS_OR_MESSAGE_ID = re.compile(
    # Tidings' Message-IDs: the delivery id (a UUID, never a person's name) at the domain.
    rf"(?P<own><{_UUID}@[^<>\s@]+>)"
    # Any Message-ID labelled as one, as in a header or key=value text.
    r"|(?P<labelled>\b(?:message[-_]id|in-reply-to|references)\s*[:=]\s*<[^<>\s]+>)"
    rf"|{_EMAIL.pattern}",
    re.IGNORECASE,
)
_MASK = "<email>"
_HANDLER_NAME = "tidings"
_QUIET_AT_INFO = ("asyncio", "aiosqlite", "httpx", "httpcore", "nats", "watchfiles")


def wants_json(log_format: Format, stream: TextIO | None = None) -> bool:
    """JSON unless asked for the console format, or, by default, writing to a terminal."""
    if log_format != "auto":
        return log_format == "json"
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return not (callable(isatty) and isatty())


def configure(
    json: bool | None = None,
    *,
    level: str | int = "info",
    stream: TextIO | None = None,
) -> None:
    """Send every log line to ``stream`` (standard error by default), as JSON or, when
    ``json`` is False, for a person to read; ``json=None`` picks JSON unless the stream
    is a terminal. Calling it again replaces the previous set-up."""
    target = stream if stream is not None else sys.stderr
    as_json = wants_json("auto", target) if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_job,
        add_trace,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_colours(target))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(numeric)
    for name in _QUIET_AT_INFO:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind ids (``event_id=…``) to every line logged while the block runs; None is left
    out."""
    values = {key: value for key, value in ids.items() if value is not None}
    if not values:
        yield
        return
    with structlog.contextvars.bound_contextvars(**values):
        yield


def add_trace(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Add the current span's ``trace_id`` and ``span_id``."""
    for key, value in tracing.ids().items():
        event.setdefault(key, value)
    return event


def add_job(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Add the running job's kind and attempt, inside the worker."""
    run = job_context.current()
    if run is not None:
        event.setdefault("job", run.stage)
        event.setdefault("attempt", run.attempt)
    return event


def mask_personal_data(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Mask email addresses in every text of a line logged at INFO or above."""
    if method == "debug" or event.get("level") == "debug":
        return event
    _mask(event)
    return event


def _mask(values: MutableMapping[str, Any]) -> None:
    for key, value in values.items():
        if _names_a_message_id(key):
            continue
        if isinstance(value, str) and "@" in value:
            values[key] = mask_addresses(value)
        elif isinstance(value, dict):
            _mask(value)


def mask_addresses(text: str) -> str:
    """``text`` with every email address masked, and every Message-ID kept."""
    return _ADDRESS_OR_MESSAGE_ID.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    if match.group("own") or match.group("labelled"):
        return match.group(0)
    return _MASK


def _names_a_message_id(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_").endswith("message_id")


def _colours(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
