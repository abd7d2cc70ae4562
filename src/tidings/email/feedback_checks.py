"""The shape checks the feedback parsers share: JSON objects, lists, strings, email
addresses, Message-IDs and times, read at a JSON path.

Each raises ``errors.Invalid`` with ``field`` set to the path of the value it refused.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import parseaddr
from typing import Any

import orjson

from tidings.email.feedback import MAX_DETAIL
from tidings.kit import errors


def json_object(raw: bytes, path: str, message: str) -> dict[str, Any]:
    """``raw`` read as a JSON object; ``message`` says what it should have been."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.Invalid(f"{message} It is not valid JSON: {exc}.", field=path) from exc
    return object_at(value, path, message)


def object_at(value: Any, path: str, message: str | None = None) -> dict[str, Any]:
    """``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise errors.Invalid(message or f"'{path}' must be a JSON object.", field=path)
    return value


def list_at(value: Any, path: str) -> list[Any]:
    """``value`` if it is a JSON list."""
    if not isinstance(value, list):
        raise errors.Invalid(f"'{path}' must be a list.", field=path)
    return value


def string_at(value: Any, path: str, *, required: bool = False) -> str | None:
    """``value`` if it is a string, non-empty when ``required``; None when absent and not
    ``required``."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise errors.Invalid(f"'{path}' must be a non-empty string.", field=path)
    return value


def address_at(value: str | None, path: str) -> str:
    """The email address in ``value`` (a bare address or ``Name <address>``)."""
    _name, address = parseaddr(value or "")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 320 or re.search(r"\s", address):
        raise errors.Invalid(f"'{path}' must be an email address.", field=path)
    return address


def normal_message_id(value: str | None) -> str | None:
    """Message-IDs compare in their ``<local@domain>`` form, whoever dropped the brackets."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def clipped_detail(value: str | None) -> str | None:
    """A provider's words, cut to ``MAX_DETAIL`` characters."""
    return None if value is None else value[:MAX_DETAIL]


def time_at(value: Any, path: str) -> dt.datetime:
    """``value`` read as an ISO 8601 time with an offset, in UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise errors.Invalid(f"'{path}' must be an ISO 8601 time with a UTC offset.", field=path)
    return parsed.astimezone(dt.UTC)
