"""What the sync and async clients share: how requests are made, which answers are
retried and after how long, and how answers become models or exceptions. The clients
themselves only do the I/O and the waiting."""

from __future__ import annotations

import datetime as dt
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tidings import __version__
from tidings.client import errors
from tidings.client.models import Event, Retry

USER_AGENT = f"tidings-python/{__version__}"
MAX_BATCH = 1000
"""The most events one ``/v1/events/batch`` request carries (the server's default limit)."""


class DeprecatedType(DeprecationWarning):
    """Tidings accepted an event of a deprecated type; the message says since when, until
    when, and what to publish instead."""


@dataclass(frozen=True)
class Call:
    """One API request, as sent on every try."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)


def segment(value: str) -> str:
    """A path segment, escaped (user ids and topics may hold ``/`` or ``#``)."""
    return quote(value, safe="")


def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def event_body(
    type: str,
    *,
    data: Mapping[str, Any] | None,
    recipients: Sequence[str | Mapping[str, Any]] | None,
    topic: str | None,
    actor: Mapping[str, Any] | None,
    tenant: str | None,
    idempotency_key: str | None,
    send_at: dt.datetime | None = None,
    cancellation_key: str | None = None,
) -> Event:
    values: dict[str, Any] = {
        "type": type,
        "data": dict(data or {}),
        "recipients": None if recipients is None else [_recipient(r) for r in recipients],
        "topic": topic,
        "actor": None if actor is None else dict(actor),
        "tenant": tenant,
    }
    if idempotency_key is not None:
        values["idempotency_key"] = idempotency_key
    if send_at is not None:
        values["send_at"] = send_at
    if cancellation_key is not None:
        values["cancellation_key"] = cancellation_key
    return Event(**values)


def _recipient(recipient: str | Mapping[str, Any]) -> str | dict[str, Any]:
    return recipient if isinstance(recipient, str) else dict(recipient)


def chunks(events: Sequence[Event], size: int = MAX_BATCH) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield list(events[start : start + size])


def retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def backoff(retry: Retry, tries: int) -> float:
    """Seconds to wait after try number ``tries`` (1-based): full jitter, capped."""
    return random.uniform(0, min(retry.cap, retry.base * 2 ** (tries - 1)))


def delay(retry: Retry, tries: int, response: httpx.Response) -> float | None:
    """Seconds to wait after the answer to try number ``tries``: the backoff, and no
    less than the server's ``Retry-After``; None when the server asks for longer than
    ``retry.max_retry_after`` (the caller then gets the error at once, not a long sleep)."""
    wait = backoff(retry, tries)
    asked = errors.retry_after_of(response)
    if asked is None:
        return wait
    if asked > retry.max_retry_after:
        return None
    return max(wait, asked)


def answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer (None for 204); raises the API's error otherwise.
    An answer about a deprecated type warns with :class:`DeprecatedType`."""
    if response.status_code >= 400:
        raise errors.from_response(response)
    if "Deprecation" in response.headers:
        warning = response.headers.get("Warning", "a deprecated notification type")
        warnings.warn(DeprecatedType(warning), stacklevel=4)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
