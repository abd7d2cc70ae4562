"""What the SDK raises: one class per kind of failure, each with the API's error code."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class TidingsError(Exception):
    """A request Tidings refused or could not answer.

    ``code`` is the API's stable error code (``invalid``, ``forbidden``, ``conflict``…),
    ``field`` the offending field when the API named one, ``details`` the rest of the
    error body, ``status`` the HTTP status (None when no answer came).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.message = message
        self.code = code
        self.status = status
        self.field = field
        self.details = details or {}


class Invalid(TidingsError):
    """422: the request does not fit the API or the type's schema; ``field`` says where."""


class Unauthenticated(TidingsError):
    """401: no key, or a key Tidings does not know (revoked, mistyped)."""


class Forbidden(TidingsError):
    """403: the key may not publish this type or use this endpoint."""


class NotFound(TidingsError):
    """404: no such event, user, delivery…"""


class Conflict(TidingsError):
    """409: the idempotency key was used before with a different body."""


class RateLimited(TidingsError):
    """429 after the client's last retry, or at once when the server asks to wait longer
    than the client's ``Retry.max_retry_after``; ``retry_after`` says how long."""

    @property
    def retry_after(self) -> float | None:
        """The seconds the server asked to wait (its ``Retry-After``), if it said."""
        value = self.details.get("retry_after")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None


class ServerError(TidingsError):
    """5xx after the client's last retry."""


class Unreachable(TidingsError):
    """No answer at all (connection refused or reset, timeout) after the last retry."""


_BY_STATUS: dict[int, type[TidingsError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: RateLimited,
}


def from_response(response: httpx.Response) -> TidingsError:
    """The exception for an error answer, from its ``{"error": {...}}`` body."""
    try:
        body = response.json()
        error = dict(body["error"])
    except (ValueError, KeyError, TypeError):
        error = {"code": f"http_{response.status_code}", "message": response.text[:500]}
    code = str(error.pop("code", f"http_{response.status_code}"))
    message = str(error.pop("message", response.reason_phrase))
    field = error.pop("field", None)
    if response.status_code == 429 and "retry_after" not in error:
        asked = retry_after_of(response)
        if asked is not None:
            error["retry_after"] = asked
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else TidingsError
    return kind(
        message,
        code=code,
        status=response.status_code,
        field=None if field is None else str(field),
        details=error,
    )


def retry_after_of(response: httpx.Response) -> float | None:
    """The seconds the answer's ``Retry-After`` asks for (a number or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def unreachable(exc: httpx.TransportError) -> Unreachable:
    return Unreachable(
        f"no answer from Tidings: {type(exc).__name__}: {exc}", code="unreachable", status=None
    )
