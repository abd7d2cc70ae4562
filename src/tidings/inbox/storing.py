"""Storing in-app items: new ones inserted, and a group's next event merged into the
group's open item ("Ann and 3 others commented")."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.inbox.repository import writes
from tidings.kit.db import Database

MAX_GROUP_ACTORS = 10
GroupKey = tuple[str, str, str]
"""(user id, tenant, group key): the scope within which in-app items collapse."""

# Keys of a row given to ``write`` that steer how it is written; they are not columns.
_INSTRUCTIONS = frozenset({"merge_into", "silent", "merged"})
# What a merge overwrites: everything that describes the newest activity.
_MERGED_COLUMNS = (
    "event_id",
    "type",
    "category",
    "title",
    "body",
    "action_url",
    "actor",
    "group_count",
    "group_actors",
    "created_at",
    "updated_at",
    "seen_at",
)


@dataclass(frozen=True)
class OpenGroup:
    """The unread item that a group's next event merges into, and what it holds so far."""

    item_id: str
    count: int
    actors: list[dict[str, Any]]


def group_actors(actors: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The actors a group item keeps, from ``actors`` given newest first: distinct by
    ``id`` (actors without one are each distinct), at most ``MAX_GROUP_ACTORS``.

    "Ann and 3 others" counts events; the names shown are the newest few people.
    """
    kept: list[dict[str, Any]] = []
    known: set[Any] = set()
    for actor in actors:
        if actor is None:
            continue
        actor_id = actor.get("id")
        if actor_id is not None:
            if actor_id in known:
                continue
            known.add(actor_id)
        kept.append(dict(actor))
        if len(kept) == MAX_GROUP_ACTORS:
            break
    return kept


async def open_groups(
    conn: AsyncConnection, keys: Collection[GroupKey]
) -> dict[GroupKey, OpenGroup]:
    """(user_id, tenant, group_key) -> the newest unread, unarchived item with that group
    key, if any (locked on PostgreSQL until the caller's transaction ends)."""
    newest: dict[GroupKey, Mapping[str, Any]] = {}
    for row in await writes.open_group_items(conn, keys):
        key = (row["user_id"], row["tenant"], row["group_key"])
        known = newest.get(key)
        if known is None or (row["created_at"], row["id"]) > (known["created_at"], known["id"]):
            newest[key] = row
    return {
        key: OpenGroup(
            item_id=row["id"], count=row["group_count"], actors=list(row["group_actors"] or [])
        )
        for key, row in newest.items()
    }


async def write(
    db: Database, conn: AsyncConnection, items: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Insert the new items and merge the rest into their open groups, in the caller's
    transaction; returns those new or changed, in the order given, each once as it
    ends up (see ``InboxService.store``)."""
    fresh: list[tuple[int, Mapping[str, Any]]] = []
    merges: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for position, item in enumerate(items):
        if item.get("merge_into") is None:
            fresh.append((position, item))
        else:
            merges[item["merge_into"]] = (position, item)
    written = await _insert(db, conn, fresh)
    # Looked up after the insert: a row may merge into an item that starts its group
    # in this very batch.
    targets = await writes.lock(conn, list(merges))
    merged: list[tuple[int, dict[str, Any]]] = []
    orphans: list[tuple[int, Mapping[str, Any]]] = []
    for target_id, (position, item) in merges.items():
        target = targets.get(target_id)
        if target is not None and _is_open(target, item["user_id"]):
            merged.append((position, _merged(item, target)))
        else:
            orphans.append((position, _orphan(item, target)))
    await writes.merge(conn, [_merge_params(row) for _position, row in merged])
    written += merged
    written += await _insert(db, conn, orphans)
    # An item started and merged into in one batch is announced once, as it ends up.
    final = {row["id"]: (position, row) for position, row in sorted(written, key=_first)}
    return [row for _position, row in sorted(final.values(), key=_first)]


async def _insert(
    db: Database, conn: AsyncConnection, items: Sequence[tuple[int, Mapping[str, Any]]]
) -> list[tuple[int, dict[str, Any]]]:
    rows = [(position, _columns(item)) for position, item in items]
    new_ids = await writes.insert(db, conn, [row for _position, row in rows])
    return [
        (position, {**row, "silent": bool(item.get("silent")), "merged": False})
        for (position, row), (_position, item) in zip(rows, items, strict=True)
        if row["id"] in new_ids
    ]


def _first(pair: tuple[int, Mapping[str, Any]]) -> int:
    return pair[0]


def _columns(item: Mapping[str, Any]) -> dict[str, Any]:
    """The row to write: instructions left out, and the group columns on every row (one
    INSERT takes many rows, which must all name the same columns)."""
    row = {key: value for key, value in item.items() if key not in _INSTRUCTIONS}
    grouped = row.get("group_key") is not None
    row.setdefault("group_key", None)
    row["group_count"] = row.get("group_count", 1) if grouped else 1
    row["group_actors"] = (
        group_actors(row.get("group_actors") or [row.get("actor")]) if grouped else None
    )
    row.setdefault("updated_at", None)
    return row


def _is_open(target: Mapping[str, Any], user_id: str) -> bool:
    return (
        target["user_id"] == user_id and target["read_at"] is None and target["archived_at"] is None
    )


def _merged(item: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The target item as it becomes: the newest activity's content, floated to the top
    (``created_at``), and unseen again because there is something new to see."""
    row = _columns({**item, "group_key": target["group_key"]})
    return {
        **row,
        "id": target["id"],
        "updated_at": row["created_at"],
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
        "silent": bool(item.get("silent")),
        "merged": True,
    }


def _orphan(item: Mapping[str, Any], target: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A merge whose item is no longer an open group, as a new item that starts its own
    (under the old item's key when the row names none)."""
    group_key = item.get("group_key")
    if group_key is None and target is not None and target["user_id"] == item["user_id"]:
        group_key = target["group_key"]
    return {key: value for key, value in item.items() if key != "merge_into"} | {
        "group_key": group_key
    }


def _merge_params(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "merge_target": row["id"],
        "merge_user": row["user_id"],
        **{column: row[column] for column in _MERGED_COLUMNS},
    }
