"""The demo of the embedded default: example users, the catalog's example events, the
mailbox they fill."""

from __future__ import annotations

import copy
import datetime as dt
import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from tidings import catalog
from tidings.auth.keys import ApiKey
from tidings.auth.service import AuthService
from tidings.delivery.service import DeliveryService
from tidings.email.providers.catcher import MailCatcher
from tidings.events import schemas as event_schemas
from tidings.events.service import EventsService
from tidings.kit import errors, ids


@dataclass(frozen=True)
class DemoUser:
    """One of the example people the demo acts as."""

    id: str
    name: str
    email: str
    locale: str


USERS = (
    DemoUser("u-ann", "Ann", "ann@example.com", "en"),
    DemoUser("u-bob", "Bob", "bob@example.com", "en"),
    DemoUser("u-cid", "Cid", "cid@example.com", "en"),
    DemoUser("u-dee", "Dee", "dee@example.com", "fr"),
    # A fifth person, so that four others can like one comment: "Ann and 3 others".
    DemoUser("u-eve", "Eve", "eve@example.com", "en"),
)

# The demo publishes as this key; it is never stored, so it opens nothing else. It holds
# no capability scope: the addresses its events carry serve those events only.
DEMO_KEY = ApiKey(
    id="demo",
    name="demo page",
    prefix="demo",
    scopes=("*",),
    created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
)


class Demo:
    """What the demo page may do: act only as its example users, publish only the
    catalog's example events to them, and read only their mail."""

    def __init__(
        self,
        types: catalog.Catalog,
        events: EventsService,
        auth: AuthService,
        delivery: DeliveryService,
        mail_catcher: MailCatcher | None,
    ) -> None:
        self._catalog = types
        self._events = events
        self._auth = auth
        self._delivery = delivery
        self._mail_catcher = mail_catcher

    def setup(self) -> dict[str, Any]:
        """The example users and the notification types that have an example payload."""
        return {
            "users": [{"id": u.id, "name": u.name, "email": u.email} for u in USERS],
            "types": [
                {
                    "key": t.key,
                    "category": t.category,
                    "description": t.description,
                    "channels": sorted(t.channels),
                    "priority": str(t.priority),
                }
                for t in sorted(self._catalog, key=lambda t: t.key)
                if t.example is not None
            ],
            "mailbox": self._mail_catcher is not None,
        }

    def token(self, user_id: str) -> str:
        """A user token for one of the example users.

        Raises:
            errors.Invalid: not one of the demo's users.
        """
        return self._auth.issue_user_token(_user(user_id, "user").id)

    async def fire(self, type_key: str, to: str, actor: str) -> str:
        """Publish ``type_key``'s example event from ``actor`` to ``to``; returns its id.

        Raises:
            errors.Invalid: an unknown user, or a type without an example payload.
        """
        recipient, sender = _user(to, "to"), _user(actor, "actor")
        ntype = self._catalog.get(type_key)
        if ntype is None or ntype.example is None:
            raise errors.Invalid(f"No example event for {type_key!r}.", field="type")
        event = event_schemas.EventIn.model_validate(
            {
                "type": type_key,
                "idempotency_key": f"demo-{ids.new_id()}",
                "actor": {"id": sender.id, "name": sender.name},
                "recipients": [
                    {
                        "id": recipient.id,
                        "name": recipient.name,
                        "email": recipient.email,
                        "locale": recipient.locale,
                    }
                ],
                "data": copy.deepcopy(ntype.example),
            }
        )
        outcomes = await self._events.publish([self._events.prepare(DEMO_KEY, event)])
        return outcomes[0].event_id

    async def outcome(self, event_id: str) -> list[dict[str, Any]]:
        """Each delivery of an event the demo fired: channel, state and why.

        Raises:
            errors.NotFound: no such event, or one the demo did not fire.
        """
        event = await self._events.get(event_id)
        if event["api_key_id"] != DEMO_KEY.id:
            raise errors.NotFound(f"The demo fired no event {event_id!r}.", field="event_id")
        rows, _next = await self._delivery.for_event(event_id, None, 100)
        return [
            {
                "user_id": row["user_id"],
                "channel": row["channel"],
                "state": row["state"],
                "reason": row["reason"],
            }
            for row in rows
        ]

    async def mailbox(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest messages the mail catcher holds for one example user.

        Raises:
            errors.Invalid: not one of the demo's users.
            errors.NotFound: email goes through a real provider, not the catcher.
        """
        user = _user(user_id, "user")
        if self._mail_catcher is None:
            raise errors.NotFound(
                "The mail catcher is off: this deployment sends through a real provider.",
                field="email_provider",
            )
        caught = await self._mail_catcher.list(limit=limit, recipient=user.email)
        return [_readable(message["raw"]) | {"id": message["id"]} for message in caught]


def _user(user_id: str, field: str) -> DemoUser:
    for user in USERS:
        if user.id == user_id:
            return user
    known = ", ".join(u.id for u in USERS)
    raise errors.Invalid(f"The demo acts only as {known}; not {user_id!r}.", field=field)


def _readable(raw: str) -> dict[str, Any]:
    """The parts of a message a person reads: subject, sender, date, text and HTML."""
    message = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return {
        "subject": str(message.get("Subject", "")),
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "date": str(message.get("Date", "")),
        "text": _part(message, "plain"),
        "html": _part(message, "html"),
    }


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""
