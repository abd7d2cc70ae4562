"""Durations as people write them in catalog files: ``30s``, ``10m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import datetime as dt
import re

# Largest first: the order a duration must be written in, and the canonical form's.
_UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_SHAPE = re.compile("".join(f"(?:([0-9]+){unit})?" for unit in _UNIT_SECONDS))
_EXAMPLES = "30s, 10m, 1h or 1d"
_LONGEST = "999999999d"


def parse_duration(text: str) -> dt.timedelta:
    """Read a positive duration made of whole weeks, days, hours, minutes and seconds.

    Parts are written largest unit first, each at most once (``1d12h``, ``1h30m``).

    Raises:
        ValueError: the text is not such a duration, or it is zero, or too long to hold.
    """
    match = _SHAPE.fullmatch(text)
    if not text or match is None:
        raise ValueError(
            f"expected a duration such as {_EXAMPLES}, largest unit first (1h30m), got {text!r}"
        )
    try:
        duration = dt.timedelta(
            seconds=sum(
                int(amount) * unit
                for amount, unit in zip(match.groups(), _UNIT_SECONDS.values(), strict=True)
                if amount is not None
            )
        )
    except (OverflowError, ValueError):
        # int() refuses thousands of digits with a ValueError; timedelta overflows sooner.
        raise ValueError(f"the duration {text!r} is too long; the most is {_LONGEST}") from None
    if not duration:
        raise ValueError(f"expected a duration longer than zero, such as {_EXAMPLES}, got {text!r}")
    return duration


def format_duration(duration: dt.timedelta) -> str:
    """The canonical text of a duration, which ``parse_duration`` reads back unchanged.

    Raises:
        ValueError: the duration is not positive or not a whole number of seconds.
    """
    if duration <= dt.timedelta(0) or duration.microseconds:
        raise ValueError(f"only positive whole-second durations have a text form, got {duration}")
    remaining = duration // dt.timedelta(seconds=1)
    parts = []
    for unit, seconds in _UNIT_SECONDS.items():
        amount, remaining = divmod(remaining, seconds)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
