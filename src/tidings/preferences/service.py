"""Use cases for preferences: read and replace choices, flip one switch, and hand the
planner every recipient's resolved preferences."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.catalog.model import CATEGORY_PATTERN
from tidings.kit import errors
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.planning.rules import preferences as rules
from tidings.planning.rules.digest_schedule import CadenceKind
from tidings.planning.rules.quiet_hours import QuietHours
from tidings.preferences import repository, schemas

log = logging.getLogger(__name__)

ANY_CATEGORY = "*"
USER = "user"
TENANT = "tenant"

OwnerKind = Literal["user", "tenant"]


class MandatoryCategory(errors.Invalid):
    code = "mandatory_category"


class UnknownCategory(errors.Invalid):
    code = "unknown_category"


class PlanningPreferences:
    """The preferences of one planning batch's recipients, resolved on first use."""

    def __init__(
        self, users: Mapping[str, Mapping[str, Any]], tenants: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self._documents = {USER: users, TENANT: tenants}
        self._choices: dict[tuple[str, str], rules.Choices | None] = {}
        self._resolved: dict[tuple[str, str], rules.Preferences] = {}

    def of(self, user_id: str, tenant: str) -> rules.Preferences:
        """What ``user_id`` gets in ``tenant``."""
        found = self._resolved.get((user_id, tenant))
        if found is None:
            found = rules.resolve(self._parsed(USER, user_id), self._parsed(TENANT, tenant))
            self._resolved[user_id, tenant] = found
        return found

    def _parsed(self, kind: str, owner_id: str) -> rules.Choices | None:
        key = (kind, owner_id)
        if key not in self._choices:
            doc = self._documents[kind].get(owner_id)
            self._choices[key] = None if doc is None else rules.Choices.from_document(doc)
        return self._choices[key]


class PreferencesService:
    """Preferences: users' and tenants' choices, checked against the catalog."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        channels: Sequence[str] = rules.CHANNELS,
    ) -> None:
        """``channels`` are those preferences can switch: built-in and installed plugins."""
        self._db = db
        self._clock = clock
        self._catalog = types
        self._channels = tuple(channels)

    async def get(
        self, kind: OwnerKind, owner_id: str, tenant: str | None = None
    ) -> schemas.PreferencesView:
        """An owner's choices and what they add up to (for a user: in ``tenant``)."""
        async with self._db.reader() as conn:
            own = await repository.get(conn, kind, owner_id)
            below = await self._tenant_layer(conn, kind, tenant)
        return self._view(kind, owner_id, rules.Choices.from_document(own), below, tenant)

    async def put(
        self, kind: OwnerKind, owner_id: str, body: schemas.ChoicesIn, tenant: str | None = None
    ) -> schemas.PreferencesView:
        """Replace an owner's whole choices document; answers like ``get``.

        Raises:
            MandatoryCategory: a mandatory category's channel is turned off.
            UnknownCategory: the catalog declares categories, and not this one.
        """
        choices = rules.Choices.from_document(body.document())
        self._check(choices)
        async with self._db.transaction() as conn:
            await repository.put(
                self._db, conn, kind, owner_id, choices.to_document(), self._clock.now()
            )
            below = await self._tenant_layer(conn, kind, tenant)
        return self._view(kind, owner_id, choices, below, tenant)

    async def set_channel(
        self, user_id: str, category: str, channel: str, *, enabled: bool, source: str
    ) -> None:
        """Turn one category (or ``*``, all of them) on or off on one channel for a user.

        ``source`` (the unsubscribe link, say) is logged: the document keeps only choices.
        """
        now = self._clock.now()
        async with self._db.transaction() as conn:
            # Read, change and write under the row's lock, so that a concurrent PUT of
            # the whole document is either entirely before or entirely after this.
            doc = await repository.lock(self._db, conn, USER, user_id, now)
            choices = rules.Choices.from_document(doc).with_channel(
                None if category == ANY_CATEGORY else category, channel, enabled
            )
            await repository.put(self._db, conn, USER, user_id, choices.to_document(), now)
        log.info(
            "preference of %s: %s on %s %s (%s)",
            user_id,
            category,
            channel,
            "on" if enabled else "off",
            source,
        )

    async def for_planning(
        self, conn: AsyncConnection, user_ids: Collection[str], tenants: Collection[str]
    ) -> PlanningPreferences:
        """The preferences of a planning batch's recipients, read in the caller's
        transaction (one query per thousand users, one for the tenants)."""
        return PlanningPreferences(
            await repository.get_many(conn, USER, user_ids),
            await repository.get_many(conn, TENANT, tenants),
        )

    async def _tenant_layer(
        self, conn: AsyncConnection, kind: OwnerKind, tenant: str | None
    ) -> rules.Choices | None:
        """The defaults under a user's choices: their tenant's, when one is named."""
        if kind == TENANT or tenant is None:
            return None
        return rules.Choices.from_document(await repository.get(conn, TENANT, tenant))

    def _check(self, choices: rules.Choices) -> None:
        self._check_channels(choices.channels, "channels")
        declared = self._catalog.categories
        for name, entry in choices.categories.items():
            if declared and name not in declared:
                known = ", ".join(sorted(declared))
                raise UnknownCategory(
                    f"{name!r} is not a category of this catalog; it has: {known}.",
                    field=f"categories.{name}",
                )
            if not re.fullmatch(CATEGORY_PATTERN, name) or len(name) > 100:
                raise errors.Invalid(
                    f"{name!r} is not a category name: up to 100 lowercase letters, digits, "
                    "_ and -, starting with a letter.",
                    field=f"categories.{name}",
                )
            self._check_channels(entry.channels, f"categories.{name}.channels")
            category = self._catalog.category(name)
            for channel, enabled in entry.channels.items():
                if category.mandatory and not enabled:
                    raise MandatoryCategory(
                        f"{name!r} is a mandatory category: it cannot be turned off.",
                        field=f"categories.{name}.channels.{channel}",
                    )

    def _check_channels(self, switches: Mapping[str, bool], where: str) -> None:
        for channel in switches:
            if channel not in self._channels:
                raise errors.Invalid(
                    f"{channel!r} is not a channel here; the channels are: "
                    f"{', '.join(self._channels)}.",
                    field=f"{where}.{channel}",
                )

    def _categories(self) -> list[catalog.Category]:
        names = set(self._catalog.categories) | {ntype.category for ntype in self._catalog}
        return [self._catalog.category(name) for name in sorted(names)]

    def _view(
        self,
        kind: OwnerKind,
        owner_id: str,
        own: rules.Choices,
        below: rules.Choices | None,
        tenant: str | None,
    ) -> schemas.PreferencesView:
        if kind == TENANT:
            resolved = rules.resolve(None, own)
            tenant = owner_id
        else:
            resolved = rules.resolve(own, below)
        return schemas.PreferencesView(
            owner=schemas.Owner(kind=kind, id=owner_id),
            choices=own.to_document(),
            effective=schemas.Effective(
                tenant=tenant,
                categories={
                    c.name: _effective(resolved, c, self._channels) for c in self._categories()
                },
                quiet_hours=_quiet_hours(resolved.quiet_hours),
            ),
        )


def _effective(
    resolved: rules.Preferences, category: catalog.Category, channels: Sequence[str]
) -> schemas.EffectiveCategory:
    digest = resolved.digest(category)
    cadence = digest.value
    return schemas.EffectiveCategory(
        mandatory=category.mandatory,
        channels={
            channel: _channel_setting(resolved.channel(category, channel)) for channel in channels
        },
        digest=schemas.DigestSetting(
            cadence=cadence.kind.value,
            hour=cadence.hour if cadence.kind is CadenceKind.DAILY else None,
            source=digest.source,
        ),
    )


def _channel_setting(setting: rules.Setting[bool]) -> schemas.ChannelSetting:
    return schemas.ChannelSetting(enabled=setting.value, source=setting.source)


def _quiet_hours(setting: rules.Setting[QuietHours | None]) -> schemas.EffectiveQuietHours | None:
    quiet = setting.value
    if quiet is None:
        return None
    return schemas.EffectiveQuietHours(
        start=quiet.start.strftime("%H:%M"),
        end=quiet.end.strftime("%H:%M"),
        timezone=quiet.timezone,
        source=setting.source,
    )
