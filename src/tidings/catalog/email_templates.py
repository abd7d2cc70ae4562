"""A type's compiled ``channels.email`` templates: one variant per locale, rendered per message.

Everything expensive (MJML, CSS inlining, deriving the text part) happened at load; a
render is three sandboxed Jinja renders: subject, HTML, text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template

from tidings.catalog import locales
from tidings.catalog.html_text import tidy
from tidings.catalog.templates import RenderError, render


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered template: what a person reads."""

    subject: str
    html: str
    text: str
    locale: str


SUBJECT_MAX = 998
DEFAULT = "default"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls, CR and LF among them
# JSON can carry unpaired surrogates ("\ud800"), which no email can: they become U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class EmailPart:
    """One compiled template and the catalog field it came from."""

    template: Template
    field: str
    # False for bodies compiled through MJML or CSS inlining: a failing line would be a
    # line of the generated HTML, which means nothing to the author.
    lines_are_source: bool = True

    def render(self, context: Mapping[str, Any]) -> str:
        """Render this part; raises ``RenderError`` naming its field."""
        try:
            return render(self.template, context, self.field)
        except RenderError as exc:
            if self.lines_are_source:
                raise
            raise RenderError(exc.field, exc.message) from exc.__cause__


@dataclass(frozen=True)
class EmailVariant:
    """The subject, HTML and text templates of one locale (or of the default)."""

    tag: str  # the locale tag of the override, or "default"
    written_in: str  # the locale the templates are written in, for formatting
    subject: EmailPart
    html: EmailPart
    text: EmailPart
    text_is_derived: bool

    @property
    def parts(self) -> tuple[EmailPart, EmailPart, EmailPart]:
        """Subject, HTML and text, in the order they render."""
        return (self.subject, self.html, self.text)

    def context_for(self, context: Mapping[str, Any], requested: str | None) -> dict[str, Any]:
        """The template context: the caller's, plus ``locale`` to format dates and numbers in."""
        return {**context, "locale": locales.formatting_tag(requested, self.written_in)}

    def render(self, context: Mapping[str, Any], requested: str | None) -> RenderedEmail:
        """Render the three parts; raises ``RenderError`` naming the failing template."""
        values = self.context_for(context, requested)
        subject = clean_subject(self.subject.render(values))
        values["subject"] = subject
        html = _encodable(self.html.render(values))
        text = _encodable(self.text.render(values))
        # Conditional blocks in a derived text leave gaps; an author's own text is kept.
        text = tidy(text) if self.text_is_derived else text.replace("\r\n", "\n")
        return RenderedEmail(subject=subject, html=html, text=text, locale=self.tag)


@dataclass(frozen=True)
class EmailTemplates:
    """All the variants of one type's email: the default and the locale overrides."""

    default: EmailVariant
    overrides: Mapping[str, EmailVariant]

    def variant_for(self, locale: str | None) -> EmailVariant:
        """The most specific variant for ``locale``: ``fr-CA`` → ``fr`` → default."""
        for tag in locales.fallbacks(locale):
            variant = self.overrides.get(tag)
            if variant is not None:
                return variant
        return self.default

    def variants(self) -> Iterator[EmailVariant]:
        """The default variant, then every override."""
        yield self.default
        yield from self.overrides.values()

    def render(self, context: Mapping[str, Any], locale: str | None) -> RenderedEmail:
        """Render the email for ``locale``; raises ``RenderError``."""
        return self.variant_for(locale).render(context, locale)


def clean_subject(text: str) -> str:
    """One line, whitespace collapsed, no control characters, at most 998 characters.

    A payload value can never add a header line: CR, LF and every other line or
    paragraph separator become a single space.
    """
    subject = " ".join(_CONTROL.sub(" ", _encodable(text)).split())
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    return subject


def _encodable(text: str) -> str:
    # Encoding is much faster than searching, and almost always succeeds.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
