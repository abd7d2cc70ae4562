"""What the planner needs to know about a batch's recipients, read in one go."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.email.suppressions import Suppressions, normalise_address
from tidings.events.service import carried_addresses, recipient_profile
from tidings.planning import planner
from tidings.planning.rules.preferences import Preferences
from tidings.preferences.service import PlanningPreferences, PreferencesService
from tidings.users.service import UsersService


@dataclass(frozen=True)
class Audience:
    profiles: Mapping[str, Mapping[str, Any]]
    preferences: PlanningPreferences
    suppressed: Mapping[str, str]

    def recipient(self, user_id: str, event: Mapping[str, Any] | None = None) -> planner.Recipient:
        """``user_id`` as ``event``'s deliveries see them: their stored profile, with what
        the event carried for them on top."""
        return planner.Recipient.from_profile(
            user_id, recipient_profile(event, user_id, self.profiles.get(user_id))
        )

    def preferences_of(self, user_id: str, tenant: str) -> Preferences:
        return self.preferences.of(user_id, tenant)

    def facts(
        self,
        recipient: planner.Recipient,
        tenant: str,
        category: catalog.Category,
        channels: Collection[str],
    ) -> planner.Facts:
        """The facts the channel rules need: opt-outs, mandatory, the suppression list."""
        prefs = self.preferences_of(recipient.id, tenant)
        return planner.Facts(
            mandatory=category.mandatory,
            opted_out=frozenset(
                channel for channel in channels if not prefs.channel(category, channel).value
            ),
            address_suppressed=recipient.email is not None
            and normalise_address(recipient.email) in self.suppressed,
        )


class AudienceLoader:
    def __init__(
        self, users: UsersService, preferences: PreferencesService, suppressions: Suppressions
    ) -> None:
        self._users = users
        self._preferences = preferences
        self._suppressions = suppressions

    async def load(
        self,
        conn: AsyncConnection,
        user_ids: Collection[str],
        tenants: Collection[str],
        events: Iterable[Mapping[str, Any]] = (),
    ) -> Audience:
        profiles = await self._users.profiles(conn, user_ids)
        addresses = [p["email"] for p in profiles.values() if p.get("email")]
        addresses += sorted(carried_addresses(events) - set(addresses))
        return Audience(
            profiles=profiles,
            preferences=await self._preferences.for_planning(conn, user_ids, tenants),
            suppressed=await self._suppressions.among(conn, addresses) if addresses else {},
        )
