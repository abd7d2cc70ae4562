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


@HERE
@given(text=st.text(max_size=500), name=st.text(max_size=1_200))
def test_no_payload_breaks_out_of_the_email(text: str, name: str) -> None:
    assert COMMENT is not None
    data = {"board": {"id": "b-1", "name": name}, "comment": {"id": "c-1", "text": text}}
    actor = {"id": "u-1", "name": f"<x-evil>{name}"}

    email = COMMENT.render_email({"data": data, "actor": actor}, "fr-CA")

    assert email.locale == "fr"
    assert "<x-evil" not in email.html
    assert len(email.subject) <= 998
    assert email.subject.startswith("<x-evil>")
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in email.subject)
    assert "\u2028" not in email.subject
    assert "\u2029" not in email.subject
    assert " ".join(text.split()) in " ".join(email.text.split())


@HERE
@given(template=st.text(max_size=80), where=st.sampled_from(["subject", "mjml", "html", "text"]))
def test_check_never_raises_on_any_email_template(template: str, where: str) -> None:
    quoted = template.replace("\\", "\\\\").replace('"', '\\"')
    quoted = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in quoted)
    fields = {
        "subject": "s",
        "mjml": "<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>",
    }
    if where == "html":
        del fields["mjml"]
    fields[where] = quoted
    channel = "".join(f'    {name}: "{value}"\n' for name, value in fields.items())
    text = (
        "key: a.b\ncategory: c\ndescription: d\nschema: {type: object}\n"
        f"example: {{}}\nchannels:\n  email:\n{channel}"
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "type.yaml").write_text(text, encoding="utf-8")

        problems = catalog.check(folder)

    assert all(problem.field.startswith("channels.email") for problem in problems)
