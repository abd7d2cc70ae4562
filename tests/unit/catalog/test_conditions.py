"""Conditions in the catalog: compiled at load, checked on the example at their line,
evaluated per recipient (a failure is false), and refused from broadcasts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.catalog.test_rules import BASE, context, write

from tidings import catalog
from tidings.delivery.broadcast_eligibility import refusal


def with_rules(text: str) -> str:
    return BASE + "rules:\n" + text  # the rules mapping starts on line 21


def test_the_type_and_its_channels_have_conditions(tmp_path: Path) -> None:
    text = with_rules(
        "  condition: \"data.comment.id != 'c-muted'\"\n"
        "  channel_conditions:\n"
        "    email: \"recipient.locale == 'fr' and data.board.id in ['b-1', 'b-2']\"\n"
    )
    ntype = catalog.load(write(tmp_path, text)).get("comment.created")
    assert ntype is not None
    french = {**context(board={"id": "b-1"}, comment={"id": "c-1"}), "recipient": {"locale": "fr"}}
    english = {**french, "recipient": {"locale": "en"}}
    assert ntype.unmet_conditions(french) == frozenset()
    assert ntype.unmet_conditions(english) == {"email"}
    muted = {**french, "data": {"board": {"id": "b-1"}, "comment": {"id": "c-muted"}}}
    assert ntype.unmet_conditions(muted) == {"in_app", "email"}
    # A field this event does not have makes a condition false, never an error.
    assert ntype.unmet_conditions({**french, "data": {}}) == {"email"}
    assert refusal(ntype) == "a condition (decided per recipient)"


@pytest.mark.parametrize(
    ("rules", "field", "line", "message"),
    [
        ('  condition: "data.comment.id =="\n', "rules.condition", 22, "unexpected"),
        (
            '  condition: "data.comment.idd == 1"\n',
            "rules.condition",
            22,
            "fails on the example",
        ),
        ('  condition: "data.comment.id"\n', "rules.condition", 22, "not true or false"),
        (
            "  channel_conditions:\n    sms: \"recipient.locale == 'fr'\"\n",
            "rules.channel_conditions.sms",
            23,
            "does not declare",
        ),
        (
            '  channel_conditions:\n    email: "data.__class__ == 1"\n',
            "rules.channel_conditions.email",
            23,
            "unsafe",
        ),
    ],
)
def test_a_bad_condition_is_reported_at_its_line(
    tmp_path: Path, rules: str, field: str, line: int, message: str
) -> None:
    problems = catalog.check(write(tmp_path, with_rules(rules)))
    assert [(p.field, p.line) for p in problems] == [(field, line)], [str(p) for p in problems]
    assert message in problems[0].message, str(problems[0])
    assert str(problems[0]).startswith(f"{tmp_path / 'type.yaml'}:{line}: {field}: ")
