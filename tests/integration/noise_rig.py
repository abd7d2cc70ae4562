"""A Tidings with a frozen clock and a hand-cranked worker, for the noise-control rules.

The catalog holds one small type per rule. Nothing runs in the background: a test
publishes, then calls ``drain`` to run every job that is due, and moves the clock to
make timers due.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import keys, tokens
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings

SCHEMA = """
schema:
  type: object
  properties:
    ref: {type: string}
    board: {type: string}
"""
IN_APP = """
  in_app:
    title: "{{ actor.name if actor else 'Someone' }} pinged {{ data.board or 'you' }}"
    body: "ref {{ data.ref }}"
"""
EMAIL = """
  email:
    subject: "Ping {{ data.ref }}"
    html: "<p>Ping {{ data.ref }}</p>"
"""

TYPES: dict[str, str] = {
    "ping.plain": "",
    "ping.critical": "",
    "ping.dedup": "rules:\n  dedup: {key: '{{ data.ref }}', window: 10m}\n",
    "ping.throttle": "rules:\n  throttle: {limit: 2, window: 1h, per: channel, over: drop}\n",
    "ping.fold": "rules:\n  throttle: {limit: 1, window: 1h, per: channel, over: digest}\n",
    "ping.digest": textwrap.dedent(
        """\
        rules:
          digest:
            key: "{{ data.board }}"
            window: 1h
            show: 2
            title: "{{ digest.count }} pings on {{ digest.items[0].data.board }}"
        """
    ),
    "ping.delay": "rules:\n  delay: 5m\n",
    "ping.brief": textwrap.dedent(
        """\
        rules:
          max_age: 30m
          digest: {window: 1h, title: "{{ digest.count }} brief pings"}
        """
    ),
    "ping.later": textwrap.dedent(
        """\
        rules:
          delay: 5m
          email_if_unseen: 15m
          collapse: {key: "{{ data.board }}", title: "{{ group.count }} pings on {{ data.board }}"}
        """
    ),
    "ping.unseen": "rules:\n  email_if_unseen: 15m\n",
    "ping.stale": "rules:\n  max_age: 10m\n",
    "ping.when": textwrap.dedent(
        """\
        rules:
          condition: "data.ref != 'muted'"
          channel_conditions:
            email: "recipient.locale == 'fr'"
        """
    ),
    "ping.collapse": textwrap.dedent(
        """\
        rules:
          collapse:
            key: "{{ data.board }}"
            title: >-
              {{ group.actors[0].name }} and {{ group.others }} others pinged {{ data.board }}
        """
    ),
}

# A Saturday noon in winter, UTC: 13:00 in Paris.
START = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def write_catalog(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "categories.yaml").write_text(
        "categories:\n"
        "  updates: {description: Updates}\n"
        "  security: {description: Security, mandatory: true}\n"
    )
    for key, rules in TYPES.items():
        priority = "critical" if key == "ping.critical" else "normal"
        category = "security" if key == "ping.critical" else "updates"
        (folder / f"{key}.yaml").write_text(
            f"key: {key}\ncategory: {category}\npriority: {priority}\n"
            f"description: A ping.\n{SCHEMA}{rules}channels:{IN_APP}{EMAIL}"
        )
    return folder


@dataclass
class Rig:
    runtime: Runtime
    client: httpx.AsyncClient
    clock: FrozenClock
    producer: dict[str, str]
    user_headers: Callable[[str], dict[str, str]]

    async def publish(
        self,
        type_key: str,
        users: list[str],
        *,
        key: str,
        actor: str | None = "Ann",
        **data: Any,
    ) -> str:
        event = {
            "type": type_key,
            "idempotency_key": key,
            "recipients": [{"id": u, "email": f"{u}@example.com"} for u in users],
            "data": data,
        }
        if actor is not None:
            event["actor"] = {"id": f"a-{actor.lower()}", "name": actor}
        response = await self.client.post("/v1/events", json=event, headers=self.producer)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["event_id"]
        return event_id

    async def drain(self) -> None:
        """Run every job that is due, until none is left."""
        while await self.runtime.worker.run_once():
            pass

    async def advance(self, **delta: float) -> None:
        self.clock.at += dt.timedelta(**delta)
        await self.drain()

    async def deliveries(self, event_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(user, channel) → the delivery, as GET /v1/events/{id} shows it."""
        response = await self.client.get(f"/v1/events/{event_id}", headers=self.producer)
        assert response.status_code == 200, response.text
        return {(d["user_id"], d["channel"]): d for d in response.json()["deliveries"]}

    async def inbox(self, user: str) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/me/inbox", headers=self.user_headers(user))
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def mail_to(self, user: str) -> list[str]:
        """Subjects of the mail caught for ``user``, oldest first."""
        async with self.runtime.db.reader() as conn:
            rows = await conn.execute(
                sa.select(tables.mailbox.c.subject)
                .where(tables.mailbox.c.recipient == f"{user}@example.com")
                .order_by(tables.mailbox.c.created_at, tables.mailbox.c.id)
            )
            return [row.subject for row in rows]


@contextlib.asynccontextmanager
async def rig(settings: Settings, clock: FrozenClock) -> AsyncIterator[Rig]:
    runtime = build_runtime(settings, clock=clock)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
            _key, secret = await runtime.auth.create_key("tests", ["*", *keys.CAPABILITIES])

            def headers(user: str) -> dict[str, str]:
                # Signed at the real time: token expiry is checked against the real clock.
                token = tokens.issue_user_token(
                    settings.signing_secret,
                    user,
                    ttl=dt.timedelta(hours=1),
                    now=dt.datetime.now(dt.UTC),
                )
                return {"Authorization": f"Bearer {token}"}

            yield Rig(runtime, client, clock, {"Authorization": f"Bearer {secret}"}, headers)
