"""A plugin channel's section of a type: validated by the plugin's model, its templates
compiled in the catalog's sandbox, rendered per recipient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from jinja2 import Template

from tidings.catalog.templates import render


@dataclass(frozen=True)
class ChannelSection:
    """``channels.<channel>`` of one type: ``model`` as the plugin's ``section`` model
    validated it, and a compiled template for each of its string fields."""

    channel: str
    model: pydantic.BaseModel
    templates: Mapping[str, Template]

    def render(self, name: str, context: Mapping[str, Any]) -> str | None:
        """Render the template of field ``name``, stripped; None when the type left it out.

        Raises ``RenderError`` naming ``channels.<channel>.<name>``.
        """
        template = self.templates.get(name)
        if template is None:
            return None
        return render(template, context, f"channels.{self.channel}.{name}")

    def render_all(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Every template rendered, by field name; the section's other fields as they are."""
        values: dict[str, Any] = self.model.model_dump(mode="json", exclude_none=True)
        for name in self.templates:
            values[name] = self.render(name, context)
        return values
