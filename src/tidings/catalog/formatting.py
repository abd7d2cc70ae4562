"""Locale-aware filters for catalog templates: dates, times and numbers through Babel.

Every filter formats in the render's locale (the ``locale`` template variable, else
``recipient.locale``, else English) and shows times in ``recipient.timezone`` when it
names a known IANA zone (else UTC). Dates may be ``date``/``datetime`` objects or ISO 8601
strings, as they arrive in a JSON payload.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale, dates, numbers
from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

from tidings.catalog import locales

FALLBACK_LOCALE = "en"


@functools.lru_cache(maxsize=256)
def babel_locale(tag: str) -> Locale:
    """The Babel locale for a tag (``fr-CA``, ``fr_CA``), or English when Babel lacks it."""
    found = locales.to_babel(tag)
    return found if found is not None else Locale.parse(FALLBACK_LOCALE)


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, TypeError, OSError, zoneinfo.ZoneInfoNotFoundError):
        # A bad profile value must not stop a notification; UTC is a readable answer.
        return dt.UTC


def _context_locale(context: Context) -> Locale:
    tag = context.get("locale")
    if not isinstance(tag, str):
        recipient = context.get("recipient")
        tag = recipient.get("locale") if isinstance(recipient, Mapping) else None
    return babel_locale(tag if isinstance(tag, str) else FALLBACK_LOCALE)


def _context_zone(context: Context) -> dt.tzinfo:
    recipient = context.get("recipient")
    name = recipient.get("timezone") if isinstance(recipient, Mapping) else None
    return _zone(name) if isinstance(name, str) and name else dt.UTC


def _blank(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def _to_datetime(value: Any, zone: dt.tzinfo) -> dt.datetime:
    """An aware datetime in ``zone``; naive input is taken as UTC, a bare date as midnight."""
    if isinstance(value, str):
        value = _parse_iso(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(zone)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), tzinfo=zone)
    raise TypeError(f"expected a date, a datetime or an ISO 8601 string, not {_kind(value)}")


def _to_date(value: Any, zone: dt.tzinfo) -> dt.date:
    if isinstance(value, str):
        value = _parse_iso(value)
    if isinstance(value, dt.datetime):
        # The day it is where the recipient lives, not in UTC.
        return _to_datetime(value, zone).date()
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a date, a datetime or an ISO 8601 string, not {_kind(value)}")


def _parse_iso(text: str) -> dt.date | dt.datetime:
    stripped = text.strip()
    try:
        if len(stripped) == 10:
            return dt.date.fromisoformat(stripped)
        return dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 date or datetime") from None


def _to_number(value: Any) -> int | float | Decimal:
    if isinstance(value, bool):
        raise TypeError("expected a number, not a boolean")
    if isinstance(value, int | float | Decimal):
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a number") from None
        if number.is_finite():
            return number
        raise ValueError(f"{value[:40]!r} is not a finite number")
    raise TypeError(f"expected a number, not {_kind(value)}")


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


@pass_context
def format_date(context: Context, value: Any, format: str = "medium") -> str:
    """``{{ data.due | format_date }}``; ``format``: short, medium, long, full or a pattern."""
    if _blank(value):
        return ""
    day = _to_date(value, _context_zone(context))
    return dates.format_date(day, format=format, locale=_context_locale(context))


@pass_context
def format_datetime(context: Context, value: Any, format: str = "medium") -> str:
    """``{{ data.at | format_datetime('short') }}``, in the recipient's time zone."""
    if _blank(value):
        return ""
    zone = _context_zone(context)
    when = _to_datetime(value, zone)
    return dates.format_datetime(when, format=format, tzinfo=zone, locale=_context_locale(context))


@pass_context
def format_time(context: Context, value: Any, format: str = "short") -> str:
    """``{{ data.at | format_time }}``, in the recipient's time zone."""
    if _blank(value):
        return ""
    zone = _context_zone(context)
    when = _to_datetime(value, zone)
    return dates.format_time(when, format=format, tzinfo=zone, locale=_context_locale(context))


@pass_context
def format_decimal(context: Context, value: Any, format: str | None = None) -> str:
    """``{{ data.count | format_decimal }}``: grouping and decimal marks of the locale."""
    if _blank(value):
        return ""
    return numbers.format_decimal(_to_number(value), format=format, locale=_context_locale(context))


@pass_context
def format_number(context: Context, value: Any) -> str:
    """``{{ data.count | format_number }}``: the locale's usual way to write a number."""
    # Babel's own format_number is deprecated in favour of format_decimal.
    if _blank(value):
        return ""
    return numbers.format_decimal(_to_number(value), locale=_context_locale(context))


@pass_context
def format_currency(context: Context, value: Any, currency: str, format: str | None = None) -> str:
    """``{{ data.total | format_currency('EUR') }}``: amount and symbol placed per locale."""
    if _blank(value):
        return ""
    if not isinstance(currency, str) or not currency.strip():
        raise ValueError("format_currency needs a currency code, e.g. 'EUR'")
    return numbers.format_currency(
        _to_number(value), currency.strip().upper(), format=format, locale=_context_locale(context)
    )


@pass_context
def format_percent(context: Context, value: Any, format: str | None = None) -> str:
    """``{{ data.ratio | format_percent }}``: 0.25 becomes "25%" (or "25 %")."""
    if _blank(value):
        return ""
    return numbers.format_percent(_to_number(value), format=format, locale=_context_locale(context))


FILTERS: dict[str, Callable[..., str]] = {
    "format_date": format_date,
    "format_datetime": format_datetime,
    "format_time": format_time,
    "format_number": format_number,
    "format_decimal": format_decimal,
    "format_currency": format_currency,
    "format_percent": format_percent,
}
