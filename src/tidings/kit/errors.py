"""One exception hierarchy for everything a caller can get wrong; mapped once to HTTP."""

from __future__ import annotations

from typing import Any


class TidingsError(Exception):
    """An error with a stable code, a message a person can act on, and the offending field."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", "field"?, ...}}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.details)
        return {"error": error}

    def headers(self) -> dict[str, str] | None:
        """HTTP headers the answer carries besides the body, if any."""
        return None


class Invalid(TidingsError):
    status = 422
    code = "invalid"


class Unauthenticated(TidingsError):
    status = 401
    code = "unauthenticated"


class Forbidden(TidingsError):
    status = 403
    code = "forbidden"


class NotFound(TidingsError):
    status = 404
    code = "not_found"


class Conflict(TidingsError):
    status = 409
    code = "conflict"


class Unavailable(TidingsError):
    """Tidings cannot serve the request now (its database does not answer); the same
    request may succeed later. With ``retry_after``, the answer says when to try."""

    status = 503
    code = "unavailable"

    def __init__(
        self, message: str, *, retry_after: int | None = None, field: str | None = None
    ) -> None:
        if retry_after is None:
            super().__init__(message, field=field)
        else:
            super().__init__(message, field=field, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class UnsupportedMediaType(TidingsError):
    status = 415
    code = "unsupported_media_type"


class LimitReached(TidingsError):
    """Creating one more of something would pass the bound a deployment sets on it."""

    status = 409
    code = "limit_reached"


class TooLarge(TidingsError):
    status = 413
    code = "too_large"


class RateLimited(TidingsError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}
