"""A notification type as the rest of Tidings sees it: checked, compiled, immutable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from tidings.catalog import payload
from tidings.catalog.payload import PayloadError
from tidings.catalog.priority import Priority
from tidings.catalog.templates import InAppContent, InAppTemplates, RenderError


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
