"""Category titles: what recipients read for a category, in their language."""

from __future__ import annotations

from pathlib import Path

from tidings import catalog

TYPE = """\
key: comment.created
category: comments
description: Someone commented.
schema: {type: object}
channels:
  in_app: {title: t, body: b}
"""


def load(tmp_path: Path, categories: str) -> catalog.Catalog:
    (tmp_path / "comment.yaml").write_text(TYPE, encoding="utf-8")
    (tmp_path / "categories.yaml").write_text(categories, encoding="utf-8")
    return catalog.load(tmp_path)


def test_a_title_is_chosen_by_locale_with_fallbacks(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "categories:\n"
        "  comments:\n"
        "    description: Comments on boards you follow.\n"
        "    title: Comments\n"
        "    locales: {fr: {title: Commentaires}, pt_br: {title: Comentários}}\n"
        "  mentions:\n"
        "    description: Someone mentioned you.\n",
    )
    comments = loaded.category("comments")
    assert comments.title_for("fr-CA") == "Commentaires"
    assert comments.title_for("pt-BR") == "Comentários"
    assert comments.title_for("pt") == "Comments"
    assert comments.title_for(None) == "Comments"
    assert comments.title_for("not a tag!") == "Comments"
    # Without a title, recipients read the name, as before titles existed.
    assert loaded.category("mentions").title_for("fr") == "mentions"
    assert loaded.category("undeclared").title_for("fr") == "undeclared"


def test_a_title_in_an_unknown_locale_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "comment.yaml").write_text(TYPE, encoding="utf-8")
    (tmp_path / "categories.yaml").write_text(
        "categories:\n"
        "  comments:\n"
        "    description: Comments.\n"
        "    locales: {xx-!!: {title: Nope}}\n",
        encoding="utf-8",
    )
    [problem] = catalog.check(tmp_path)
    assert "is not a known locale" in problem.message
    assert problem.field == "categories.comments.locales.xx-!!"
