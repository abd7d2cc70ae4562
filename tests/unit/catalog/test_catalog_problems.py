"""Bad catalog files: every problem is reported, named by file, field and line."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tidings import catalog

# Line numbers below refer to this text.
VALID = """\
key: comment.created
category: comments
priority: normal
description: Someone commented.
schema:
  type: object
  required: [comment]
  properties:
    comment:
      type: object
      required: [id, text]
      properties:
        id: {type: string}
        text: {type: string}
example:
  comment: {id: c-1, text: Looks good}
channels:
  in_app:
    title: "{{ actor.name }} commented"
    body: "{{ data.comment.text }}"
    action_url: "/comments/{{ data.comment.id }}"
"""


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


class Expected(NamedTuple):
    file: str
    field: str
    message: str  # a fragment of the message
    line: int | None


class Case(NamedTuple):
    files: dict[str, str]
    expected: list[Expected]


CASES: dict[str, Case] = {
    "unknown field in a channel": Case(
        {"a.yaml": edit("    title:", "    titel:")},
        [
            Expected("a.yaml", "channels.in_app.title", "required field is missing", 18),
            Expected("a.yaml", "channels.in_app.titel", "unknown field", 19),
        ],
    ),
    "unknown top-level field": Case(
        {"a.yaml": VALID + "colour: red\n"},
        [Expected("a.yaml", "colour", "unknown field", 22)],
    ),
    "email channel without a body": Case(
        {"a.yaml": VALID + "  email: {subject: Hi}\n"},
        [Expected("a.yaml", "channels.email", "needs a body: one of mjml", 22)],
    ),
    "unknown channel": Case(
        {"a.yaml": VALID + "  sms: {text: Hi}\n"},
        [Expected("a.yaml", "channels.sms", "unknown channel 'sms'", 22)],
    ),
    "no channel at all": Case(
        {"a.yaml": VALID.split("channels:")[0] + "channels: {}\n"},
        [Expected("a.yaml", "channels", "declares no channel", 17)],
    ),
    "bad priority": Case(
        {"a.yaml": edit("priority: normal", "priority: urgent")},
        [Expected("a.yaml", "priority", "'critical', 'high', 'normal' or 'low'", 3)],
    ),
    "bad key": Case(
        {"a.yaml": edit("key: comment.created", "key: Comment")},
        [Expected("a.yaml", "key", "should match pattern", 1)],
    ),
    "key without a dot": Case(
        {"a.yaml": edit("key: comment.created", "key: comment")},
        [Expected("a.yaml", "key", "should match pattern", 1)],
    ),
    "bad category": Case(
        {"a.yaml": edit("category: comments", "category: Comments!")},
        [Expected("a.yaml", "category", "should match pattern", 2)],
    ),
    "missing key": Case(
        {"a.yaml": edit("key: comment.created\n", "")},
        [Expected("a.yaml", "key", "required field is missing", None)],
    ),
    "blank description": Case(
        {"a.yaml": edit("description: Someone commented.", 'description: "  "')},
        [Expected("a.yaml", "description", "must not be blank", 4)],
    ),
    "key is not a string": Case(
        {"a.yaml": edit("key: comment.created", "key: 12")},
        [Expected("a.yaml", "key", "valid string", 1)],
    ),
    "invalid JSON Schema": Case(
        {"a.yaml": edit("  type: object", "  type: objekt")},
        [Expected("a.yaml", "schema.type", "invalid JSON Schema", 6)],
    ),
    "schema for another draft": Case(
        {"a.yaml": edit("  type: object", "  $schema: http://json-schema.org/draft-07/schema#")},
        [Expected("a.yaml", "schema.$schema", "draft 2020-12", 6)],
    ),
    "remote $ref": Case(
        {"a.yaml": edit("id: {type: string}", "id: {$ref: 'https://example.com/id.json'}")},
        [Expected("a.yaml", "schema.properties.comment.properties.id.$ref", "cannot resolve", 13)],
    ),
    "template syntax error": Case(
        {"a.yaml": edit('title: "{{ actor.name }} commented"', 'title: "{{ actor.name } x"')},
        [Expected("a.yaml", "channels.in_app.title", "unexpected '}'", 19)],
    ),
    "template syntax error inside a block scalar": Case(
        {
            "a.yaml": edit(
                '    body: "{{ data.comment.text }}"',
                "    body: |\n      Said:\n      {% if data %}\n      {{ data.comment.text }\n",
            )
        },
        [Expected("a.yaml", "channels.in_app.body", "unexpected '}'", 23)],
    ),
    "unknown filter": Case(
        {"a.yaml": edit("{{ actor.name }}", "{{ actor.name | shout }}")},
        [Expected("a.yaml", "channels.in_app.title", "No filter named 'shout'", 19)],
    ),
    "include is not supported": Case(
        {"a.yaml": edit('body: "{{ data.comment.text }}"', "body: \"{% include 'x' %}\"")},
        [Expected("a.yaml", "channels.in_app.body", "'include' is not supported", 20)],
    ),
    "example does not match the schema": Case(
        {"a.yaml": edit("text: Looks good}", "text: 5}")},
        [Expected("a.yaml", "example.comment.text", "5 is not of type 'string'", 16)],
    ),
    "example misses a required property": Case(
        {"a.yaml": edit("{id: c-1, text: Looks good}", "{id: c-1}")},
        [Expected("a.yaml", "example.comment.text", "'text' is a required property", 16)],
    ),
    "example holds a value JSON cannot carry": Case(
        {"a.yaml": edit("text: Looks good}", "text: .nan}")},
        [Expected("a.yaml", "example.comment.text", "not a JSON number", 16)],
    ),
    "example fails to render": Case(
        {"a.yaml": edit("{{ actor.name }}", "{{ data.comment.__class__ }}")},
        [Expected("a.yaml", "channels.in_app.title", "unsafe", 19)],
    ),
    "title renders empty for the example": Case(
        {"a.yaml": edit('"{{ actor.name }} commented"', '"{{ data.nothing }}"')},
        [Expected("a.yaml", "channels.in_app.title", "renders empty", 19)],
    ),
    "action url is not http(s)": Case(
        {"a.yaml": edit('"/comments/{{ data.comment.id }}"', '"javascript:alert(1)"')},
        [Expected("a.yaml", "channels.in_app.action_url", "not a relative or http(s) URL", 21)],
    ),
    "duplicate key across files": Case(
        {"a.yaml": VALID, "sub/b.yml": VALID},
        [Expected("b.yml", "key", "duplicate key 'comment.created': also declared in", 1)],
    ),
    "field repeated in a mapping": Case(
        {"a.yaml": edit("priority: normal\n", "priority: normal\npriority: high\n")},
        [Expected("a.yaml", "priority", "appears more than once", 4)],
    ),
    "YAML syntax error": Case(
        {"a.yaml": edit("category: comments", "category: [comments")},
        [Expected("a.yaml", "", "expected ',' or ']', but got ':'", 3)],
    ),
    "YAML tag that would build a Python object": Case(
        {"a.yaml": edit("category: comments", "category: !!python/object:os.system x")},
        [Expected("a.yaml", "", "could not determine a constructor", 2)],
    ),
    "two documents in one file": Case(
        {"a.yaml": VALID + "---\n" + VALID},
        [Expected("a.yaml", "", "expected a single document", 22)],
    ),
    "not a mapping": Case(
        {"a.yaml": "- key: comment.created\n"},
        [Expected("a.yaml", "", "expected a mapping of fields", None)],
    ),
    "empty file": Case(
        {"a.yaml": ""},
        [Expected("a.yaml", "", "expected a mapping of fields", None)],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_file_is_reported(tmp_path: Path, case: Case) -> None:
    for name, text in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    problems = catalog.check(tmp_path)

    found = [
        Expected(Path(problem.file).name, problem.field, problem.message, problem.line)
        for problem in problems
    ]
    assert len(found) == len(case.expected), found
    for got, want in zip(found, case.expected, strict=True):
        assert (got.file, got.field, got.line) == (want.file, want.field, want.line), got
        assert want.message in got.message, got
    with pytest.raises(catalog.CatalogInvalid) as raised:
        catalog.load(tmp_path)
    assert raised.value.problems == problems


def test_duplicate_key_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(VALID, encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.file == str(tmp_path / "b.yaml")
    assert str(tmp_path / "a.yaml") in problem.message


def test_empty_folder_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a catalog file", encoding="utf-8")
    (tmp_path / ".hidden.yaml").write_text(VALID, encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.file == str(tmp_path)
    assert "no notification types" in problem.message


def test_missing_folder_is_a_problem(tmp_path: Path) -> None:
    [problem] = catalog.check(tmp_path / "nowhere")

    assert "does not exist" in problem.message
    with pytest.raises(catalog.CatalogInvalid, match="does not exist"):
        catalog.load(tmp_path / "nowhere")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")

    [problem] = catalog.check(tmp_path / "a.yaml")

    assert "is not a folder" in problem.message


def test_problems_from_several_files_all_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(edit("priority: normal", "priority: x"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        edit("key: comment.created", "key: comment.deleted").replace(
            "  type: object", "  type: 1", 1
        ),
        encoding="utf-8",
    )

    problems = catalog.check(tmp_path)

    assert [(Path(problem.file).name, problem.field) for problem in problems] == [
        ("a.yaml", "priority"),
        ("b.yaml", "schema.type"),
    ]


def test_problem_str() -> None:
    with_line = catalog.CatalogProblem(
        "catalog/comment.yaml", "channels.in_app.title", "unexpected '}'", 12
    )
    without_line = catalog.CatalogProblem(
        "catalog/comment.yaml", "key", "required field is missing"
    )
    whole_file = catalog.CatalogProblem("catalog", "", "the catalog folder does not exist")

    assert str(with_line) == "catalog/comment.yaml:12: channels.in_app.title: unexpected '}'"
    assert str(without_line) == "catalog/comment.yaml: key: required field is missing"
    assert str(whole_file) == "catalog: the catalog folder does not exist"
    assert str(catalog.CatalogInvalid([with_line, without_line])) == (
        f"{with_line}\n{without_line}"
    )
