"""Properties: whatever producers send and whatever authors write, nothing crashes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import catalog

SHIPPED = Path(__file__).resolve().parents[3] / "catalog"
COMMENT = catalog.load(SHIPPED).get("comment.created")
assert COMMENT is not None

HERE = settings(database=None, deadline=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@HERE
@given(board=json_values, comment=json_values)
def test_validate_payload_never_raises_and_sorts_paths(board: Any, comment: Any) -> None:
    assert COMMENT is not None
    errors = COMMENT.validate_payload({"board": board, "comment": comment})

    assert all(error.path.startswith("data.") for error in errors)
    assert [error.path for error in errors] == sorted(error.path for error in errors)


@HERE
@given(text=st.text(max_size=2_000), name=st.text(max_size=600))
def test_any_text_renders_as_itself(text: str, name: str) -> None:
    assert COMMENT is not None
    data = {"board": {"id": "b-1", "name": name}, "comment": {"id": "c-1", "text": text}}

    assert COMMENT.validate_payload(data) == []
    content = COMMENT.render_in_app({"data": data, "actor": {"id": "u-1", "name": "Ann"}})

    assert content.body == text.strip()
    assert len(content.title) <= 500
    assert content.title.startswith("Ann commented on")


@HERE
@given(text=st.text(max_size=300))
def test_check_never_raises_on_any_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "type.yaml").write_text(text, encoding="utf-8")

        problems = catalog.check(folder)

    assert problems
    assert all(problem.file.startswith(folder) for problem in problems)


@HERE
@given(template=st.text(max_size=80))
def test_check_never_raises_on_any_template(template: str) -> None:
    quoted = template.replace("\\", "\\\\").replace('"', '\\"')
    quoted = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in quoted)
    text = (
        "key: a.b\ncategory: c\ndescription: d\nschema: {type: object}\n"
        "example: {}\n"
        f'channels:\n  in_app:\n    title: "{quoted}"\n    body: b\n'
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "type.yaml").write_text(text, encoding="utf-8")

        problems = catalog.check(folder)

    assert all(problem.field.startswith("channels.in_app.title") for problem in problems)
