"""The shape of one catalog file, as pydantic models: the edge where YAML becomes typed."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from tidings.catalog.priority import Priority

KEY_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_-]*)+$"
CATEGORY_PATTERN = r"^[a-z][a-z0-9_-]*$"

TypeKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=200)]
CategoryName = Annotated[str, StringConstraints(pattern=CATEGORY_PATTERN, max_length=100)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Templates keep their exact text, so that a syntax error's line maps back into the file.
TemplateSource = Annotated[str, AfterValidator(_not_blank)]
Text = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_not_blank)]
# A template file, relative to the catalog file that names it.
TemplatePath = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_not_blank)]


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InAppChannelFile(_FileModel):
    """``channels.in_app``: the Jinja templates of an inbox item."""

    title: TemplateSource
    body: TemplateSource
    action_url: TemplateSource | None = None


class EmailContentFile(_FileModel):
    """The templates of an email, any of them optional: what a locale overrides.

    Each of the body (``mjml``, ``html``) and ``text`` is written inline or named as a
    ``…_file``; which combinations make sense is checked when the channel is compiled.
    """

    subject: TemplateSource | None = None
    mjml: TemplateSource | None = None
    mjml_file: TemplatePath | None = None
    html: TemplateSource | None = None
    html_file: TemplatePath | None = None
    text: TemplateSource | None = None
    text_file: TemplatePath | None = None


class EmailChannelFile(EmailContentFile):
    """``channels.email``: subject, body and optional text, plus per-locale overrides."""

    subject: TemplateSource
    # The locale the templates above are written in: dates and numbers are formatted in it.
    default_locale: Text = "en"
    locales: dict[str, EmailContentFile] = Field(default_factory=dict)


class ChannelsFile(_FileModel):
    """``channels``: one entry per channel the type is delivered on."""

    in_app: InAppChannelFile | None = None
    email: EmailChannelFile | None = None


class NotificationTypeFile(_FileModel):
    """A whole catalog file: one notification type."""

    key: TypeKey
    category: CategoryName
    priority: Priority = Priority.NORMAL
    description: Text
    # Aliased because ``schema`` shadows a (deprecated) BaseModel attribute.
    payload_schema: dict[str, Any] = Field(alias="schema")
    example: dict[str, Any] | None = None
    channels: ChannelsFile


class CategoryFile(_FileModel):
    """One entry of ``categories.yaml``."""

    description: Text
    # Mandatory categories (security, billing) cannot be turned off by a recipient.
    mandatory: StrictBool = False


class CategoriesFile(_FileModel):
    """``categories.yaml``: the categories of the catalog, by name."""

    categories: dict[str, CategoryFile]
