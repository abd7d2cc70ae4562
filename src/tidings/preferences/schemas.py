"""Request and response models of the preferences APIs (producer, end user, tenant)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tidings.kit.timezones import Timezone
from tidings.planning.rules.preferences import Source


def _local_time(value: str) -> str:
    if not re.fullmatch(r"\d\d:\d\d", value):
        raise ValueError(f"expected a local time as HH:MM, e.g. '22:00', got {value!r}")
    try:
        dt.time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day (00:00 to 23:59)") from None
    return value


LocalTime = Annotated[str, AfterValidator(_local_time)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelSwitches(_In):
    """On or off per channel; a channel left out is not chosen here. Plugin channels
    (``webpush``) are switched by their names like the built-in ones."""

    model_config = ConfigDict(extra="allow")

    in_app: StrictBool | None = None
    email: StrictBool | None = None

    @model_validator(mode="after")
    def _switches_are_booleans(self) -> ChannelSwitches:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false, got {value!r}")
        return self


class DigestIn(_In):
    cadence: Literal["instant", "hourly", "daily"]
    hour: Annotated[StrictInt, Field(ge=0, le=23, description="local; daily only")] | None = None

    @field_validator("hour")
    @classmethod
    def _only_when_daily(cls, value: int | None, info: ValidationInfo) -> int | None:
        cadence = info.data.get("cadence")
        if value is not None and cadence not in (None, "daily"):
            raise ValueError(f"hour applies only to the daily cadence, not {cadence!r}")
        return value


class CategoryChoicesIn(_In):
    channels: ChannelSwitches = Field(default_factory=ChannelSwitches)
    digest: DigestIn | None = None


class QuietHoursIn(_In):
    """Every day from ``start`` to ``end``, local time; wraps midnight when end < start."""

    start: LocalTime
    end: LocalTime
    timezone: Timezone | None = Field(
        default=None, description="IANA name; left out: the recipient's profile timezone"
    )

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("start"):
            raise ValueError("end must differ from start: the window would be empty")
        return value


class ChoicesIn(_In):
    """A whole choices document: what a PUT replaces."""

    channels: ChannelSwitches = Field(
        default_factory=ChannelSwitches,
        description="global switches over every category that is not mandatory",
    )
    categories: dict[str, CategoryChoicesIn] = Field(default_factory=dict)
    quiet_hours: QuietHoursIn | None = None

    def document(self) -> dict[str, Any]:
        """The choices as a stored document (what was left out stays out)."""
        return self.model_dump(exclude_none=True)


class Owner(BaseModel):
    kind: Literal["user", "tenant"]
    id: str


class ChannelSetting(BaseModel):
    enabled: bool
    source: Source


class DigestSetting(BaseModel):
    cadence: Literal["instant", "hourly", "daily"]
    hour: int | None = Field(description="local hour of a daily digest")
    source: Source


class EffectiveCategory(BaseModel):
    mandatory: bool
    channels: dict[str, ChannelSetting]
    digest: DigestSetting


class EffectiveQuietHours(BaseModel):
    start: str
    end: str
    timezone: str | None
    source: Source


class Effective(BaseModel):
    """What applies, and which layer decided it: user, tenant, catalog, mandatory, default."""

    tenant: str | None = Field(description="the tenant whose defaults apply, if any")
    categories: dict[str, EffectiveCategory]
    quiet_hours: EffectiveQuietHours | None


class PreferencesView(BaseModel):
    owner: Owner
    choices: dict[str, Any] = Field(description="the owner's own choices, as stored")
    effective: Effective
