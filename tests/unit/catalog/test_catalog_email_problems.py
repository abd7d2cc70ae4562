"""Bad email channels: check() names the file, the field and the line of the template."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tidings import catalog

# Line numbers below refer to this text.
VALID = """\
key: comment.created
category: comments
description: Someone commented.
schema:
  type: object
  properties:
    comment: {type: object, properties: {text: {type: string}}}
example:
  comment: {text: Looks good}
channels:
  email:
    subject: "{{ actor.name }} commented"
    mjml: |
      <mjml>
        <mj-body>
          <mj-section>
            <mj-column>
              <mj-text>{{ actor.name }} said:</mj-text>
              <mj-text>{{ data.comment.text }}</mj-text>
              <mj-button href="https://example.com/c">Open</mj-button>
            </mj-column>
          </mj-section>
        </mj-body>
      </mjml>
    text: |
      {{ actor.name }} said:
      {{ data.comment.text }}
    locales:
      fr:
        subject: "{{ actor.name }} a commenté"
"""


TEXT = "    text: |\n      {{ actor.name }} said:\n      {{ data.comment.text }}\n"


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


class Expected(NamedTuple):
    file: str
    field: str
    message: str  # a fragment of the message
    line: int | None


CASES: dict[str, tuple[dict[str, str], list[Expected]]] = {
    "syntax error in the subject": (
        {"a.yaml": edit('subject: "{{ actor.name }} commented"', 'subject: "{{ actor.name }"')},
        [Expected("a.yaml", "channels.email.subject", "unexpected '}'", 12)],
    ),
    "syntax error inside the MJML": (
        {"a.yaml": edit("<mj-text>{{ data.comment.text }}", "<mj-text>{{ data.comment.text")},
        [Expected("a.yaml", "channels.email.mjml", "unexpected '/'", 19)],
    ),
    "unclosed block inside the MJML": (
        {"a.yaml": edit("<mj-text>{{ data.comment.text }}", "<mj-text>{% if x %}")},
        [Expected("a.yaml", "channels.email.mjml", "Unexpected end of template", 19)],
    ),
    "syntax error in the text": (
        {"a.yaml": edit("      {{ data.comment.text }}\n", "      {{ data.comment.text }\n")},
        [Expected("a.yaml", "channels.email.text", "unexpected '}'", 27)],
    ),
    "syntax error in a locale's subject": (
        {"a.yaml": edit('"{{ actor.name }} a commenté"', '"{{ actor.name a commenté"')},
        [Expected("a.yaml", "channels.email.locales.fr.subject", "expected token", 30)],
    ),
    "unknown filter in the MJML": (
        {"a.yaml": edit("{{ actor.name }} said:</mj-text>", "{{ actor.name | shout }}</mj-text>")},
        [Expected("a.yaml", "channels.email.mjml", "No filter named 'shout'", 18)],
    ),
    "invalid MJML": (
        {"a.yaml": edit("<mj-text>{{ actor.name }} said:</mj-text>", "<mj-text>unclosed")},
        [Expected("a.yaml", "channels.email.mjml", "invalid MJML", 13)],
    ),
    "not MJML at all": (
        {"a.yaml": edit("      <mjml>\n", "      <html>\n")},
        [Expected("a.yaml", "channels.email.mjml", "invalid MJML", 14)],
    ),
    "block tag where MJML takes text only": (
        {
            "a.yaml": edit(
                "        <mj-body>\n",
                "        <mj-head><mj-title>{% if x %}a{% endif %}</mj-title></mj-head>\n"
                "        <mj-body>\n",
            )
        },
        [Expected("a.yaml", "channels.email.mjml", "{% if x %} cannot stand here", 15)],
    ),
    "example fails to render, placed in the MJML": (
        {"a.yaml": edit("<mj-text>{{ data.comment.text }}", "<mj-text>{{ data.__class__ }}")},
        [Expected("a.yaml", "channels.email.mjml", "unsafe", 19)],
    ),
    "example fails to render in the text": (
        {"a.yaml": edit("      {{ data.comment.text }}\n", "      {{ 1 // 0 }}\n")},
        [Expected("a.yaml", "channels.email.text", "ZeroDivisionError", 27)],
    ),
    "example fails to render in a locale": (
        {"a.yaml": edit('"{{ actor.name }} a commenté"', '"{{ data.comment.text.__class__ }}"')},
        [Expected("a.yaml", "channels.email.locales.fr.subject", "unsafe", 30)],
    ),
    "subject renders empty": (
        {"a.yaml": edit('"{{ actor.name }} commented"', '"{{ data.nothing }}\\n"')},
        [Expected("a.yaml", "channels.email.subject", "renders empty for the example", 12)],
    ),
    "both mjml and html": (
        {"a.yaml": edit("    text: |\n", "    html: <p>x</p>\n    text: |\n")},
        [Expected("a.yaml", "channels.email.html", "give only one of mjml, mjml_file, html", 25)],
    ),
    "no body": (
        {"a.yaml": edit("    mjml: |\n", "    mjmx: |\n")},
        [Expected("a.yaml", "channels.email.mjmx", "unknown field", 13)],
    ),
    "unknown locale": (
        {"a.yaml": edit("      fr:\n", "      xx-YY:\n")},
        [Expected("a.yaml", "channels.email.locales.xx-YY", "not a known locale", 29)],
    ),
    "the same locale twice": (
        {"a.yaml": VALID + "      FR: {subject: Salut}\n"},
        [Expected("a.yaml", "channels.email.locales.FR", "the same locale as 'fr'", 31)],
    ),
    "a locale that overrides nothing": (
        {"a.yaml": VALID + "      de: {}\n"},
        [Expected("a.yaml", "channels.email.locales.de", "overrides nothing", 31)],
    ),
    "unknown default locale": (
        {"a.yaml": edit("    locales:\n", "    default_locale: klingon\n    locales:\n")},
        [Expected("a.yaml", "channels.email.default_locale", "not a known locale", 28)],
    ),
    "missing template file": (
        {"a.yaml": edit(TEXT, "    text_file: nowhere.txt\n")},
        [Expected("a.yaml", "channels.email.text_file", "no such file", 25)],
    ),
    "template file outside the catalog": (
        {"sub/a.yaml": edit(TEXT, "    text_file: ../../etc/hostname\n")},
        [Expected("a.yaml", "channels.email.text_file", "inside the catalog folder", 25)],
    ),
    "absolute template file": (
        {"a.yaml": edit(TEXT, "    text_file: /etc/hostname\n")},
        [Expected("a.yaml", "channels.email.text_file", "inside the catalog folder", 25)],
    ),
}


@pytest.mark.parametrize(("files", "expected"), CASES.values(), ids=CASES.keys())
def test_bad_email_channel_is_reported(
    tmp_path: Path, files: dict[str, str], expected: list[Expected]
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    problems = catalog.check(tmp_path)

    found = [
        Expected(Path(problem.file).name, problem.field, problem.message, problem.line)
        for problem in problems
    ]
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert (got.file, got.field, got.line) == (want.file, want.field, want.line), got
        assert want.message in got.message, got


def test_valid_text_has_no_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")

    assert catalog.check(tmp_path) == []


def write_with_template_file(tmp_path: Path, template: str) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "comment.mjml").write_text(template, encoding="utf-8")
    inline = VALID[VALID.index("    mjml: |\n") : VALID.index("    text: |\n")]
    text = edit(inline, "    mjml_file: mail/comment.mjml\n")
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("template", "message", "line"),
    [
        ("<mjml>\n<mj-body>\n{{ oops }\n</mj-body>\n</mjml>\n", "unexpected '}'", 3),
        ("<mjml>\n<mj-body>\n\n\n{{ data.__class__ }}</mj-body>\n</mjml>\n", "unsafe", 5),
        ("<mjml>\n<mj-bodyy>\n", "invalid MJML", 2),
        ("  \n", "the template file is empty", None),
    ],
)
def test_a_template_file_problem_names_that_file_and_its_line(
    tmp_path: Path, template: str, message: str, line: int | None
) -> None:
    write_with_template_file(tmp_path, template)

    [problem] = catalog.check(tmp_path)

    assert problem.file == str(tmp_path / "mail" / "comment.mjml")
    assert problem.field == "channels.email.mjml_file"
    assert problem.line == line
    assert message in problem.message
    assert str(problem).startswith(
        f"{tmp_path / 'mail' / 'comment.mjml'}{'' if line is None else f':{line}'}: "
    )


def test_a_template_file_that_works(tmp_path: Path) -> None:
    write_with_template_file(
        tmp_path,
        "<mjml><mj-body><mj-section><mj-column><mj-text>{{ data.comment.text }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>",
    )

    assert catalog.check(tmp_path) == []


def test_each_failure_is_reported_once_even_when_locales_share_the_template(
    tmp_path: Path,
) -> None:
    text = edit("{{ data.comment.text }}</mj-text>", "{{ data.comment.text.__class__ }}</mj-text>")
    text += "      de: {subject: x}\n      es: {subject: y}\n"
    (tmp_path / "a.yaml").write_text(text, encoding="utf-8")

    problems = catalog.check(tmp_path)

    assert [(problem.field, problem.line) for problem in problems] == [("channels.email.mjml", 19)]


@pytest.mark.parametrize("body", ["mjml", "html"])
def test_markup_nested_too_deeply_is_a_problem_not_a_crash(tmp_path: Path, body: str) -> None:
    nested = "<div>" * 10_000 + "x" + "</div>" * 10_000
    markup = (
        f"<mjml><mj-body><mj-section><mj-column><mj-text>{nested}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
        if body == "mjml"
        else nested
    )
    inline = VALID[VALID.index("    mjml: |\n") : VALID.index("    text: |\n")]
    (tmp_path / "a.yaml").write_text(edit(inline, f"    {body}: '{markup}'\n"), encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.field == f"channels.email.{body}"
    assert "nested more than 500 levels" in problem.message
