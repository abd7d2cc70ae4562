"""The shape of one catalog file, as pydantic models: the edge where YAML becomes typed."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tidings.catalog.priority import Priority

KEY_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_-]*)+$"
CATEGORY_PATTERN = r"^[a-z][a-z0-9_-]*$"

TypeKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=200)]
Category = Annotated[str, StringConstraints(pattern=CATEGORY_PATTERN, max_length=100)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Templates keep their exact text, so that a syntax error's line maps back into the file.
TemplateSource = Annotated[str, AfterValidator(_not_blank)]
Text = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_not_blank)]


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InAppChannelFile(_FileModel):
    """``channels.in_app``: the Jinja templates of an inbox item."""

    title: TemplateSource
    body: TemplateSource
    action_url: TemplateSource | None = None


class ChannelsFile(_FileModel):
    """``channels``: one entry per channel the type is delivered on (only ``in_app`` now)."""

    in_app: InAppChannelFile | None = None


class NotificationTypeFile(_FileModel):
    """A whole catalog file: one notification type."""

    key: TypeKey
    category: Category
    priority: Priority = Priority.NORMAL
    description: Text
    # Aliased because ``schema`` shadows a (deprecated) BaseModel attribute.
    payload_schema: dict[str, Any] = Field(alias="schema")
    example: dict[str, Any] | None = None
    channels: ChannelsFile
