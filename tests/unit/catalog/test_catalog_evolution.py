"""``catalog check --against``: which catalog changes break producers, and why."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tidings import catalog
from tidings.catalog import evolution
from tidings.cli import app

ROOT = Path(__file__).resolve().parents[3]
TYPE = "mention.created"


@pytest.fixture
def old(tmp_path: Path) -> Path:
    folder = tmp_path / "old"
    shutil.copytree(ROOT / "catalog", folder)
    return folder


def changed(old: Path, tmp_path: Path, change: Any, key: str = TYPE) -> Path:
    """A copy of ``old`` with ``change(document)`` applied to type ``key``'s file."""
    folder = tmp_path / "new"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(old, folder)
    path = folder / f"{key}.yaml"
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def breaks(old: Path, new: Path) -> list[str]:
    found = evolution.compare(catalog.load(old), catalog.load(new))
    return [str(b) for b in found if not b.caution]


def cautions(old: Path, new: Path) -> list[str]:
    found = evolution.compare(catalog.load(old), catalog.load(new))
    return [str(b) for b in found if b.caution]


def comment_schema(document: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = document["schema"]["properties"]["comment"]
    return schema


def test_the_same_catalog_is_compatible(old: Path, tmp_path: Path) -> None:
    assert breaks(old, changed(old, tmp_path, lambda d: None)) == []


def test_an_optional_field_with_a_new_version_is_compatible(old: Path, tmp_path: Path) -> None:
    def add_optional(document: dict[str, Any]) -> None:
        comment_schema(document)["properties"]["edited"] = {"type": "boolean"}
        document["version"] = 2

    assert breaks(old, changed(old, tmp_path, add_optional)) == []


def test_a_field_declared_where_any_field_was_accepted_is_a_caution(
    old: Path, tmp_path: Path
) -> None:
    """A producer may already send ``edited`` on the open ``comment`` object, as any
    value: declaring it a boolean refuses the others. Said, but not a break; on an
    object that refused undeclared fields nobody could have sent it, so nothing is said."""

    def add_optional(document: dict[str, Any]) -> None:
        comment_schema(document)["properties"]["edited"] = {"type": "boolean"}
        document["version"] = 2

    new = changed(old, tmp_path, add_optional)
    assert cautions(old, new) == [
        f"{TYPE}: data.comment.edited: caution: newly declared where undeclared fields were "
        "accepted: accepted anything before; now it must match a schema (publish a new type "
        "and deprecate this one); fine unless a producer already sends this field with "
        "another shape"
    ]
    result = CliRunner().invoke(app, ["catalog", "check", str(new), "--against", str(old)])
    assert result.exit_code == 0, result.output
    assert "caution: newly declared" in result.output

    def closed(document: dict[str, Any]) -> None:
        comment_schema(document)["additionalProperties"] = False

    closed_old = changed(old, tmp_path, closed)
    shutil.copytree(closed_old, tmp_path / "closed")

    def closed_and_added(document: dict[str, Any]) -> None:
        closed(document)
        add_optional(document)

    new = changed(tmp_path / "closed", tmp_path, closed_and_added)
    assert evolution.compare(catalog.load(tmp_path / "closed"), catalog.load(new)) == []


def test_an_enum_of_true_is_not_an_enum_of_one(old: Path, tmp_path: Path) -> None:
    def flag(value: Any, version: int) -> Any:
        def change(document: dict[str, Any]) -> None:
            comment_schema(document)["properties"]["pinned"] = {"enum": [value]}
            comment_schema(document)["additionalProperties"] = False
            document["version"] = version

        return change

    before = changed(old, tmp_path, flag(True, 2))
    shutil.copytree(before, tmp_path / "before")
    after = changed(tmp_path / "before", tmp_path, flag(1, 3))
    assert breaks(tmp_path / "before", after) == [
        f"{TYPE}: data.comment.pinned: no longer accepts True"
    ]
    same = changed(tmp_path / "before", tmp_path, flag(True, 2))
    assert breaks(tmp_path / "before", same) == []


def test_a_schema_change_needs_a_higher_version(old: Path, tmp_path: Path) -> None:
    def add_optional(document: dict[str, Any]) -> None:
        comment_schema(document)["properties"]["edited"] = {"type": "boolean"}

    assert breaks(old, changed(old, tmp_path, add_optional)) == [
        f"{TYPE}: version: the payload schema changed but the version stayed 1; raise it to 2"
    ]


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        (
            lambda d: (
                comment_schema(d)["required"].append("author"),
                d["example"]["comment"].update(author="Ann"),
            ),
            "data.comment.author",
            "new required field",
        ),
        (
            lambda d: comment_schema(d)["properties"].pop("text"),
            "data.comment.text",
            "removed",
        ),
        (
            lambda d: (
                comment_schema(d)["properties"]["id"].update(type="integer"),
                d["example"]["comment"].update(id=2),
            ),
            "data.comment.id",
            "no longer accepts string",
        ),
        (
            lambda d: comment_schema(d)["properties"]["text"].update(maxLength=500),
            "data.comment.text",
            "maxLength lowered to 500 (was 10000)",
        ),
        (
            lambda d: comment_schema(d)["properties"]["id"].update(enum=["c-2"]),
            "data.comment.id",
            "accepted any value before; now only 'c-2'",
        ),
        (
            lambda d: comment_schema(d)["properties"]["id"].update(pattern="^c-[0-9]+$"),
            "data.comment.id",
            "pattern is now",
        ),
        (
            lambda d: comment_schema(d).update(additionalProperties=False),
            "data.comment.*",
            "is no longer accepted at all",
        ),
    ],
    ids=["required", "removed", "type", "max-length", "enum", "pattern", "closed"],
)
def test_changes_that_refuse_what_producers_send_are_breaks(
    old: Path, tmp_path: Path, change: Any, path: str, says: str
) -> None:
    def breaking(document: dict[str, Any]) -> None:
        change(document)
        document["version"] = 2

    found = breaks(old, changed(old, tmp_path, breaking))
    assert len(found) == 1, found
    assert found[0].startswith(f"{TYPE}: {path}: {says}")


def test_widening_is_compatible(old: Path, tmp_path: Path) -> None:
    def widen(document: dict[str, Any]) -> None:
        text = comment_schema(document)["properties"]["text"]
        text["maxLength"] = 20000
        text["type"] = ["string", "null"]
        comment_schema(document)["required"].remove("text")
        document["version"] = 2

    assert breaks(old, changed(old, tmp_path, widen)) == []


def test_a_type_leaves_only_after_being_deprecated(old: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    shutil.copytree(old, gone)
    (gone / f"{TYPE}.yaml").unlink()
    assert breaks(old, gone) == [
        f"{TYPE}: type: removed without being deprecated first; "
        "mark it `deprecated` in one release and remove it in a later one"
    ]

    deprecated = changed(
        old, tmp_path, lambda d: d.update(deprecated={"since": "2026-12-01", "note": "use x"})
    )
    assert breaks(old, deprecated) == []
    assert catalog.load(deprecated).types[TYPE].deprecated is not None
    assert breaks(deprecated, gone) == []


def test_the_cli_explains_each_break_and_fails(old: Path, tmp_path: Path) -> None:
    def two_breaks(document: dict[str, Any]) -> None:
        comment_schema(document)["required"].append("author")
        comment_schema(document)["properties"]["id"]["type"] = "integer"
        document["example"]["comment"].update(author="Ann", id=2)
        document["version"] = 2

    new = changed(old, tmp_path, two_breaks)
    runner = CliRunner()
    result = runner.invoke(app, ["catalog", "check", str(new), "--against", str(old)])
    assert result.exit_code == 1
    assert f"{TYPE}: data.comment.author: new required field" in result.output
    assert f"{TYPE}: data.comment.id: no longer accepts string" in result.output
    assert "2 breaking change(s)" in result.output

    fine = runner.invoke(app, ["catalog", "check", str(old), "--against", str(old)])
    assert fine.exit_code == 0, fine.output
    assert "compatible with" in fine.output


def test_the_same_number_written_another_way_is_no_change(old: Path, tmp_path: Path) -> None:
    def as_float(document: dict[str, Any]) -> None:
        comment_schema(document)["properties"]["text"]["maxLength"] = 10000.0

    assert breaks(old, changed(old, tmp_path, as_float)) == []
