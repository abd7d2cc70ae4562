"""A notification type as the rest of Tidings sees it: checked, compiled, immutable."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2 import Template

from tidings.catalog import payload
from tidings.catalog.channel_section import ChannelSection
from tidings.catalog.digest_email import render_digest_email
from tidings.catalog.email_templates import EmailTemplates, RenderedEmail
from tidings.catalog.payload import PayloadError
from tidings.catalog.priority import Priority
from tidings.catalog.rules import CollapseRule, DigestRule, Rules, key_templates, storable_key
from tidings.catalog.templates import TITLE_MAX, InAppContent, InAppTemplates, RenderError, render


@dataclass(frozen=True)
class Deprecation:
    """A type's deprecation: since when, until when it is published, and what instead."""

    since: dt.date
    sunset: dt.date | None = None
    note: str | None = None

    def headers(self, key: str) -> dict[str, str]:
        """The answer headers of a publish of type ``key``: ``Deprecation`` (RFC 9745),
        ``Sunset`` (RFC 8594) when decided, and a ``Warning`` a person can read."""
        since = dt.datetime.combine(self.since, dt.time(), dt.UTC)
        text = self.warning(key).encode("ascii", "replace").decode("ascii")
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        found = {"Deprecation": f"@{int(since.timestamp())}", "Warning": f'299 tidings "{text}"'}
        if self.sunset is not None:
            sunset = dt.datetime.combine(self.sunset, dt.time(), dt.UTC)
            found["Sunset"] = sunset.strftime("%a, %d %b %Y %H:%M:%S GMT")
        return found

    def warning(self, key: str) -> str:
        text = f"{key} is deprecated since {self.since.isoformat()}"
        if self.sunset is not None:
            text += f" and is to be removed on {self.sunset.isoformat()}"
        return text + (f": {self.note}" if self.note else "")


def deprecation_headers(types: Iterable[NotificationType]) -> dict[str, str]:
    """The headers of an answer that published ``types``: empty when none is deprecated;
    else the earliest deprecation and sunset, and one warning per deprecated type."""
    deprecated = sorted(
        {t.key: t.deprecated for t in types if t.deprecated is not None}.items(),
        key=lambda item: (item[1].since, item[0]),
    )
    if not deprecated:
        return {}
    headers = deprecated[0][1].headers(deprecated[0][0])
    sunsets = [d for _, d in deprecated if d.sunset is not None]
    if sunsets:
        first = min(sunsets, key=lambda d: d.sunset or dt.date.max)
        headers["Sunset"] = first.headers("")["Sunset"]
    headers["Warning"] = ", ".join(d.headers(key)["Warning"] for key, d in deprecated)
    return headers


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
    _validator: payload.PayloadValidator = field(repr=False)
    _in_app: InAppTemplates | None = field(repr=False)
    _email: EmailTemplates | None = field(default=None, repr=False)
    rules: Rules = field(default_factory=Rules)
    _sections: Mapping[str, ChannelSection] = field(default_factory=dict, repr=False)
    version: int = 1
    deprecated: Deprecation | None = None

    @property
    def email_locales(self) -> frozenset[str]:
        """The locales the email has overrides for (``fr``, ``pt-BR``); empty without email."""
        return frozenset() if self._email is None else frozenset(self._email.overrides)

    def validate_payload(self, data: Any, *, bounded: bool = False) -> list[PayloadError]:
        """All the ways ``data`` fails the payload schema, sorted by path (``data.…``).

        ``bounded``: ``data`` passed ``json_input.check`` (as every event's data has), so
        it nests no deeper than a body may and its depth is not looked at again."""
        return payload.validate(self._validator, data, bounded=bounded)

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

    def unmet_conditions(self, context: Mapping[str, Any]) -> frozenset[str]:
        """The channels whose condition (or the type's) is false for ``context``: an
        event with its recipient, as templates see them."""
        rules = self.rules
        if rules.condition is not None and not rules.condition.holds(context):
            return self.channels
        return frozenset(
            channel
            for channel, condition in rules.channel_conditions.items()
            if not condition.holds(context)
        )

    def channel_section(self, channel: str) -> ChannelSection:
        """The compiled section of plugin channel ``channel``.

        Raises ``RenderError`` when the type does not declare that channel.
        """
        section = self._sections.get(channel)
        if section is None:
            raise RenderError(f"channels.{channel}", f"{self.key} has no {channel} channel")
        return section

    def summary(self, context: Mapping[str, Any], locale: str | None) -> InAppContent:
        """The notification as one line and a body, for a digest that lists it: the in-app
        item, else the email's subject, else a plugin channel's ``title`` and ``body``.

        ``context`` is as for ``render_in_app``. Raises ``RenderError``.
        """
        if self._in_app is not None:
            return self._in_app.render(context)
        if self._email is not None:
            return InAppContent(self._email.render(context, locale).subject, "", None)
        for section in self._sections.values():
            title = section.render("title", context) or ""
            return InAppContent(title, section.render("body", context) or "", None)
        raise RenderError("channels", f"{self.key} has no channel")

    def rule_key(self, template: Template, context: Mapping[str, Any]) -> str:
        """Render a key template of this type's rules (dedup, collapse, digest), stripped.

        ``context`` is as for ``render_in_app``. A long key, or one a database column
        cannot hold, comes back as a prefix and a digest of it (see ``storable_key``).
        Raises ``RenderError`` when the template fails or renders an empty key.
        """
        name = self._rule_field(template)
        key = render(template, context, name)
        if not key:
            raise RenderError(name, "renders an empty key")
        return storable_key(key)

    def render_collapsed(self, context: Mapping[str, Any]) -> InAppContent:
        """Render the inbox item a group of notifications collapsed into.

        ``context`` is as for ``render_in_app`` (the newest notification's), plus
        ``group``: ``count`` (notifications in the group), ``actors`` (distinct, newest
        first) and ``others`` (how many actors besides the first). The body is the
        rule's, else the in-app one; the action URL is the in-app one. Raises
        ``RenderError`` when a template fails or the type has no collapse rule.
        """
        collapse = self.rules.collapse
        if collapse is None or self._in_app is None:
            raise RenderError("rules.collapse", f"{self.key} has no collapse rule")
        templates = replace(
            self._in_app, title=collapse.title, body=collapse.body or self._in_app.body
        )
        try:
            return templates.render(context)
        except RenderError as exc:
            raise _as_collapse_error(exc, collapse) from exc

    def render_digest(self, context: Mapping[str, Any], rule: DigestRule) -> InAppContent:
        """Render the inbox item of a digest.

        ``context`` holds ``recipient`` and ``digest``: ``count`` (notifications
        gathered), ``items`` (the first ``rule.show`` of them, each with ``title``,
        ``body``, ``action_url``, ``actor``, ``data``, ``event_id``, ``created_at``),
        ``more`` (how many are not listed), ``key`` and ``type``. Without a body
        template the body lists the items' titles. Raises ``RenderError``.
        """
        digest = _digest_of(context)
        title = render(rule.title, context, "rules.digest.title")
        if len(title) > TITLE_MAX:
            title = title[: TITLE_MAX - 1] + "…"
        if rule.body is not None:
            body = render(rule.body, context, "rules.digest.body")
        else:
            body = _digest_lines(digest)
        items = digest.get("items") or []
        action_url = items[0].get("action_url") if items else None
        return InAppContent(title=title, body=body, action_url=action_url or None)

    def render_digest_email(
        self, context: Mapping[str, Any], rule: DigestRule, locale: str | None
    ) -> RenderedEmail:
        """Render the digest email: the built-in layout, with the rule's title and subject.

        ``context`` is as for ``render_digest``; ``RenderedEmail.locale`` is
        ``"default"``. Raises ``RenderError`` when a template fails.
        """
        return render_digest_email(context, rule, locale)

    def _rule_field(self, template: Template) -> str:
        """The catalog field a key template came from, for error messages."""
        for name, candidate in key_templates(self.rules).items():
            if candidate is template:
                return name
        return "rules"


def _as_collapse_error(exc: RenderError, collapse: CollapseRule) -> RenderError:
    """The error of a collapsed render, naming the rule's template when it was the rule's."""
    renamed = {"channels.in_app.title": "rules.collapse.title"}
    if collapse.body is not None:
        renamed["channels.in_app.body"] = "rules.collapse.body"
    name = renamed.get(exc.field)
    return exc if name is None else RenderError(name, exc.message, exc.line)


def _digest_of(context: Mapping[str, Any]) -> Mapping[str, Any]:
    digest = context.get("digest")
    return digest if isinstance(digest, Mapping) else {}


def _digest_lines(digest: Mapping[str, Any]) -> str:
    """The default digest body: the listed items' titles, one a line, then what is left."""
    lines = [str(item.get("title") or "") for item in digest.get("items") or []]
    more = digest.get("more") or 0
    if more:
        lines.append(f"and {more} more")
    return "\n".join(lines)
