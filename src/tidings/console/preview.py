"""What the console shows of a template or a caught email: pure rendering, no I/O."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Mapping
from typing import Any

from tidings import catalog
from tidings.email.composer import EmailComposer

DEFAULT_ACTOR: dict[str, Any] = {"id": "u-ann", "name": "Ann Example"}


def render(
    ntype: catalog.NotificationType,
    composer: EmailComposer,
    data: Any,
    actor: Mapping[str, Any] | None,
    locale: str | None,
) -> dict[str, Any]:
    """The type's in-app item and email for a payload, side by side.

    Returns ``{"in_app": {...} | None, "email": {...} | None}``; a channel the type does
    not have is None.

    Raises:
        catalog.RenderError: the payload fails the type's schema, or a template fails.
    """
    problems = ntype.validate_payload(data)
    if problems:
        raise catalog.RenderError(problems[0].path, problems[0].message)
    context = {
        "data": data,
        "actor": dict(actor) if actor is not None else None,
        "recipient": {"id": "preview", "name": "Preview", "email": None, "locale": locale},
        "event": {"id": "preview", "type": ntype.key, "tenant": "default"},
    }
    in_app = None
    if "in_app" in ntype.channels:
        item = ntype.render_in_app(context)
        in_app = {"title": item.title, "body": item.body, "action_url": item.action_url}
    mail = None
    if "email" in ntype.channels:
        rendered = composer.preview(ntype, context, locale)
        mail = {
            "subject": rendered.subject,
            "html": rendered.html,
            "text": rendered.text,
            "locale": rendered.locale,
        }
    return {"in_app": in_app, "email": mail}


def parts_of(raw: str) -> dict[str, str | None]:
    """The headers a person reads first and the HTML and text bodies of a raw message."""
    message = email.message_from_string(raw, policy=email.policy.default)
    found: dict[str, str | None] = {
        "subject": str(message.get("Subject", "")),
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "date": str(message.get("Date", "")),
        "html": None,
        "text": None,
    }
    if not isinstance(message, email.message.EmailMessage):
        return found
    for kind in ("html", "plain"):
        part = message.get_body(preferencelist=(kind,))
        if isinstance(part, email.message.EmailMessage):
            content = part.get_content()
            found["html" if kind == "html" else "text"] = (
                content if isinstance(content, str) else None
            )
    return found
