"""Builds a batch's inbox items, merging those of one group into the newest unread item.

"Ann and 3 others commented on Roadmap": an event whose type collapses joins the newest
unread item with the same group key — one already in the inbox, or one this batch
started — instead of stacking a new item. The item keeps the count of events and the
list of actors, newest first, and is re-rendered with the type's collapse templates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery.plan_rows import event_context
from tidings.inbox.service import InboxService
from tidings.inbox.storing import OpenGroup, group_actors
from tidings.kit import ids
from tidings.planning.planner import Recipient


def merge_actors(
    actor: Mapping[str, Any] | None, actors: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``actor`` first, then the others, each person once (by id), as many as an item keeps."""
    return group_actors([actor, *actors])


class Collapser:
    """Collects the in-app rows of one batch, in order.

    ``open_groups`` are the open (newest unread) items per (user, tenant, group key), read
    in the batch's transaction; ``group_keys`` the group key of each (event, user) whose
    type collapses.
    """

    def __init__(
        self,
        open_groups: Mapping[tuple[str, str, str], OpenGroup],
        group_keys: Mapping[tuple[str, str], str],
    ) -> None:
        self._open = open_groups
        self._group_keys = group_keys
        self._by_group: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []

    def place(
        self,
        ntype: catalog.NotificationType,
        event: Mapping[str, Any],
        recipient: Recipient,
        item_id: str,
        now: dt.datetime,
        *,
        silent: bool = False,
    ) -> str:
        """Add the item of ``event`` for ``recipient``; returns the id of the item that
        shows it (its own, or the one it merged into)."""
        context = {**event_context(event), "recipient": recipient.as_context()}
        row: dict[str, Any] = {
            "id": item_id,
            "user_id": recipient.id,
            "tenant": event["tenant"],
            "event_id": event["id"],
            "type": event["type"],
            "category": ntype.category,
            "actor": event["actor"],
            "created_at": now,
            "silent": silent,
        }
        group = self._group_keys.get((event["id"], recipient.id))
        if group is None:
            self.rows.append({**row, **_content(ntype.render_in_app(context))})
            return item_id
        key = (recipient.id, event["tenant"], group)
        earlier = self._by_group.get(key)
        if earlier is not None:
            count = earlier["group_count"] + 1
            actors = merge_actors(event["actor"], earlier["group_actors"])
            target = earlier.get("merge_into", earlier["id"])
            earlier.update(row, id=earlier["id"])
            earlier.update(self._collapsed(ntype, context, count, actors), silent=silent)
            return str(target)
        existing = self._open.get(key)
        if existing is not None:
            count = existing.count + 1
            actors = merge_actors(event["actor"], existing.actors)
            merged = {
                **row,
                "merge_into": existing.item_id,
                "group_key": group,
                **self._collapsed(ntype, context, count, actors),
            }
            self._by_group[key] = merged
            self.rows.append(merged)
            return existing.item_id
        started = {
            **row,
            **_content(ntype.render_in_app(context)),
            "group_key": group,
            "group_count": 1,
            "group_actors": merge_actors(event["actor"], []),
        }
        self._by_group[key] = started
        self.rows.append(started)
        return item_id

    @staticmethod
    def _collapsed(
        ntype: catalog.NotificationType,
        context: Mapping[str, Any],
        count: int,
        actors: list[dict[str, Any]],
    ) -> dict[str, Any]:
        group = {"count": count, "actors": actors, "others": max(0, len(actors) - 1)}
        content = ntype.render_collapsed({**context, "group": group})
        return {**_content(content), "group_count": count, "group_actors": actors}


def _content(content: catalog.InAppContent) -> dict[str, Any]:
    return {"title": content.title, "body": content.body, "action_url": content.action_url}


async def open_collapser(
    inbox: InboxService,
    conn: AsyncConnection,
    targets: Iterable[tuple[Mapping[str, Any], Recipient, catalog.NotificationType]],
) -> Collapser:
    """A collapser that knows the open groups the batch's collapsing items may join."""
    keys: dict[tuple[str, str, str], None] = {}
    group_keys: dict[tuple[str, str], str] = {}
    for event, recipient, ntype in targets:
        rule = ntype.rules.collapse
        if rule is None:
            continue
        context = {**event_context(event), "recipient": recipient.as_context()}
        group = ids.bounded(f"{ntype.key}|{ntype.rule_key(rule.key, context)}", 400)
        group_keys[(event["id"], recipient.id)] = group
        keys[(recipient.id, event["tenant"], group)] = None
    open_groups = await inbox.open_groups(conn, list(keys)) if keys else {}
    return Collapser(open_groups, group_keys)
