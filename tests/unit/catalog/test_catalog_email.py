"""render_email: sandboxed, escaped, localised emails, compiled once at load."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tidings import catalog

MJML_TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema: {type: object}
channels:
  email:
    subject: "{{ actor.name }} did {{ data.what }}"
    mjml: |
      <mjml>
        <mj-head>
          <mj-title>{{ subject }}</mj-title>
          <mj-style inline="inline">.note { color: #57606a; }</mj-style>
        </mj-head>
        <mj-body>
          <mj-section>
            <mj-column>
              <mj-text>{{ actor.name }} did <b>{{ data.what }}</b>.</mj-text>
              <mj-text><p class="note">{{ data.note }}</p></mj-text>
              <mj-button href="https://app.example.com/things/{{ data.id }}">Open</mj-button>
            </mj-column>
          </mj-section>
        </mj-body>
      </mjml>
"""

HTML_TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema: {{type: object}}
channels:
  email:
    subject: {subject}
    html: {html}
{more}"""


def write(tmp_path: Path, text: str, name: str = "thing.yaml") -> None:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text, encoding="utf-8")


def load_type(tmp_path: Path, text: str) -> catalog.NotificationType:
    write(tmp_path, text)
    notification_type = catalog.load(tmp_path).get("thing.happened")
    assert notification_type is not None
    return notification_type


def html_type(
    tmp_path: Path, html: str, subject: str = "'{{ data.what }}'", more: str = ""
) -> catalog.NotificationType:
    return load_type(tmp_path, HTML_TYPE.format(subject=subject, html=html, more=more))


def context(data: Any, actor: Any = None, **recipient: Any) -> dict[str, Any]:
    return {
        "data": data,
        "actor": actor or {"id": "u-ann", "name": "Ann"},
        "recipient": {"id": "u-bob", "name": "Bob", "email": "bob@example.com", **recipient},
        "event": {"id": "ev-1", "type": "thing.happened", "tenant": "acme"},
    }


@pytest.fixture
def mjml_type(tmp_path: Path) -> catalog.NotificationType:
    return load_type(tmp_path, MJML_TYPE)


def test_renders_subject_html_and_text(mjml_type: catalog.NotificationType) -> None:
    email = mjml_type.render_email(context({"what": "it", "note": "n", "id": "t-1"}), None)

    assert email.subject == "Ann did it"
    assert email.locale == "default"
    assert "<title>Ann did it</title>" in email.html
    assert "Ann did <b>it</b>." in email.html
    assert 'href="https://app.example.com/things/t-1"' in email.html
    assert email.text == "Ann did it.\n\nn\n\nOpen (https://app.example.com/things/t-1)"
    assert mjml_type.channels == frozenset({"email"})
    assert mjml_type.email_locales == frozenset()


def test_mjml_styles_are_inlined(mjml_type: catalog.NotificationType) -> None:
    html = mjml_type.render_email(context({"note": "n"}), None).html

    [style] = re.findall(r'<p class="note" style="([^"]*)">n</p>', html)
    assert "color: #57606a" in style
    assert "@media" in html  # MJML's responsive rules stay in a <style> element


PAYLOAD = "<script>alert('x')</script> & \"quotes\""


def test_html_escapes_payload_values(mjml_type: catalog.NotificationType) -> None:
    data = {"what": PAYLOAD, "note": PAYLOAD, "id": '"><script>x</script>'}

    email = mjml_type.render_email(context(data, {"name": PAYLOAD}), None)

    assert "<script" not in email.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in email.html
    assert 'href="https://app.example.com/things/&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in (
        email.html
    )


def test_subject_and_text_keep_payload_values_as_they_are(
    mjml_type: catalog.NotificationType,
) -> None:
    email = mjml_type.render_email(context({"what": PAYLOAD, "note": PAYLOAD}), None)

    assert email.subject == f"Ann did {PAYLOAD}"
    assert f"Ann did {PAYLOAD}." in email.text
    assert "&lt;" not in email.text + email.subject


def test_a_payload_value_never_becomes_a_template(mjml_type: catalog.NotificationType) -> None:
    email = mjml_type.render_email(context({"what": "{{ 7 * 7 }}", "note": "{% if %}"}), None)

    assert email.subject == "Ann did {{ 7 * 7 }}"
    assert "{% if %}" in email.text


@pytest.mark.parametrize(
    "value",
    [
        "line\r\nBcc: eve@example.com",
        "line\nBcc: eve@example.com",
        "line\rBcc: eve@example.com",
        "line\u2028Bcc: eve@example.com",
        "line\x85Bcc: eve@example.com",
        "line\x0bBcc: eve@example.com",
        "line\x00\x1b\tBcc: eve@example.com",
    ],
)
def test_subject_is_one_line_whatever_the_payload(tmp_path: Path, value: str) -> None:
    notification_type = html_type(tmp_path, "'<p>{{ data.what }}</p>'")

    subject = notification_type.render_email(context({"what": value}), None).subject

    assert subject == "line Bcc: eve@example.com"


def test_subject_whitespace_collapses_and_length_is_capped(tmp_path: Path) -> None:
    notification_type = html_type(tmp_path, "'<p>x</p>'", subject="'  a  {{ data.what }}  '")

    assert notification_type.render_email(context({"what": " b\n\n c "}), None).subject == "a b c"
    long = notification_type.render_email(context({"what": "x" * 2000}), None).subject
    assert len(long) == 998
    assert long.endswith("…")


LOCALISED = MJML_TYPE + textwrap.indent(
    textwrap.dedent("""\
        locales:
          fr:
            subject: "{{ actor.name }} a fait {{ data.what }}"
          pt-BR:
            subject: "{{ actor.name }} fez {{ data.what }}"
            html: "<p>{{ actor.name }} fez {{ data.what }} —
              <a href='https://x.example/{{ data.id }}'>abrir</a></p>"
          de_AT:
            text: "Österreich: {{ data.what }}"
        """),
    "    ",
)

FALLBACKS: dict[str, tuple[str | None, str, str]] = {
    # requested: (locale used, subject)
    "fr": ("fr", "fr", "Ann a fait it"),
    "fr-CA": ("fr-CA", "fr", "Ann a fait it"),
    "fr_CA": ("fr_CA", "fr", "Ann a fait it"),
    "FR-ca": ("FR-ca", "fr", "Ann a fait it"),
    "fr-FR.UTF-8": ("fr-FR.UTF-8", "fr", "Ann a fait it"),
    "pt-BR": ("pt-BR", "pt-BR", "Ann fez it"),
    "pt": ("pt", "default", "Ann did it"),  # pt-BR is more specific than what was asked
    "de": ("de", "default", "Ann did it"),
    "de-AT": ("de-AT", "de-AT", "Ann did it"),
    "en": ("en", "default", "Ann did it"),
    "none": (None, "default", "Ann did it"),
    "empty": ("", "default", "Ann did it"),
    "garbage": ("!!", "default", "Ann did it"),
}


@pytest.mark.parametrize(("requested", "used", "subject"), FALLBACKS.values(), ids=FALLBACKS)
def test_locale_fallback(tmp_path: Path, requested: str | None, used: str, subject: str) -> None:
    notification_type = load_type(tmp_path, LOCALISED)

    email = notification_type.render_email(context({"what": "it", "id": "t-1"}), requested)

    assert (email.locale, email.subject) == (used, subject)
    assert notification_type.email_locales == frozenset({"fr", "pt-BR", "de-AT"})


def test_a_locale_overrides_only_what_it_gives(tmp_path: Path) -> None:
    notification_type = load_type(tmp_path, LOCALISED)
    data = context({"what": "it", "note": "n", "id": "t-1"})
    default = notification_type.render_email(data, None)

    french = notification_type.render_email(data, "fr")
    brazilian = notification_type.render_email(data, "pt-BR")
    austrian = notification_type.render_email(data, "de-AT")

    # Subject only: the default body and text, with the French subject as <title>.
    assert french.html == default.html.replace("Ann did it", "Ann a fait it")  # <title>
    assert french.text == default.text
    # A new body and no text: the text is derived from that body, not the default's text.
    assert brazilian.text == "Ann fez it — abrir (https://x.example/t-1)"
    # Text only: the default subject and body.
    assert (austrian.subject, austrian.html) == (default.subject, default.html)
    assert austrian.text == "Österreich: it"


def test_explicit_text_template(tmp_path: Path) -> None:
    more = "    text: |\n      Hi {{ recipient.name }},\n\n      {{ data.what }} <b>raw</b>\n"
    notification_type = html_type(tmp_path, "'<p>{{ data.what }}</p>'", more=more)

    email = notification_type.render_email(context({"what": "<it>"}), None)

    assert email.text == "Hi Bob,\n\n<it> <b>raw</b>"
    assert "<p>&lt;it&gt;</p>" in email.html


def test_derived_text_reads_like_the_html(tmp_path: Path) -> None:
    html = (
        "|\n      <p>Hello <b>{{ recipient.name }}</b>,</p>"
        "\n      <p>{{ data.what }}&nbsp;&amp; more<br>next line</p>"
        "\n      {% if data.things %}<ul>{% for item in data.things %}<li>{{ item }}</li>"
        "{% endfor %}</ul>{% endif %}"
        '\n      <p><a href="{{ data.url }}">Open it</a> or'
        ' <a href="{{ data.url }}">{{ data.url }}</a></p>'
        '\n      <div style="display: none">hidden preview</div>'
    )
    notification_type = html_type(tmp_path, html)

    with_items = notification_type.render_email(
        context({"what": "a<b", "things": ["one", "two"], "url": "https://x.example/1"}), None
    ).text
    without_items = notification_type.render_email(
        context({"what": "a<b", "url": "https://x.example/1"}), None
    ).text

    assert with_items == (
        "Hello Bob,\n\na<b & more\nnext line\n\n- one\n- two\n\n"
        "Open it (https://x.example/1) or https://x.example/1"
    )
    assert without_items == (
        "Hello Bob,\n\na<b & more\nnext line\n\nOpen it (https://x.example/1) or https://x.example/1"
    )


@pytest.mark.parametrize(
    ("template", "en", "fr"),
    [
        ("{{ data.n | format_number }}", "1,234,567.5", "1\u202f234\u202f567,5"),
        ("{{ data.n | format_decimal('#,##0.00') }}", "1,234,567.50", "1\u202f234\u202f567,50"),
        ("{{ data.price | format_currency('EUR') }}", "€12.50", "12,50\xa0€"),
        ("{{ data.ratio | format_percent }}", "25%", "25\xa0%"),
        ("{{ data.day | format_date('long') }}", "May 1, 2024", "1 mai 2024"),
        ("{{ data.at | format_date('long') }}", "May 2, 2024", "2 mai 2024"),  # Paris time
        ("{{ data.at | format_time }}", "12:30\u202fAM", "00:30"),
        ("{{ data.at | format_datetime('short') }}", "5/2/24, 12:30\u202fAM", "02/05/2024 00:30"),
        ("{{ data.missing | format_date }}", "", ""),
    ],
)
def test_babel_filters_format_in_the_render_locale(
    tmp_path: Path, template: str, en: str, fr: str
) -> None:
    more = f'    locales:\n      fr: {{subject: "{template}"}}\n'
    notification_type = html_type(tmp_path, "'<p>x</p>'", subject=f'"{template}"', more=more)
    data = {
        "n": 1234567.5,
        "price": "12.5",
        "ratio": 0.25,
        "day": "2024-05-01",
        "at": "2024-05-01T22:30:00Z",
    }
    values = context(data, timezone="Europe/Paris")

    assert notification_type.render_email(values, "en").subject == " ".join(en.split())
    assert notification_type.render_email(values, "fr").subject == " ".join(fr.split())


def test_formatting_follows_the_requested_locale_when_it_speaks_the_templates_language(
    tmp_path: Path,
) -> None:
    more = "    locales:\n      fr: {subject: \"{{ data.price | format_currency('USD') }}\"}\n"
    subject = "\"{{ data.price | format_currency('USD') }}\""
    notification_type = html_type(tmp_path, "'<p>x</p>'", subject=subject, more=more)
    values = context({"price": 12.5})

    assert notification_type.render_email(values, "fr-CA").subject == "12,50 $ US"
    assert notification_type.render_email(values, "fr").subject == "12,50 $US"
    assert notification_type.render_email(values, "en-GB").subject == "US$12.50"
    # German readers of the English default never get German month names in English text.
    assert notification_type.render_email(values, "de").subject == "$12.50"


def test_an_unknown_time_zone_falls_back_to_utc(tmp_path: Path) -> None:
    subject = "\"{{ data.at | format_datetime('HH:mm') }}\""
    notification_type = html_type(tmp_path, "'<p>x</p>'", subject=subject)
    data = {"at": "2024-05-01T22:30:00+00:00"}

    assert notification_type.render_email(context(data, timezone="Mars/Base"), None).subject == (
        "22:30"
    )
    assert notification_type.render_email(context(data, timezone="Asia/Tokyo"), None).subject == (
        "07:30"
    )


@pytest.mark.parametrize(
    ("template", "data", "error"),
    [
        ("{{ data.x | format_date }}", {"x": "yesterday"}, "not an ISO 8601"),
        ("{{ data.x | format_date }}", {"x": 5}, "expected a date"),
        ("{{ data.x | format_number }}", {"x": "many"}, "is not a number"),
        ("{{ data.x | format_number }}", {"x": True}, "not a boolean"),
    ],
)
def test_a_filter_given_a_wrong_value_is_a_render_error(
    tmp_path: Path, template: str, data: dict[str, Any], error: str
) -> None:
    notification_type = html_type(tmp_path, "'<p>x</p>'", subject=f'"{template}"')

    with pytest.raises(catalog.RenderError, match=error) as raised:
        notification_type.render_email(context(data), None)

    assert raised.value.field == "channels.email.subject"


def test_filters_work_in_in_app_templates_too(tmp_path: Path) -> None:
    text = HTML_TYPE.format(subject="s", html="'<p>x</p>'", more="") + (
        '  in_app:\n    title: "{{ data.n | format_number }}"\n    body: b\n'
    )
    notification_type = load_type(tmp_path, text)

    values = context({"n": 1234.5}, locale="de")

    assert notification_type.render_in_app(values).title == "1.234,5"


@pytest.mark.parametrize(
    "expression",
    [
        "data.__class__",
        "''.__class__.__mro__",
        "data.what.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
    ],
)
@pytest.mark.parametrize("where", ["subject", "html"])
def test_sandbox_keeps_templates_from_python_internals(
    tmp_path: Path, expression: str, where: str
) -> None:
    template = '"{{ ' + expression.replace('"', "'") + ' }}"'
    notification_type = (
        html_type(tmp_path, "'<p>x</p>'", subject=template)
        if where == "subject"
        else html_type(tmp_path, template)
    )

    with pytest.raises(catalog.RenderError, match="unsafe") as raised:
        notification_type.render_email(context({"what": "w"}), None)

    assert raised.value.field == f"channels.email.{where}"


def test_a_type_without_email_cannot_render_one(tmp_path: Path) -> None:
    text = "key: a.b\ncategory: c\ndescription: d\nschema: {}\n"
    text += "channels:\n  in_app: {title: t, body: b}\n"
    write(tmp_path, text)
    notification_type = catalog.load(tmp_path).get("a.b")
    assert notification_type is not None

    with pytest.raises(catalog.RenderError, match="no email channel"):
        notification_type.render_email(context({}), "en")
    assert notification_type.email_locales == frozenset()


def test_templates_from_files_next_to_the_catalog_file(tmp_path: Path) -> None:
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>{{ data.what }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    write(tmp_path, mjml, "templates/thing.mjml")
    write(tmp_path, "<p>Bonjour {{ data.what }}</p>", "templates/thing.fr.html")
    write(tmp_path, "Text: {{ data.what }}\n", "templates/thing.txt")
    text = HTML_TYPE.format(subject="s", html="x", more="").replace(
        "    html: x\n",
        "    mjml_file: ../templates/thing.mjml\n"
        "    text_file: ../templates/thing.txt\n"
        "    locales:\n      fr: {html_file: ../templates/thing.fr.html}\n",
    )
    write(tmp_path, text, "types/thing.yaml")
    notification_type = catalog.load(tmp_path).get("thing.happened")
    assert notification_type is not None

    email = notification_type.render_email(context({"what": "<w>"}), None)
    french = notification_type.render_email(context({"what": "<w>"}), "fr")

    assert "&lt;w&gt;</div>" in email.html
    assert email.text == "Text: <w>"
    assert "<p>Bonjour &lt;w&gt;</p>" in french.html
    assert french.text == "Bonjour <w>"


def test_templates_are_compiled_once_at_load(
    mjml_type: catalog.NotificationType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.catalog import email_body, templates

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(templates, "compile_template", refuse)
    monkeypatch.setattr(email_body, "compile_body", refuse)
    monkeypatch.setattr(email_body.mrml, "to_html", refuse)
    monkeypatch.setattr(email_body, "_INLINER", None)

    first = mjml_type.render_email(context({"what": "a"}), None)
    second = mjml_type.render_email(context({"what": "b"}), "fr")

    assert (first.subject, second.subject) == ("Ann did a", "Ann did b")


def test_unpaired_surrogates_from_json_become_replacement_characters(
    mjml_type: catalog.NotificationType,
) -> None:
    email = mjml_type.render_email(context({"what": "a\ud800b", "note": "\udfff"}), None)

    for part in (email.subject, email.html, email.text):
        part.encode("utf-8")
    assert email.subject == "Ann did a\ufffdb"
