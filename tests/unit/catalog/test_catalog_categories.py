"""categories.yaml: declared categories, mandatory ones, and problems when malformed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings import catalog

TYPE = """\
key: comment.created
category: comments
description: Someone commented.
schema: {type: object}
channels:
  in_app: {title: t, body: b}
"""

CATEGORIES = """\
categories:
  comments:
    description: Comments on boards you follow.
  security:
    description: Password resets and sign-ins.
    mandatory: true
"""


def write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")


def test_categories_are_declared(tmp_path: Path) -> None:
    write(tmp_path, {"comment.yaml": TYPE, "categories.yaml": CATEGORIES})

    loaded = catalog.load(tmp_path)

    assert dict(loaded.categories) == {
        "comments": catalog.Category("comments", "Comments on boards you follow.", False),
        "security": catalog.Category("security", "Password resets and sign-ins.", True),
    }
    assert loaded.category("security").mandatory
    assert not loaded.category("comments").mandatory
    assert [t.key for t in loaded] == ["comment.created"]  # the file is not a type


def test_an_undeclared_category_is_optional(tmp_path: Path) -> None:
    write(tmp_path, {"comment.yaml": TYPE, "categories.yaml": CATEGORIES})

    assert catalog.load(tmp_path).category("billing") == catalog.Category("billing", "", False)


def test_the_file_is_optional(tmp_path: Path) -> None:
    write(tmp_path, {"comment.yaml": TYPE})

    loaded = catalog.load(tmp_path)

    assert dict(loaded.categories) == {}
    assert loaded.category("comments") == catalog.Category("comments", "", False)


def test_only_the_top_level_file_declares_categories(tmp_path: Path) -> None:
    write(tmp_path, {"comment.yaml": TYPE, "sub/categories.yaml": CATEGORIES})

    problems = catalog.check(tmp_path)

    assert problems
    assert all(problem.file == str(tmp_path / "sub" / "categories.yaml") for problem in problems)


CASES: dict[str, tuple[str, list[tuple[str, str, int | None]]]] = {
    # id: (categories.yaml, [(field, message fragment, line)])
    "mandatory is not a boolean": (
        CATEGORIES.replace("mandatory: true", "mandatory: 'yes'"),
        [("categories.security.mandatory", "valid boolean", 6)],
    ),
    "missing description": (
        CATEGORIES.replace("    description: Comments on boards you follow.\n", "    {}\n"),
        [("categories.comments.description", "required field is missing", 2)],
    ),
    "blank description": (
        CATEGORIES.replace("Comments on boards you follow.", "''"),
        [("categories.comments.description", "must not be blank", 3)],
    ),
    "unknown field": (
        CATEGORIES + "    colour: red\n",
        [("categories.security.colour", "unknown field", 7)],
    ),
    "bad name": (
        CATEGORIES + "  Not Valid:\n    description: x\n",
        [("categories.Not Valid", "should match pattern", 7)],
    ),
    "not a mapping": (
        "- comments\n",
        [("", "expected a mapping with one field, categories", None)],
    ),
    "no categories field": (
        "comments: {description: x}\n",
        [("categories", "required field is missing", None), ("comments", "unknown field", 1)],
    ),
    "repeated category": (
        CATEGORIES + "  comments:\n    description: again\n",
        [("categories.comments", "appears more than once", 7)],
    ),
    "invalid YAML": (
        "categories: [\n",
        [("", "invalid YAML", 2)],
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_malformed_categories_are_problems(
    tmp_path: Path, text: str, expected: list[tuple[str, str, int | None]]
) -> None:
    write(tmp_path, {"comment.yaml": TYPE, "categories.yaml": text})

    problems = catalog.check(tmp_path)

    assert [(p.field, p.line) for p in problems] == [(f, line) for f, _, line in expected]
    for problem, (_, message, _) in zip(problems, expected, strict=True):
        assert problem.file == str(tmp_path / "categories.yaml")
        assert message in problem.message, problem
    with pytest.raises(catalog.CatalogInvalid):
        catalog.load(tmp_path)


def test_two_categories_files_are_a_problem(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"comment.yaml": TYPE, "categories.yaml": CATEGORIES, "categories.yml": CATEGORIES},
    )

    [problem] = catalog.check(tmp_path)

    assert problem.file == str(tmp_path / "categories.yml")
    assert "two categories files" in problem.message


def test_a_folder_with_only_categories_has_no_types(tmp_path: Path) -> None:
    write(tmp_path, {"categories.yaml": CATEGORIES})

    [problem] = catalog.check(tmp_path)

    assert "no notification types" in problem.message


def test_a_type_in_an_undeclared_category_is_a_problem_once_categories_are_declared(
    tmp_path: Path,
) -> None:
    import shutil

    from tidings import catalog

    root = Path(__file__).resolve().parents[3] / "catalog"
    copy = tmp_path / "catalog"
    shutil.copytree(root, copy)
    target = copy / "comment.created.yaml"
    target.write_text(target.read_text().replace("category: comments", "category: coments"))
    problems = catalog.check(copy)
    assert [(p.field, p.message) for p in problems] == [
        ("category", "category 'coments' is not declared in categories.yaml")
    ]
    assert problems[0].file.endswith("comment.created.yaml")
