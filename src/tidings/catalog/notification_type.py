"""A notification type as the rest of Tidings sees it: checked, compiled, immutable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from tidings.catalog import payload
from tidings.catalog.email_templates import EmailTemplates
from tidings.catalog.payload import PayloadError
from tidings.catalog.priority import Priority
from tidings.catalog.templates import InAppContent, InAppTemplates, RenderError
from tidings.email.message import RenderedEmail


@dataclass(frozen=True, eq=False)
class NotificationType:
    """One declared notification type; built by ``load`` from a validated catalog file.

    Equality is identity: a type is the one object its catalog holds.
    """

    key: str
    category: str
    priority: Priority
    description: str
    payload_schema: dict[str, Any]
    example: dict[str, Any] | None
    channels: frozenset[str]
    source: str
    _validator: Draft202012Validator = field(repr=False)
    _in_app: InAppTemplates | None = field(repr=False)
    _email: EmailTemplates | None = field(default=None, repr=False)

    @property
    def email_locales(self) -> frozenset[str]:
        """The locales the email has overrides for (``fr``, ``pt-BR``); empty without email."""
        return frozenset() if self._email is None else frozenset(self._email.overrides)

    def validate_payload(self, data: Any) -> list[PayloadError]:
        """All the ways ``data`` fails the payload schema, sorted by path (``data.…``)."""
        return payload.validate(self._validator, data)

    def render_in_app(self, context: Mapping[str, Any]) -> InAppContent:
        """Render the inbox item for one recipient.

        ``context`` holds ``data``, ``actor`` (or None), ``recipient`` and ``event``.
        Raises ``RenderError`` when a template fails or the type has no in-app channel.
        """
        if self._in_app is None:
            raise RenderError("channels.in_app", f"{self.key} has no in_app channel")
        return self._in_app.render(context)

    def render_email(self, context: Mapping[str, Any], locale: str | None) -> RenderedEmail:
        """Render the email for one recipient, in the closest locale to ``locale``.

        ``context`` is as for ``render_in_app``. ``locale`` falls back from ``fr-CA`` to
        ``fr`` to the default templates; ``RenderedEmail.locale`` says which was used
        (``"default"`` for the default). Dates and numbers are formatted in ``locale``
        when it speaks the templates' language, else in the templates' own locale.
        Raises ``RenderError`` when a template fails or the type has no email channel.
        """
        if self._email is None:
            raise RenderError("channels.email", f"{self.key} has no email channel")
        return self._email.render(context, locale)
