"""The body hash kept with an idempotency key does not change for an event published
the same way before and after the fields added later (``send_at``,
``cancellation_key``): replaying it after an upgrade is a replay, not a 409."""

from __future__ import annotations

import hashlib

import orjson

from tidings.events.schemas import EventIn
from tidings.events.service import hash_of, stored_body

EVENT = {
    "type": "comment.created",
    "idempotency_key": "comment-42",
    "recipients": ["u-bob"],
    "data": {"board": {"id": "b-1"}},
}
FIRST_RELEASE_FIELDS = ("type", "idempotency_key", "tenant", "actor", "recipients", "topic", "data")


def test_an_event_without_the_later_fields_hashes_as_the_first_release_did() -> None:
    event = EventIn.model_validate(EVENT)
    # What the first release stored: its fields only, as JSON with sorted keys.
    first = {name: event.model_dump(mode="json")[name] for name in FIRST_RELEASE_FIELDS}
    expected = hashlib.sha256(orjson.dumps(first, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert hash_of(stored_body(event)) == expected
    explicit_nulls = EventIn.model_validate({**EVENT, "send_at": None, "cancellation_key": None})
    assert hash_of(stored_body(explicit_nulls)) == expected


def test_the_later_fields_count_when_set() -> None:
    plain = hash_of(stored_body(EventIn.model_validate(EVENT)))
    later = EventIn.model_validate({**EVENT, "send_at": "2030-01-01T09:00:00+01:00"})
    keyed = EventIn.model_validate({**EVENT, "cancellation_key": "remind-1"})
    assert len({plain, hash_of(stored_body(later)), hash_of(stored_body(keyed))}) == 3
