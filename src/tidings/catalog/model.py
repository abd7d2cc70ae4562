"""The shape of one catalog file, as pydantic models: the edge where YAML becomes typed."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from tidings.catalog.priority import Priority
from tidings.kit.durations import parse_duration

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
    """``channels``: one entry per channel the type is delivered on.

    Any other key names a plugin channel; its section is checked by that plugin's model.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    in_app: InAppChannelFile | None = None
    email: EmailChannelFile | None = None


def _duration(value: object) -> timedelta:
    # YAML reads "90" as a number: say what a duration looks like rather than "not a string".
    return parse_duration(value if isinstance(value, str) else str(value))


# A length of time written like 30s, 10m, 1h or 1d.
Duration = Annotated[timedelta, BeforeValidator(_duration)]


class RulesDedupFile(_FileModel):
    """``rules.dedup``: one notification per rendered key and recipient within the window."""

    key: TemplateSource
    window: Duration


class RulesCollapseFile(_FileModel):
    """``rules.collapse``: unread inbox items with the same rendered key merge into one."""

    key: TemplateSource
    title: TemplateSource
    body: TemplateSource | None = None


class RulesThrottleFile(_FileModel):
    """``rules.throttle``: at most ``limit`` notifications per recipient within the window."""

    limit: Annotated[StrictInt, Field(ge=1)]
    window: Duration
    per: Literal["channel", "category"] = "channel"
    over: Literal["drop", "digest"] = "drop"


class RulesDigestFile(_FileModel):
    """``rules.digest``: notifications gathered for a window, then sent as one."""

    key: TemplateSource | None = None
    window: Duration
    show: Annotated[StrictInt, Field(ge=1, le=50)] = 5
    title: TemplateSource
    body: TemplateSource | None = None
    subject: TemplateSource | None = None


class RulesFile(_FileModel):
    """``rules``: how often and when a type reaches a recipient; every rule is optional."""

    dedup: RulesDedupFile | None = None
    collapse: RulesCollapseFile | None = None
    throttle: RulesThrottleFile | None = None
    digest: RulesDigestFile | None = None
    delay: Duration | None = None
    email_if_unseen: Duration | None = None
    max_age: Duration | None = None
    # Whether the type (condition) or one channel (channel_conditions) goes to a
    # recipient at all: a Jinja expression over data, actor, event and recipient.
    condition: TemplateSource | None = None
    channel_conditions: dict[str, TemplateSource] = Field(default_factory=dict)


class DeprecatedFile(_FileModel):
    """``deprecated``: the type is on its way out. Publishing it still works, and each
    answer carries a ``Deprecation`` header; once deprecated it may leave the catalog."""

    since: date
    # When publishing it will stop working (the ``Sunset`` header), if decided.
    sunset: date | None = None
    # What producers should do instead ("publish comment.added").
    note: Text | None = None

    @model_validator(mode="after")
    def _sunset_after_since(self) -> DeprecatedFile:
        if self.sunset is not None and self.sunset < self.since:
            raise ValueError("sunset comes before since")
        return self


class NotificationTypeFile(_FileModel):
    """A whole catalog file: one notification type."""

    key: TypeKey
    # Raised with every change of the payload schema; ``catalog check --against`` holds
    # producers' compatibility across versions.
    version: Annotated[StrictInt, Field(ge=1)] = 1
    deprecated: DeprecatedFile | None = None
    category: CategoryName
    priority: Priority = Priority.NORMAL
    description: Text
    # Aliased because ``schema`` shadows a (deprecated) BaseModel attribute.
    payload_schema: dict[str, Any] = Field(alias="schema")
    example: dict[str, Any] | None = None
    channels: ChannelsFile
    rules: RulesFile = Field(default_factory=RulesFile)


class CategoryDigestFile(_FileModel):
    """``digest`` of a category: how often its notifications reach a recipient by default."""

    cadence: Literal["instant", "hourly", "daily"]
    # The recipient's local hour a daily digest goes out at.
    hour: Annotated[StrictInt, Field(ge=0, le=23)] | None = None

    @model_validator(mode="after")
    def _hour_only_when_daily(self) -> CategoryDigestFile:
        if self.hour is not None and self.cadence != "daily":
            raise ValueError("hour applies only to the daily cadence")
        return self


class CategoryLocaleFile(_FileModel):
    """``locales.<tag>`` of a category: its title in that language."""

    title: Text


class CategoryFile(_FileModel):
    """One entry of ``categories.yaml``."""

    description: Text
    # What recipients read, on the unsubscribe page for one: "Comments", not "comments".
    title: Text | None = None
    locales: dict[str, CategoryLocaleFile] = Field(default_factory=dict)
    # Mandatory categories (security, billing) cannot be turned off by a recipient.
    mandatory: StrictBool = False
    # Defaults under tenants' and recipients' own choices.
    # Channel names are checked against the built-in and installed plugin channels.
    channels: dict[str, StrictBool] = Field(default_factory=dict)
    digest: CategoryDigestFile | None = None


class CategoriesFile(_FileModel):
    """``categories.yaml``: the categories of the catalog, by name."""

    categories: dict[str, CategoryFile]
