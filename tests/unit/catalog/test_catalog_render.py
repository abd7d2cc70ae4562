"""render_in_app: plain text from sandboxed templates compiled once at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings import catalog

TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema: {{type: object}}
channels:
  in_app:
    title: {title}
    body: {body}
    action_url: {action_url}
"""


def load_type(
    tmp_path: Path, title: str, body: str = "'{{ data.text }}'", action_url: str = "null"
) -> catalog.NotificationType:
    text = TYPE.format(title=title, body=body, action_url=action_url)
    (tmp_path / "thing.yaml").write_text(text, encoding="utf-8")
    notification_type = catalog.load(tmp_path).get("thing.happened")
    assert notification_type is not None
    return notification_type


def context(data: Any, actor: Any = None) -> dict[str, Any]:
    return {
        "data": data,
        "actor": actor,
        "recipient": {"id": "u-bob", "name": "Bob", "email": "bob@example.com", "locale": "en"},
        "event": {"id": "ev-1", "type": "thing.happened", "tenant": "acme"},
    }


RENDER_CASES: dict[str, tuple[str, Any, Any, str]] = {
    # id: (title template, data, actor, expected title)
    "actor and data": (
        "'{{ actor.name }} did {{ data.what }}'",
        {"what": "it"},
        {"name": "Ann"},
        "Ann did it",
    ),
    "missing actor renders empty": ("'{{ actor.name }} did it'", {}, None, "did it"),
    "missing optional field renders empty": ("'x{{ data.a.b.c }}y'", {}, None, "xy"),
    "null renders empty": ("'x{{ data.a }}y'", {"a": None}, None, "xy"),
    "recipient and event": (
        "'{{ recipient.name }} in {{ event.tenant }}'",
        {},
        None,
        "Bob in acme",
    ),
    "whitespace is stripped": ("'  {{ data.a }}  '", {"a": " hi "}, None, "hi"),
    "no HTML escaping": ("'{{ data.a }}'", {"a": "<b>&</b>"}, None, "<b>&</b>"),
    "payload keys win over dict methods": (
        "'{{ data.items.0.id }} {{ data.keys }}'",
        {"items": [{"id": "i-1"}], "keys": "k"},
        None,
        "i-1 k",
    ),
    "payload text is never evaluated": (
        "'{{ data.a }}'",
        {"a": "{{ 7 * 7 }}"},
        None,
        "{{ 7 * 7 }}",
    ),
}


@pytest.mark.parametrize(
    ("title", "data", "actor", "expected"), RENDER_CASES.values(), ids=RENDER_CASES.keys()
)
def test_render_title(tmp_path: Path, title: str, data: Any, actor: Any, expected: str) -> None:
    notification_type = load_type(tmp_path, title)

    content = notification_type.render_in_app(context(data, actor))

    assert content.title == expected


def test_long_title_is_truncated(tmp_path: Path) -> None:
    notification_type = load_type(tmp_path, "'{{ data.text }}'")

    title = notification_type.render_in_app(context({"text": "x" * 600})).title

    assert len(title) == 500
    assert title == "x" * 499 + "…"
    exact = notification_type.render_in_app(context({"text": "y" * 500})).title
    assert exact == "y" * 500


def test_body_is_not_truncated(tmp_path: Path) -> None:
    notification_type = load_type(tmp_path, "Title")

    assert notification_type.render_in_app(context({"text": "z" * 5000})).body == "z" * 5000


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/boards/b-1", "/boards/b-1"),
        ("https://example.com/x", "https://example.com/x"),
        ("HTTP://example.com/x", "HTTP://example.com/x"),
        ("", None),
    ],
)
def test_action_url(tmp_path: Path, url: str, expected: str | None) -> None:
    notification_type = load_type(tmp_path, "Title", action_url="'{{ data.url }}'")

    assert (
        notification_type.render_in_app(context({"url": url, "text": "t"})).action_url == expected
    )


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:alert(1)", "data:text/html,x"],
)
def test_action_url_from_payload_cannot_be_a_script(tmp_path: Path, url: str) -> None:
    notification_type = load_type(tmp_path, "Title", action_url="'{{ data.url }}'")

    with pytest.raises(catalog.RenderError) as raised:
        notification_type.render_in_app(context({"url": url}))

    assert raised.value.field == "channels.in_app.action_url"


def test_no_action_url(tmp_path: Path) -> None:
    notification_type = load_type(tmp_path, "Title")

    assert notification_type.render_in_app(context({})).action_url is None


SANDBOX_ESCAPES = [
    "'{{ data.__class__ }}'",
    "\"{{ ''.__class__.__mro__ }}\"",
    "'{{ data.text.__class__.__mro__[1].__subclasses__() }}'",
    "\"{{ data['__class__'] }}\"",
    "'{{ cycler.__init__.__globals__ }}'",
    '"{{ data.text.format.__globals__ }}"',
]


@pytest.mark.parametrize("title", SANDBOX_ESCAPES)
def test_reaching_python_internals_is_a_render_error(tmp_path: Path, title: str) -> None:
    notification_type = load_type(tmp_path, title)

    with pytest.raises(catalog.RenderError, match="unsafe") as raised:
        notification_type.render_in_app(context({"text": "hi"}))

    assert raised.value.field == "channels.in_app.title"


@pytest.mark.parametrize("title", SANDBOX_ESCAPES)
def test_check_reports_sandbox_escapes_with_the_example(tmp_path: Path, title: str) -> None:
    text = TYPE.format(title=title, body="b", action_url="null") + "example: {text: hi}\n"
    (tmp_path / "thing.yaml").write_text(text, encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.field == "channels.in_app.title"
    assert "unsafe" in problem.message


@pytest.mark.parametrize(
    "title",
    [
        "'{{ data.list.append(1) }}'",
        "'{{ data.update({\"x\": 1}) }}'",
        "'{{ data.pop(\"list\") }}'",
    ],
)
def test_templates_cannot_mutate_the_payload(tmp_path: Path, title: str) -> None:
    notification_type = load_type(tmp_path, title)
    data: dict[str, Any] = {"list": [], "text": "t"}

    with pytest.raises(catalog.RenderError):
        notification_type.render_in_app(context(data))

    assert data == {"list": [], "text": "t"}


def test_template_runtime_error_is_a_render_error(tmp_path: Path) -> None:
    notification_type = load_type(tmp_path, "'{{ 1 // data.zero }}'")

    with pytest.raises(catalog.RenderError, match="ZeroDivisionError"):
        notification_type.render_in_app(context({"zero": 0}))


def test_templates_are_compiled_once_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.catalog import templates

    notification_type = load_type(tmp_path, "'{{ data.text }}'")

    def refuse(source: str) -> None:
        raise AssertionError("template compiled again")

    monkeypatch.setattr(templates, "compile_template", refuse)

    assert notification_type.render_in_app(context({"text": "a"})).title == "a"
    assert notification_type.render_in_app(context({"text": "b"})).title == "b"
