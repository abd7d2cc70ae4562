"""IANA timezone names, checked where they come in."""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from pydantic import AfterValidator


def known_timezone(value: str) -> str:
    """``value`` when the IANA database knows it; a ValueError a person can act on if not."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA timezone, e.g. 'Europe/Paris'") from None
    return value


Timezone = Annotated[str, AfterValidator(known_timezone)]
