"""Dedup: a second event with the same key for the same recipient, inside the window, is dropped.

The window counts from the first event, so a stream of duplicates cannot keep it open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping


def dedup_key(tenant: str, user_id: str, type_key: str, key: str) -> str:
    """A fixed-length digest of the four parts, distinct whenever any part differs.

    Each part is length-prefixed, so no choice of characters lets two tuples collide
    before hashing (``("a:b", "c")`` and ``("a", "b:c")`` stay apart).
    """
    digest = hashlib.sha256()
    for part in (tenant, user_id, type_key, key):
        # surrogatepass: payload strings may hold lone surrogates and still need a key.
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode("ascii"))
        digest.update(encoded)
    return digest.hexdigest()


def is_duplicate(first_seen: dt.datetime | None, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether an event at ``now`` falls inside the window opened at ``first_seen``."""
    return first_seen is not None and now < first_seen + window


class DedupBook:
    """The dedup marks of one planning batch: those loaded, plus those this batch sets."""

    def __init__(self, loaded: Mapping[str, dt.datetime]) -> None:
        """``loaded`` maps each key to the first_seen of its mark still live in storage."""
        self._first_seen = dict(loaded)
        self._marked: dict[str, tuple[dt.datetime, dt.datetime, str | None]] = {}

    def check(
        self, key: str, now: dt.datetime, window: dt.timedelta, *, owner: str | None = None
    ) -> bool:
        """True when the event is a duplicate; otherwise it opens a new window at ``now``.

        ``owner`` names the notification that opens the window, stored with its mark.
        """
        if is_duplicate(self._first_seen.get(key), now, window):
            return True
        self._first_seen[key] = now
        self._marked[key] = (now, now + window, owner)
        return False

    def marked(self) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """The (key, first_seen, expires_at) marks this batch set, one per key, to upsert."""
        return [(key, first, expires) for key, (first, expires, _) in self._marked.items()]

    def marked_by(self) -> list[tuple[str, dt.datetime, dt.datetime, str | None]]:
        """The marks this batch set, as ``marked()``, each with its owner last."""
        return [(key, *mark) for key, mark in self._marked.items()]
