"""A planning batch's rule state: dedup marks and throttle counts, loaded in one go.

Marks and hits owned by a notification this batch plans are left out: they can only be
what an earlier, failed run of this very work wrote to counters outside its transaction
(Redis), and the notification is being decided again now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.catalog.rules import ThrottleScope
from tidings.delivery.audience import Audience
from tidings.delivery.plan_rows import event_context
from tidings.kit import ids
from tidings.kit.counters import Counters
from tidings.planning import planner
from tidings.planning.rules import dedup
from tidings.planning.rules.dedup import DedupBook
from tidings.planning.rules.throttle import ThrottleBook


@dataclass
class BatchBooks:
    """A batch's rule state: the planner's books and what the batch must look up first."""

    books: planner.Books
    dedup_users: dict[str, str] = field(default_factory=dict)
    dedup_keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def owned_by(self, notification_id: str) -> BatchBooks:
        """The same books, planning one notification: what it marks and admits is its own."""
        return dataclasses.replace(
            self, books=dataclasses.replace(self.books, owner=notification_id)
        )


async def load(
    conn: AsyncConnection,
    counters: Counters,
    types: catalog.Catalog,
    pairs: Sequence[tuple[Mapping[str, Any], catalog.NotificationType, Sequence[str]]],
    audience: Audience,
    now: dt.datetime,
) -> BatchBooks:
    """Load the dedup marks and throttle counts this batch can touch, but its own."""
    planned = {ids.derived_id(event["id"], user) for event, _, users in pairs for user in users}
    dedup_users: dict[str, str] = {}
    dedup_keys: dict[tuple[str, str], str] = {}
    scopes: set[str] = set()
    for event, ntype, users in pairs:
        rules = ntype.rules
        if rules.dedup is not None:
            for user in users:
                key = dedup_key_of(event, ntype, audience.recipient(user, event))
                dedup_users[key] = user
                dedup_keys[(event["id"], user)] = key
        if rules.throttle is not None:
            per_category = rules.throttle.per is ThrottleScope.CATEGORY
            for user in users:
                for channel in ntype.channels:
                    scopes.add(
                        planner.throttle_scope(
                            user, channel, ntype.category if per_category else None
                        )
                    )
    marks = await counters.live_marks(conn, dedup_users, now) if dedup_users else {}
    hits = await counters.recent_hits(conn, scopes, now - throttle_horizon(types)) if scopes else {}
    first_seen = {key: m.first_seen for key, m in marks.items() if m.owner not in planned}
    logs = {scope: [h.at for h in found if h.owner not in planned] for scope, found in hits.items()}
    return BatchBooks(
        planner.Books(DedupBook(first_seen), ThrottleBook(logs)), dedup_users, dedup_keys
    )


def throttle_horizon(types: catalog.Catalog) -> dt.timedelta:
    """The longest throttle window in the catalog: older hits matter to no rule."""
    windows = [t.rules.throttle.window for t in types if t.rules.throttle is not None]
    return max(windows, default=dt.timedelta(0))


def dedup_key_of(
    event: Mapping[str, Any],
    ntype: catalog.NotificationType,
    recipient: planner.Recipient,
) -> str:
    assert ntype.rules.dedup is not None
    context = {**event_context(event), "recipient": recipient.as_context()}
    rendered = ntype.rule_key(ntype.rules.dedup.key, context)
    return dedup.dedup_key(event["tenant"], recipient.id, ntype.key, rendered)
