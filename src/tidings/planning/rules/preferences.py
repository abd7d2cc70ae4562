"""Preference resolution: a user's choices over their tenant's, over the catalog's defaults.

A choices document (what ``preference_sets.choices`` holds) looks like::

    {"channels": {"email": false},
     "categories": {"comments": {"channels": {"email": false, "in_app": true},
                                 "digest": {"cadence": "daily", "hour": 8}}},
     "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}}

Every part is optional. Top-level ``channels`` are global switches over every category
that is not mandatory; nothing turns a mandatory category off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from tidings import catalog
from tidings.planning.rules.digest_schedule import Cadence, CadenceKind
from tidings.planning.rules.quiet_hours import QuietHours

CHANNELS = ("in_app", "email")
DEFAULT_DIGEST_HOUR = 9

Source = Literal["user", "tenant", "catalog", "mandatory", "default"]
T = TypeVar("T")


def _frozen(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class Setting(Generic[T]):
    """A resolved value, and which layer it came from (so a person can see why)."""

    value: T
    source: Source


@dataclass(frozen=True)
class CategoryChoices:
    """One owner's choices for one category; an absent switch or digest defers downward."""

    channels: Mapping[str, bool] = field(default_factory=_frozen, hash=False)
    digest: Cadence | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> CategoryChoices:
        doc = doc or {}
        digest = doc.get("digest")
        return cls(
            channels=_switches(doc.get("channels")),
            digest=None if not digest else _cadence(digest),
        )

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.channels:
            doc["channels"] = dict(sorted(self.channels.items()))
        if self.digest is not None:
            doc["digest"] = _cadence_document(self.digest)
        return doc


@dataclass(frozen=True)
class Choices:
    """One owner's (a user's or a tenant's) choices, parsed from the stored document."""

    channels: Mapping[str, bool] = field(default_factory=_frozen, hash=False)
    categories: Mapping[str, CategoryChoices] = field(default_factory=_frozen, hash=False)
    quiet_hours: QuietHours | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> Choices:
        """Parse a stored document; ``None`` and ``{}`` are "no choices"."""
        doc = doc or {}
        quiet = doc.get("quiet_hours")
        return cls(
            channels=_switches(doc.get("channels")),
            categories=_frozen(
                {
                    name: CategoryChoices.from_document(entry)
                    for name, entry in (doc.get("categories") or {}).items()
                }
            ),
            quiet_hours=None if not quiet else _quiet_hours(quiet),
        )

    def to_document(self) -> dict[str, Any]:
        """The canonical document: sorted names, times as ``HH:MM``, empty parts left out."""
        doc: dict[str, Any] = {}
        if self.channels:
            doc["channels"] = dict(sorted(self.channels.items()))
        categories = {
            name: entry_doc
            for name, entry in sorted(self.categories.items())
            if (entry_doc := entry.to_document())
        }
        if categories:
            doc["categories"] = categories
        if self.quiet_hours is not None:
            doc["quiet_hours"] = _quiet_hours_document(self.quiet_hours)
        return doc

    def with_channel(self, category: str | None, channel: str, enabled: bool) -> Choices:
        """These choices with one switch set: for ``category``, or global when None."""
        if category is None:
            return replace(self, channels=_frozen({**self.channels, channel: enabled}))
        entry = self.categories.get(category, CategoryChoices())
        entry = replace(entry, channels=_frozen({**entry.channels, channel: enabled}))
        return replace(self, categories=_frozen({**self.categories, category: entry}))

    def switch(self, category: str, channel: str) -> bool | None:
        """This owner's switch for a channel of a category: the category's, else global."""
        entry = self.categories.get(category)
        chosen = None if entry is None else entry.channels.get(channel)
        return self.channels.get(channel) if chosen is None else chosen

    def digest(self, category: str) -> Cadence | None:
        entry = self.categories.get(category)
        return None if entry is None else entry.digest


class Preferences:
    """What one user gets in one tenant: each answer says which layer decided it."""

    def __init__(self, user: Choices | None, tenant: Choices | None) -> None:
        layers: tuple[tuple[Choices | None, Source], ...] = ((user, "user"), (tenant, "tenant"))
        self._layers = tuple((choices, source) for choices, source in layers if choices is not None)

    def channel(self, category: catalog.Category, channel: str) -> Setting[bool]:
        """Whether ``category`` reaches the user on ``channel``."""
        if category.mandatory:
            return Setting(True, "mandatory")
        for choices, source in self._layers:
            chosen = choices.switch(category.name, channel)
            if chosen is not None:
                return Setting(chosen, source)
        default = category.default_channels.get(channel)
        if default is not None:
            return Setting(default, "catalog")
        return Setting(True, "default")

    def digest(self, category: catalog.Category) -> Setting[Cadence]:
        """How often ``category`` reaches the user: at once, hourly or daily.

        A mandatory category always arrives at once: a security alert never waits for
        tomorrow's digest, whatever was chosen.
        """
        if category.mandatory:
            return Setting(Cadence(CadenceKind.INSTANT), "mandatory")
        for choices, source in self._layers:
            chosen = choices.digest(category.name)
            if chosen is not None:
                return Setting(chosen, source)
        default = category.default_digest
        if default is not None:
            return Setting(Cadence(CadenceKind(default.cadence), default.hour), "catalog")
        return Setting(Cadence(CadenceKind.INSTANT), "default")

    @property
    def quiet_hours(self) -> Setting[QuietHours | None]:
        """The user's quiet hours, else their tenant's, else none."""
        for choices, source in self._layers:
            if choices.quiet_hours is not None:
                return Setting(choices.quiet_hours, source)
        return Setting(None, "default")


def resolve(user: Choices | None, tenant: Choices | None) -> Preferences:
    """The preferences of a user (``user``'s choices) in a tenant (``tenant``'s defaults)."""
    return Preferences(user, tenant)


def _switches(doc: Mapping[str, Any] | None) -> Mapping[str, bool]:
    return _frozen({channel: bool(enabled) for channel, enabled in (doc or {}).items()})


def _cadence(doc: Mapping[str, Any]) -> Cadence:
    kind = CadenceKind(doc["cadence"])
    hour = doc.get("hour")
    return Cadence(kind, DEFAULT_DIGEST_HOUR if hour is None else int(hour))


def _cadence_document(cadence: Cadence) -> dict[str, Any]:
    if cadence.kind is CadenceKind.DAILY:
        return {"cadence": cadence.kind.value, "hour": cadence.hour}
    return {"cadence": cadence.kind.value}


def _quiet_hours(doc: Mapping[str, Any]) -> QuietHours:
    return QuietHours(
        start=dt.time.fromisoformat(doc["start"]),
        end=dt.time.fromisoformat(doc["end"]),
        timezone=doc.get("timezone") or None,
    )


def _quiet_hours_document(quiet: QuietHours) -> dict[str, Any]:
    doc = {"start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")}
    if quiet.timezone is not None:
        doc["timezone"] = quiet.timezone
    return doc
