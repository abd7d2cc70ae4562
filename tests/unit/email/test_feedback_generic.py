"""The generic feedback shape: Stripe-style signature, then a strict body."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from tidings.email import feedback, feedback_generic
from tidings.email.feedback import Feedback, FeedbackKind
from tidings.kit import errors

SECRET = "whsec-test"
NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def signed(body: Any, *, secret: str = SECRET, at: dt.datetime = NOW) -> tuple[bytes, str]:
    """A body and its header, computed here independently of the code under test."""
    raw = orjson.dumps(body)
    t = int(at.timestamp())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, f"t={t},v1={digest}"


def parse(body: Any) -> list[Feedback]:
    raw, header = signed(body)
    return feedback_generic.parse_generic(raw, header, SECRET, NOW)


HARD = {
    "type": "bounce",
    "bounce_type": "hard",
    "recipient": "ann@example.com",
    "message_id": "<m1@example.com>",
    "provider_message_id": "p-1",
    "detail": "550 5.1.1 user unknown",
    "occurred_at": "2025-03-01T11:59:00Z",
}


def test_a_signed_hard_bounce_parses() -> None:
    assert parse(HARD) == [
        Feedback(
            kind=FeedbackKind.HARD_BOUNCE,
            address="ann@example.com",
            provider="generic",
            message_id="<m1@example.com>",
            provider_message_id="p-1",
            detail="550 5.1.1 user unknown",
            occurred_at=dt.datetime(2025, 3, 1, 11, 59, tzinfo=dt.UTC),
        )
    ]


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({"type": "bounce", "bounce_type": "soft"}, FeedbackKind.SOFT_BOUNCE),
        ({"type": "complaint"}, FeedbackKind.COMPLAINT),
        ({"type": "delivered"}, FeedbackKind.DELIVERED),
    ],
)
def test_each_type_maps_to_its_kind(event: dict[str, Any], kind: FeedbackKind) -> None:
    [item] = parse({**event, "recipient": "bob@example.com"})
    assert item.kind is kind
    assert (item.message_id, item.provider_message_id, item.detail) == (None, None, None)


def test_a_batch_of_events_parses_in_order() -> None:
    events = [HARD, {"type": "delivered", "recipient": "bob@example.com"}]
    assert [i.kind for i in parse({"events": events})] == [
        FeedbackKind.HARD_BOUNCE,
        FeedbackKind.DELIVERED,
    ]
    assert parse({"events": []}) == []


def test_message_ids_are_compared_with_their_brackets() -> None:
    [item] = parse({"type": "complaint", "recipient": "a@b.example", "message_id": "m1@x"})
    assert item.message_id == "<m1@x>"


def test_offsets_are_converted_to_utc() -> None:
    [item] = parse({**HARD, "occurred_at": "2025-03-01T13:00:00+01:00"})
    assert item.occurred_at == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_sign_generic_produces_what_the_verifier_accepts() -> None:
    raw = orjson.dumps(HARD)
    assert feedback_generic.sign_generic(raw, SECRET, NOW) == signed(HARD)[1]


# --- signatures ----------------------------------------------------------------------


def digest(raw: bytes, t: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()


RAW = orjson.dumps(HARD)
T = int(NOW.timestamp())


@pytest.mark.parametrize(
    ("header", "now"),
    [
        pytest.param(f"t={T},v1={digest(RAW, T)}", NOW, id="exact"),
        pytest.param(f"t={T},v1={'0' * 64},v1={digest(RAW, T)}", NOW, id="rotated-second"),
        pytest.param(f"t={T}, v1={digest(RAW, T).upper()}, v0=ignored", NOW, id="spaces-case"),
        pytest.param(
            f"t={T},v1={digest(RAW, T)}", NOW + dt.timedelta(seconds=299), id="just-in-time"
        ),
    ],
)
def test_valid_signatures_are_accepted(header: str, now: dt.datetime) -> None:
    assert len(feedback_generic.parse_generic(RAW, header, SECRET, now)) == 1


@pytest.mark.parametrize(
    ("raw", "header", "now"),
    [
        pytest.param(RAW, None, NOW, id="missing"),
        pytest.param(RAW, "", NOW, id="empty"),
        pytest.param(RAW, f"v1={digest(RAW, T)}", NOW, id="no-timestamp"),
        pytest.param(RAW, f"t={T}", NOW, id="no-v1"),
        pytest.param(RAW, f"t=soon,v1={digest(RAW, T)}", NOW, id="bad-timestamp"),
        pytest.param(RAW, f"t={T},v1={digest(RAW, T, 'other')}", NOW, id="wrong-secret"),
        pytest.param(RAW + b" ", f"t={T},v1={digest(RAW, T)}", NOW, id="tampered-body"),
        pytest.param(RAW, f"t={T + 1},v1={digest(RAW, T)}", NOW, id="tampered-timestamp"),
        pytest.param(RAW, f"t={T},v1=é{digest(RAW, T)[1:]}", NOW, id="non-ascii"),
        pytest.param(
            RAW, f"t={T},v1={digest(RAW, T)}", NOW + dt.timedelta(seconds=301), id="stale"
        ),
        pytest.param(
            RAW, f"t={T},v1={digest(RAW, T)}", NOW - dt.timedelta(seconds=301), id="future"
        ),
    ],
)
def test_bad_signatures_are_unauthenticated(
    raw: bytes, header: str | None, now: dt.datetime
) -> None:
    with pytest.raises(errors.Unauthenticated) as caught:
        feedback_generic.parse_generic(raw, header, SECRET, now)
    assert caught.value.field == "tidings-signature"


def test_no_secret_accepts_nothing() -> None:
    raw, header = signed(HARD, secret="")
    with pytest.raises(errors.Unauthenticated):
        feedback_generic.parse_generic(raw, header, "", NOW)


def test_the_signature_is_checked_before_the_body() -> None:
    with pytest.raises(errors.Unauthenticated):
        feedback_generic.parse_generic(b"not json", "t=1,v1=00", SECRET, NOW)


# --- shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([HARD], "body"),
        ("bounce", "body"),
        ({"events": HARD}, "events"),
        ({"events": [HARD, "x"]}, "events.1"),
        ({**HARD, "type": "open"}, "type"),
        ({**HARD, "type": None}, "type"),
        ({**HARD, "bounce_type": "medium"}, "bounce_type"),
        ({"type": "bounce", "recipient": "a@b.example"}, "bounce_type"),
        ({"type": "complaint", "bounce_type": "hard", "recipient": "a@b.example"}, "bounce_type"),
        ({"events": [HARD, {**HARD, "recipient": None}]}, "events.1.recipient"),
        ({**HARD, "recipient": "not an address"}, "recipient"),
        ({**HARD, "recipient": "@example.com"}, "recipient"),
        ({**HARD, "recipient": ""}, "recipient"),
        ({**HARD, "message_id": 7}, "message_id"),
        ({**HARD, "provider_message_id": ["p"]}, "provider_message_id"),
        ({**HARD, "detail": {"code": 550}}, "detail"),
        ({**HARD, "occurred_at": "yesterday"}, "occurred_at"),
        ({**HARD, "occurred_at": "2025-03-01T11:59:00"}, "occurred_at"),
        ({**HARD, "occurred_at": 1740830340}, "occurred_at"),
    ],
)
def test_bad_shapes_are_invalid_with_their_path(body: Any, field: str) -> None:
    with pytest.raises(errors.Invalid) as caught:
        parse(body)
    assert caught.value.field == field


def test_a_body_that_is_not_json_is_invalid() -> None:
    raw = b"{nope"
    header = f"t={T},v1={digest(raw, T)}"
    with pytest.raises(errors.Invalid) as caught:
        feedback_generic.parse_generic(raw, header, SECRET, NOW)
    assert caught.value.field == "body"


def test_long_details_are_cut() -> None:
    [item] = parse({**HARD, "detail": "x" * 5000})
    assert item.detail == "x" * feedback.MAX_DETAIL
