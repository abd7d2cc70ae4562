"""The built-in digest email: one message listing the notifications gathered for a recipient.

A digest rule gives only the title and subject; the layout is Tidings' own, so every
type's digest looks the same and needs no MJML from its author. It is compiled once, like
a catalog body (MJML, CSS inlined), and rendered in the same sandbox, autoescaped.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from tidings.catalog.email_body import compile_body
from tidings.catalog.email_templates import DEFAULT, EmailPart, EmailVariant, RenderedEmail
from tidings.catalog.rules import DigestRule
from tidings.catalog.templates import compile_template, render

WRITTEN_IN = "en"
_FIELD = "rules.digest"

_MJML = """\
<mjml lang="en">
  <mj-head>
    <mj-title>{{ subject }}</mj-title>
    <mj-preview>{{ entries[0].title if entries else title }}</mj-preview>
    <mj-attributes>
      <mj-all font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" />
      <mj-text font-size="15px" line-height="22px" color="#1f2328" padding="0" />
      <mj-section background-color="#ffffff" padding="14px 24px" />
    </mj-attributes>
    <mj-style inline="inline">
      .title { color: #1f2328; font-weight: 600; text-decoration: none; }
      a.title { color: #0969da; }
      .body { margin-top: 4px; color: #57606a; white-space: pre-wrap; }
      .when { margin-top: 4px; font-size: 12px; line-height: 18px; color: #6e7781; }
    </mj-style>
  </mj-head>
  <mj-body background-color="#f6f8fa" width="600px">
    <mj-wrapper padding="24px 0">
      <mj-section padding="28px 24px 14px" border-radius="6px 6px 0 0">
        <mj-column>
          <mj-text font-size="20px" line-height="28px" font-weight="600">{{ title }}</mj-text>
        </mj-column>
      </mj-section>
      {% for entry in entries %}
      <mj-section border-top="1px solid #d8dee4">
        <mj-column>
          <mj-text>
            {% if entry.link %}
            <a class="title" href="{{ entry.link }}">{{ entry.title }}</a>
            {% else %}
            <span class="title">{{ entry.title }}</span>
            {% endif %}
            {% if entry.body %}<div class="body">{{ entry.body | truncate(280) }}</div>{% endif %}
            {% if entry.created_at %}
            <div class="when">{{ entry.created_at | format_datetime('short') }}</div>
            {% endif %}
          </mj-text>
        </mj-column>
      </mj-section>
      {% endfor %}
      {% if digest.more %}
      <mj-section border-top="1px solid #d8dee4">
        <mj-column>
          <mj-text color="#57606a">and {{ digest.more }} more</mj-text>
        </mj-column>
      </mj-section>
      {% endif %}
      <mj-section background-color="#f6f8fa" padding="16px 24px">
        <mj-column>
          <mj-text font-size="12px" line-height="18px" color="#6e7781">
            These notifications were gathered into one email to keep your inbox quiet.
          </mj-text>
        </mj-column>
      </mj-section>
    </mj-wrapper>
  </mj-body>
</mjml>
"""

_TEXT = """\
{{ title }}
{% for entry in entries %}

- {{ entry.title }}
{%- if entry.body %}
{{ entry.body | truncate(280) | indent(2, first=true) }}
{%- endif %}
{%- if entry.created_at %}
  {{ entry.created_at | format_datetime('short') }}
{%- endif %}
{%- if entry.link %}
  {{ entry.link }}
{%- endif %}
{% endfor %}
{% if digest.more %}
and {{ digest.more }} more
{% endif %}
"""


@functools.cache
def _layout() -> tuple[EmailPart, EmailPart]:
    """The HTML and text parts, compiled on first use (MJML takes a few milliseconds)."""
    body = compile_body(_MJML, mjml=True)
    return (
        EmailPart(compile_template(body.html, html=True), _FIELD),
        EmailPart(compile_template(_TEXT), _FIELD),
    )


def render_digest_email(
    context: Mapping[str, Any], rule: DigestRule, locale: str | None
) -> RenderedEmail:
    """Render the digest email for one recipient; raises ``RenderError``.

    ``context`` holds ``recipient`` and ``digest`` (see ``NotificationType.render_digest``).
    The layout is English; dates are formatted in ``locale`` when it is an English one.
    """
    html, text = _layout()
    subject = EmailPart(rule.title, f"{_FIELD}.title")
    if rule.subject is not None:
        subject = EmailPart(rule.subject, f"{_FIELD}.subject")
    variant = EmailVariant(
        tag=DEFAULT,
        written_in=WRITTEN_IN,
        subject=subject,
        html=html,
        text=text,
        # Tidied like a text derived from HTML: the loop leaves uneven blank lines.
        text_is_derived=True,
    )
    title = render(rule.title, variant.context_for(context, locale), f"{_FIELD}.title")
    digest = context.get("digest")
    items = digest.get("items", []) if isinstance(digest, Mapping) else []
    values = {**context, "title": title, "entries": [_entry(item) for item in items]}
    return variant.render(values, locale)


def _entry(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the layout shows of one digest item; only an absolute URL can be a link."""
    action_url = item.get("action_url")
    link = action_url if isinstance(action_url, str) and _is_absolute(action_url) else None
    return {
        "title": item.get("title"),
        "body": item.get("body"),
        "created_at": item.get("created_at"),
        "link": link,
    }


def _is_absolute(url: str) -> bool:
    # In-app action URLs are often relative to the app ("/boards/b-1"), which an email
    # client cannot resolve; the inbox item keeps them, the email shows no link.
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
