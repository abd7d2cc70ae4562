"""Hostile but well-formed input: JSON bodies that parse, holding values no engine stores
alike, bodies in another encoding than UTF-8, and cursors that were never handed out.
Each is a 4xx naming the field, never a 500, and the API goes on serving afterwards."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from tests.conftest import CANONICAL_EVENT, eventually

JSON = {"Content-Type": "application/json"}


def event_text(key: str, extra: str) -> str:
    """An event as JSON text, with ``extra`` (raw JSON) as the value of ``data.x``."""
    event = {**CANONICAL_EVENT, "idempotency_key": key}
    event["data"] = {**CANONICAL_EVENT["data"], "x": "@extra@"}
    return json.dumps(event).replace('"@extra@"', extra)


# (name, the raw JSON of data.x, the field named relative to data.x)
REFUSED_VALUES = [
    ("nested 260 deep", "[" * 260 + "]" * 260, "x.0.0.0..."),
    ("integer over 64 bits", "18446744073709551616", "x"),
    ("integer over int64", "9223372036854775808", "x"),
    ("integer under int64", "-9223372036854775809", "x"),
    ("lone high surrogate", '"a\\ud800b"', "x"),
    ("lone low surrogate", '["ok", "\\udc00"]', "x.1"),
    ("surrogate in a key", '{"\\ud800": 1}', "x"),
    ("escaped NUL", '{"t": "a\\u0000"}', "x.t"),
    ("escaped NUL in a key", '{"a\\u0000": 1}', "x"),
    ("NaN", "NaN", "x"),
    ("Infinity", "[Infinity]", "x.0"),
    ("-Infinity", "-Infinity", "x"),
    ("a float beyond a double", "1e400", "x"),
]


async def published_then_usable(
    client: httpx.AsyncClient, producer: dict[str, str], key: str
) -> None:
    """A valid event right after is accepted and reads back: nothing was left broken."""
    event = {**CANONICAL_EVENT, "idempotency_key": key}
    accepted = await client.post("/v1/events", json=event, headers=producer)
    assert accepted.status_code == 202, accepted.text
    stored = await client.get(f"/v1/events/{accepted.json()['event_id']}", headers=producer)
    assert stored.status_code == 200, stored.text
    assert stored.json()["data"] == CANONICAL_EVENT["data"]


def nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


def assert_error(response: httpx.Response, status: int, code: str, field: str) -> None:
    """The answer is ``status`` with this code and field; a field ending in ``...`` is a
    prefix (where nesting is cut off depends on where the value sits in the body)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if field.endswith("..."):
        assert error["field"].startswith(field[:-3]), error
    else:
        assert error["field"] == field, error
    assert error["message"]
    assert "Retry it" not in error["message"]


@pytest.mark.parametrize(
    ("name", "raw", "field"), REFUSED_VALUES, ids=[c[0] for c in REFUSED_VALUES]
)
async def test_values_no_engine_stores_alike_are_a_422_naming_the_field(
    client: httpx.AsyncClient, producer: dict[str, str], name: str, raw: str, field: str
) -> None:
    single = await client.post(
        "/v1/events", content=event_text("k", raw).encode(), headers={**producer, **JSON}
    )
    assert_error(single, 422, "invalid", "data." + field)
    batch = '{"events": [' + event_text("ok", '"fine"') + ", " + event_text("bad", raw) + "]}"
    batched = await client.post("/v1/events/batch", content=batch, headers={**producer, **JSON})
    assert_error(batched, 422, "invalid", "events.1.data." + field)
    await published_then_usable(client, producer, "after")


async def test_every_json_body_is_checked_not_only_events(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    preview = await client.post(
        "/v1/catalog/comment.created/preview",
        content=b'{"data": {"board": {"id": "b", "name": "n"}, "comment": {"id": "c", '
        b'"text": "t"}, "n": 18446744073709551616}}',
        headers={**producer, **JSON},
    )
    assert_error(preview, 422, "invalid", "data.n")
    profile = await client.put(
        "/v1/users/u-ann", content=b'{"name": "Ann\\u0000"}', headers={**producer, **JSON}
    )
    assert_error(profile, 422, "invalid", "name")


def _event_bytes(key: str, text: str) -> str:
    return json.dumps(
        {**CANONICAL_EVENT, "idempotency_key": key, "actor": {"id": "u-ann", "avatar_url": text}}
    )


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_body_not_in_utf8_is_415_and_its_nul_never_stored(
    client: httpx.AsyncClient, producer: dict[str, str], encoding: str
) -> None:
    body = _event_bytes(f"enc-{encoding}", "https://x.example/a\x00b").encode(encoding)
    response = await client.post("/v1/events", content=body, headers={**producer, **JSON})
    assert_error(response, 415, "unsupported_media_type", "body")
    await published_then_usable(client, producer, "after")


async def test_a_charset_other_than_utf8_is_415(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    body = _event_bytes("latin", "https://x.example/").encode()
    for charset in ("utf-16", "ISO-8859-1", '"latin1"'):
        response = await client.post(
            "/v1/events",
            content=body,
            headers={**producer, "Content-Type": f"application/json; charset={charset}"},
        )
        assert_error(response, 415, "unsupported_media_type", "body")
    for charset in ("utf-8", "UTF-8", '"utf-8"'):
        response = await client.post(
            "/v1/events",
            content=body,
            headers={**producer, "Content-Type": f"application/json; charset={charset}"},
        )
        assert response.status_code == 202, response.text


async def test_invalid_utf8_is_malformed_json_and_a_utf8_bom_is_ignored(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    broken = event_text("bad-utf8", '"caf\\u00e9"').encode().replace(b"\\u00e9", b"\xc3(")
    response = await client.post("/v1/events", content=broken, headers={**producer, **JSON})
    assert_error(response, 422, "malformed_json", "body")
    encoded_surrogate = event_text("cesu", '"\ud800"').encode("utf-8", "surrogatepass")
    response = await client.post(
        "/v1/events", content=encoded_surrogate, headers={**producer, **JSON}
    )
    assert_error(response, 422, "malformed_json", "body")
    with_bom = b"\xef\xbb\xbf" + event_text("bom", '"ok"').encode()
    accepted = await client.post("/v1/events", content=with_bom, headers={**producer, **JSON})
    assert accepted.status_code == 202, accepted.text


async def test_values_at_the_bounds_are_kept_exactly_and_one_past_them_refused(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    at_the_bound: dict[str, Any] = {
        "smallest": -(2**63),
        "largest": 2**63 - 1,
        "double": 1.7976931348623157e308,
        "tiny": 5e-324,
        "text": "\U0010ffff\ufeff\u202ee\u0301",
        # The body and data are two levels: 62 lists more make the limit, 64.
        "deep": nested(62, 1),
    }
    past_the_bound = {
        "smallest": -(2**63) - 1,
        "largest": 2**63,
        "double": "1.8e308",
        "tiny": None,
        "text": '"\\udfff"',
        "deep": nested(63, 1),
    }
    event = {**CANONICAL_EVENT, "idempotency_key": "bounds"}
    event["data"] = {**CANONICAL_EVENT["data"], **at_the_bound}
    accepted = await client.post("/v1/events", json=event, headers=producer)
    assert accepted.status_code == 202, accepted.text
    stored = await client.get(f"/v1/events/{accepted.json()['event_id']}", headers=producer)
    assert stored.json()["data"] == event["data"]
    for name, value in past_the_bound.items():
        if value is None:
            continue
        raw = value if isinstance(value, str) else json.dumps(value)
        refused = await client.post(
            "/v1/events", content=event_text(f"past-{name}", raw), headers={**producer, **JSON}
        )
        assert_error(refused, 422, "invalid", "data.x...")


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    ("leaves the calendar in UTC", _cursor(b"0001-01-01T00:00:00+14:00|x")),
    ("past the calendar in UTC", _cursor(b"9999-12-31T23:59:59-14:00|x")),
    ("a time without a zone", _cursor(b"2024-01-01T00:00:00|x")),
    ("not base64", "!!!"),
    ("base64 with junk", _cursor(b"2024-01-01T00:00:00+00:00|x") + "$%"),
    ("not UTF-8 once decoded", _cursor(b"\xff\xfe|\x80")),
    ("no id", _cursor(b"2024-01-01T00:00:00+00:00|")),
    ("no separator", _cursor(b"2024-01-01T00:00:00+00:00")),
    ("huge", _cursor(b"2024-01-01T00:00:00+00:00|" + b"x" * 5000)),
]


@pytest.fixture
async def operator(runtime: Any) -> dict[str, str]:
    _key, plaintext = await runtime.auth.create_key("ops", ["admin"])
    return {"Authorization": f"Bearer {plaintext}"}


async def test_a_cursor_never_handed_out_is_a_422_on_cursor(
    client: httpx.AsyncClient, user_headers: Any, operator: dict[str, str]
) -> None:
    for name, cursor in BAD_CURSORS:
        for path, headers in (
            ("/v1/me/inbox", user_headers("u-bob")),
            ("/v1/users/u-bob/deliveries", operator),
        ):
            response = await client.get(path, params={"cursor": cursor}, headers=headers)
            assert response.status_code == 422, (name, path, response.text)
            assert_error(response, 422, "invalid", "cursor")


async def test_an_id_cursor_longer_than_any_id_is_a_422_on_cursor(
    client: httpx.AsyncClient, producer: dict[str, str], operator: dict[str, str]
) -> None:
    published = await client.post("/v1/events", json=CANONICAL_EVENT, headers=producer)
    event_id = published.json()["event_id"]
    huge = "u" * 256
    for path, headers in (
        ("/v1/topics/board:1/subscribers", producer),
        (f"/v1/events/{event_id}", producer),
        ("/v1/dead-letters", operator),
    ):
        response = await client.get(path, params={"cursor": huge}, headers=headers)
        assert_error(response, 422, "invalid", "cursor")
        kept = await client.get(path, params={"cursor": "u" * 255}, headers=headers)
        assert kept.status_code == 200, kept.text


async def test_an_inbox_cursor_is_an_instant_whatever_its_offset(
    client: httpx.AsyncClient, producer: dict[str, str], user_headers: Any
) -> None:
    bob = user_headers("u-bob")
    for n in range(3):
        event = {**CANONICAL_EVENT, "idempotency_key": f"page-{n}"}
        assert (await client.post("/v1/events", json=event, headers=producer)).status_code == 202

    async def all_arrived() -> bool:
        return len((await client.get("/v1/me/inbox", headers=bob)).json()["items"]) == 3

    await eventually(all_arrived)
    newest_first = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]
    first = await client.get("/v1/me/inbox", params={"limit": 1}, headers=bob)
    cursor = first.json()["next_cursor"]
    assert first.json()["items"] == newest_first[:1]
    rest = await client.get("/v1/me/inbox", params={"cursor": cursor}, headers=bob)
    assert rest.json()["items"] == newest_first[1:]
    # The same instant written 14 hours ahead continues at the same place.
    at, item_id = base64.urlsafe_b64decode(cursor + "==").decode().split("|", 1)
    ahead = dt.datetime.fromisoformat(at).astimezone(dt.timezone(dt.timedelta(hours=14)))
    shifted = _cursor(f"{ahead.isoformat()}|{item_id}".encode())
    again = await client.get("/v1/me/inbox", params={"cursor": shifted}, headers=bob)
    assert again.status_code == 200, again.text
    assert again.json()["items"] == newest_first[1:]
