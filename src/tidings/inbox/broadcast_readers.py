"""Whose inbox shows a broadcast: a subscriber's reader names the kinds of broadcast
their preferences keep out of the inbox (a mandatory category always shows) and, for a
user id erased and used again, the moment of the erasure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.inbox.repository.broadcasts import Kind, Reader
from tidings.preferences.service import PlanningPreferences, PreferencesService
from tidings.users.service import UsersService

IN_APP = "in_app"


class Readers:
    """Builds the readers of broadcasts from the users' preferences and erasures."""

    def __init__(self, preferences: PreferencesService, users: UsersService) -> None:
        self._preferences = preferences
        self._users = users

    async def of(
        self, conn: AsyncConnection, user_ids: Sequence[str], kinds: Iterable[Kind]
    ) -> dict[str, Reader]:
        """Each user's reader: the kinds among ``kinds`` their preferences keep out of
        the inbox, and the moment of their erasure if their id was erased before."""
        kinds = list(kinds)
        preferences = await self._preferences.for_planning(
            conn, user_ids, sorted({kind[0] for kind in kinds})
        )
        erasures = await self._users.erasures(conn, user_ids)
        readers = {}
        for user_id in user_ids:
            erasure = erasures.get(user_id)
            readers[user_id] = Reader(
                user_id,
                hidden=frozenset(
                    (kind[0], kind[1]) for kind in kinds if not _shows(preferences, user_id, kind)
                ),
                erased_before=None if erasure is None else erasure.erased_before,
            )
        return readers


def kind(row: Mapping[str, Any]) -> Kind:
    """A broadcast row's kind, what the readers' preferences are resolved over."""
    return (row["tenant"], row["category"], bool(row["mandatory"]), row["in_app_default"])


def shown(row: Mapping[str, Any], reader: Reader) -> bool:
    """Whether a broadcast the user subscribes to is in their inbox for ``reader``."""
    if (row["tenant"], row["category"]) in reader.hidden:
        return False
    return reader.erased_before is None or row["accepted_at"] > reader.erased_before


def _shows(preferences: PlanningPreferences, user_id: str, kind: Kind) -> bool:
    """Whether the user's preferences put this kind of broadcast in their inbox."""
    tenant, name, mandatory, in_app_default = kind
    category = catalog.Category(
        name=name,
        description="",
        mandatory=mandatory,
        default_channels=MappingProxyType(
            {} if in_app_default is None else {IN_APP: in_app_default}
        ),
    )
    return preferences.of(user_id, tenant).channel(category, IN_APP).value
