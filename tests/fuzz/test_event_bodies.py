"""Hypothesis writes event bodies a parser takes but a store may not: deep nesting,
integers past 64 bits, NaN and infinities, lone surrogates and NUL in text and keys,
long and unusual Unicode, in UTF-8, UTF-16 and with a byte order mark.

Each goes to ``POST /v1/events`` of a real application on SQLite and on PostgreSQL. The
answer is never a 5xx; a refusal is the error body with a code, a message and a field;
a body that holds only what Tidings stores is accepted, and reads back equal from
``GET /v1/events/{id}``. ``TIDINGS_FUZZ_EXAMPLES`` raises the examples per engine
(``make fuzz`` runs many more than CI does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CANONICAL_EVENT
from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "50"))
MAX_DEPTH = 64
"""The documented bound; the event's data sits two levels into the body."""

EDGE_TEXT = [
    "\ud800",
    "\udfff",
    "a\ud83d",
    "\x00",
    "nul\x00inside",
    "\ufeff",
    "\u202eevil",
    "e\u0301\u0301",
    "\U0010ffff",
    "\U0001f469\u200d\U0001f4bb",
    "\ufffe\uffff",
    "\\u0000",
    "x" * 5000,
]
texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.sampled_from(EDGE_TEXT),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=2**63 - 2, max_value=2**63 + 1),
    st.integers(min_value=-(2**63) - 1, max_value=-(2**63) + 1),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324, -0.0]),
    texts,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)
nested = st.integers(min_value=MAX_DEPTH - 4, max_value=300).map(
    lambda depth: {"deep": _nest(depth)}
)
encodings = st.sampled_from(["ascii", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"])
_keys = itertools.count()


def _nest(depth: int) -> Any:
    inner: Any = "bottom"
    for _ in range(depth):
        inner = [inner]
    return inner


def _storable(value: Any, depth: int) -> bool:
    """Whether Tidings keeps ``value`` (at ``depth`` in the body): the documented rules."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_storable(item, depth + 1) for item in value)
    return all(_storable(key, depth) and _storable(item, depth + 1) for key, item in value.items())


def _encode(event: dict[str, Any], encoding: str) -> bytes | None:
    """The body in ``encoding``; None when the text cannot be written in it at all (a
    lone surrogate has no UTF-8 form: ``ascii`` sends it escaped as ``\\ud800``)."""
    text = json.dumps(event, ensure_ascii=encoding == "ascii", allow_nan=True)
    try:
        return text.encode("utf-8" if encoding == "ascii" else encoding)
    except UnicodeEncodeError:
        return None


@contextlib.contextmanager
def _served(settings_: Settings) -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient, str]]:
    """A running application (its lifespan entered once) and a client on one loop."""
    with asyncio.Runner() as runner:
        application = create_app(runtime=build_runtime(settings_))
        stack = contextlib.AsyncExitStack()
        runner.run(stack.enter_async_context(application.router.lifespan_context(application)))
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        client = runner.run(
            stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))
        )
        _key, plaintext = runner.run(application.state.runtime.auth.create_key("fuzz", ["*"]))
        try:
            yield runner, client, plaintext
        finally:
            runner.run(stack.aclose())


async def _publish_and_read(client: httpx.AsyncClient, key: str, body: bytes) -> tuple[Any, ...]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    answer = await client.post("/v1/events", content=body, headers=headers)
    if answer.status_code != 202:
        return answer, None
    stored = await client.get(f"/v1/events/{answer.json()['event_id']}", headers=headers)
    return answer, stored


def test_any_event_body_is_stored_exactly_or_refused_with_a_clear_4xx(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    fuzzed = make_settings(database_url=database_url, worker_enabled=False, rate_limit_per_second=0)
    with _served(fuzzed) as (runner, client, key):

        @given(extra=st.one_of(values, nested), encoding=encodings)
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def publish(extra: Any, encoding: str) -> None:
            event = {**CANONICAL_EVENT, "idempotency_key": f"fuzz-{next(_keys)}"}
            event["data"] = {**CANONICAL_EVENT["data"], "extra": extra}
            body = _encode(event, encoding)
            if body is None:
                body = json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
                encoding = "invalid utf-8"
            answer, stored = runner.run(_publish_and_read(client, key, body))
            assert answer.status_code < 500, answer.text
            expected = 202 if _storable(extra, 3) else 422
            if encoding in ("utf-16", "utf-32"):
                expected = 415
            assert answer.status_code == expected, (encoding, answer.text)
            if expected != 202:
                error = answer.json()["error"]
                for part in ("code", "message", "field"):
                    assert isinstance(error[part], str), error
                    assert error[part], error
                return
            assert stored.status_code == 200, stored.text
            assert stored.json()["data"] == event["data"]

        publish()
