"""Templates that read only the event render once for all of its recipients, and only those."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.catalog import templates
from tidings.catalog.templates import RenderError, compile_template, render


def context(data: Any, recipient: str = "u-bob", **extra: Any) -> dict[str, Any]:
    return {
        "data": data,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipient": {"id": recipient, "name": recipient, "locale": "fr", "timezone": "Asia/Tokyo"},
        "event": {"id": "ev-1", "type": "thing.happened", "tenant": "acme"},
        **extra,
    }


@pytest.mark.parametrize(
    ("source", "event_only"),
    [
        ("{{ data.a }} {{ actor.name }} {{ event.id }}", True),
        ("{{ data.a|upper }}{% for i in range(2) %}{{ i }}{% endfor %}", True),
        ("{{ data.a is defined }}", True),
        ("{{ data.a|truncate(5) }}{{ data.list|join(', ') }}", True),
        ("{{ recipient.name }}", False),
        # The date and number filters read the recipient's locale and timezone.
        ("{{ data.when|format_datetime }}", False),
        ("{{ data.n|format_number }}", False),
        ("{{ data.list|map('format_date')|join }}", False),
        ("{{ data.list|random }}", False),
        ("{{ lipsum(1) }}", False),
        ("{{ locale }}{{ data.a }}", False),
        ("{{ group.count }}", False),
    ],
)
def test_which_templates_read_only_the_event(source: str, event_only: bool) -> None:
    assert (compile_template(source) in templates._EVENT_ONLY) is event_only


def test_an_event_only_template_renders_each_events_own_values() -> None:
    template = compile_template("{{ data.a }}/{{ event.id }}")
    first, second = {"a": "one"}, {"a": "two"}
    assert render(template, context(first), "f") == "one/ev-1"
    assert render(template, context(first, "u-cy"), "f") == "one/ev-1"
    assert render(template, context(second), "f") == "two/ev-1"
    other_event = {**context(second), "event": {"id": "ev-2", "type": "t", "tenant": "acme"}}
    assert render(template, other_event, "f") == "two/ev-2"
    # Equal payloads of other types render as they are: 1 is not True.
    assert render(template, context({"a": 1}), "f") == "1/ev-1"
    assert render(template, context({"a": True}), "f") == "True/ev-1"


def test_a_personal_template_renders_for_each_recipient() -> None:
    template = compile_template("{{ recipient.name }} {{ data.when|format_datetime('short') }}")
    data = {"when": "2026-01-02T03:04:00Z"}
    tokyo = render(template, context(data, "u-bob"), "f")
    paris = context(data, "u-cy")
    paris["recipient"] = {**paris["recipient"], "locale": "en", "timezone": "Europe/Paris"}
    assert tokyo.startswith("u-bob ")
    assert render(template, paris, "f") == "u-cy 1/2/26, 4:04\u202fAM"


def test_a_failing_event_only_template_fails_for_every_recipient() -> None:
    template = compile_template("{{ data.n // 0 }}")
    data = {"n": 1}
    for recipient in ("u-bob", "u-cy"):
        with pytest.raises(RenderError):
            render(template, context(data, recipient), "f")
