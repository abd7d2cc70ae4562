"""Which notification types a large topic's event can be broadcast for (fan-out on read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings import catalog
from tidings.delivery import broadcast_eligibility

_SCHEMA = """schema:
  type: object
  required: [board]
  properties:
    board:
      type: object
      required: [id, name]
      properties: {id: {type: string}, name: {type: string}}
    when: {type: string}
"""


def _load(tmp_path: Path, in_app: str, rules: str = "", email: bool = False) -> catalog.Catalog:
    text = f"key: board.news\ncategory: news\npriority: normal\ndescription: News.\n{_SCHEMA}"
    text += f"channels:\n  in_app:\n{in_app}"
    if email:
        text += "  email:\n    subject: News on {{ data.board.name }}\n    html: <p>Read it.</p>\n"
    if rules:
        text += f"rules:\n{rules}"
    (tmp_path / "board.news.yaml").write_text(text, encoding="utf-8")
    return catalog.load(tmp_path)


_SHARED = '    title: "{{ actor.name }} posted on {{ data.board.name }}"\n    body: News.\n'


def test_a_type_whose_item_reads_only_the_event_can_be_broadcast(tmp_path: Path) -> None:
    types = _load(tmp_path, _SHARED + '    action_url: "/boards/{{ data.board.id }}"\n', email=True)
    assert broadcast_eligibility.refusal(types.types["board.news"]) is None


@pytest.mark.parametrize(
    ("in_app", "why"),
    [
        ('    title: "Hello {{ recipient.name }}"\n    body: News.\n', "recipient"),
        ("    title: News\n    body: \"{{ 'you' if recipient.id else '' }}\"\n", "recipient"),
        (
            '    title: News\n    body: News.\n    action_url: "/u/{{ recipient.id }}"\n',
            "recipient",
        ),
        # The date filters format in the recipient's locale and time zone.
        ('    title: News\n    body: "{{ data.when | format_date }}"\n', "recipient"),
    ],
)
def test_an_item_that_reads_the_recipient_is_fanned_out_on_write(
    tmp_path: Path, in_app: str, why: str
) -> None:
    types = _load(tmp_path, in_app)
    refusal = broadcast_eligibility.refusal(types.types["board.news"])
    assert refusal is not None
    assert why in refusal


@pytest.mark.parametrize(
    ("rules", "why"),
    [
        ('  dedup: {key: "{{ data.board.id }}", window: 1h}\n', "dedup"),
        ('  collapse: {key: "{{ data.board.id }}", title: "{{ group.count }} news"}\n', "collapse"),
        ("  throttle: {limit: 3, window: 1h}\n", "throttle"),
        ("  digest: {window: 1h, title: Your news}\n", "digest"),
        ("  delay: 5m\n", "delay"),
        ("  email_if_unseen: 10m\n", "email_if_unseen"),
    ],
)
def test_a_rule_that_decides_per_recipient_keeps_fan_out_on_write(
    tmp_path: Path, rules: str, why: str
) -> None:
    types = _load(tmp_path, _SHARED, rules=rules, email=True)
    assert broadcast_eligibility.refusal(types.types["board.news"]) == f"a {why} rule"


def test_staleness_alone_does_not_keep_fan_out_on_write(tmp_path: Path) -> None:
    types = _load(tmp_path, _SHARED, rules="  max_age: 1h\n")
    assert broadcast_eligibility.refusal(types.types["board.news"]) is None


def test_a_type_without_the_in_app_channel_is_not_broadcast(tmp_path: Path) -> None:
    text = f"key: board.mail\ncategory: news\npriority: normal\ndescription: Mail.\n{_SCHEMA}"
    text += "channels:\n  email:\n    subject: News\n    html: <p>Read it.</p>\n"
    (tmp_path / "board.mail.yaml").write_text(text, encoding="utf-8")
    assert (
        broadcast_eligibility.refusal(catalog.load(tmp_path).types["board.mail"])
        == "no in-app channel"
    )
