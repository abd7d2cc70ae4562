"""Template injection: a catalog template reaching for Python internals never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings import catalog

TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema: {{type: object}}
channels:
  in_app:
    title: "ok"
    body: {body}
"""

ATTACKS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ data.__class__.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_sandbox_refuses_the_template_or_its_render(tmp_path: Path, attack: str) -> None:
    body = "'" + attack.replace("'", "''") + "'"
    (tmp_path / "thing.yaml").write_text(TYPE.format(body=body), encoding="utf-8")
    problems = [str(problem) for problem in catalog.check(tmp_path)]
    if problems:
        assert any("unsafe" in p or "not allowed" in p for p in problems), problems
        return
    types = catalog.load(tmp_path)
    notification_type = types.get("thing.happened")
    assert notification_type is not None
    context = {
        "data": {"text": "hi"},
        "actor": None,
        "recipient": {"id": "u-bob", "locale": "en"},
        "event": {"id": "ev-1", "type": "thing.happened", "tenant": "acme"},
    }
    with pytest.raises(catalog.RenderError):
        notification_type.render_in_app(context)


def test_payload_values_are_not_templates(tmp_path: Path) -> None:
    body = "'{{ data.text }}'"
    (tmp_path / "thing.yaml").write_text(TYPE.format(body=body), encoding="utf-8")
    notification_type = catalog.load(tmp_path).get("thing.happened")
    assert notification_type is not None
    context = {
        "data": {"text": "{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"},
        "actor": None,
        "recipient": {"id": "u-bob", "locale": "en"},
        "event": {"id": "ev-1", "type": "thing.happened", "tenant": "acme"},
    }
    rendered = notification_type.render_in_app(context)
    assert rendered.body == "{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"
