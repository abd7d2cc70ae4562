"""validate_payload: every error, with a dotted path from the event root, sorted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings import catalog

SHIPPED = Path(__file__).resolve().parents[3] / "catalog"

ITEMS_TYPE = """\
key: order.shipped
category: orders
description: An order shipped.
schema:
  type: object
  required: [items, shipped_at]
  additionalProperties: false
  properties:
    shipped_at: {type: string, format: date-time}
    tracking_url: {type: string, format: uri}
    items:
      type: array
      items: {$ref: "#/$defs/item"}
  $defs:
    item: {type: object, required: [id], properties: {id: {type: string}}}
channels:
  in_app:
    title: "Shipped"
    body: "{{ data.items | length }} items"
"""


@pytest.fixture(scope="module")
def comment() -> catalog.NotificationType:
    notification_type = catalog.load(SHIPPED).get("comment.created")
    assert notification_type is not None
    return notification_type


@pytest.fixture
def order(tmp_path: Path) -> catalog.NotificationType:
    (tmp_path / "order.yaml").write_text(ITEMS_TYPE, encoding="utf-8")
    notification_type = catalog.load(tmp_path).get("order.shipped")
    assert notification_type is not None
    return notification_type


def paths(errors: list[catalog.PayloadError]) -> list[str]:
    return [error.path for error in errors]


BOARD = {"id": "b-1", "name": "Roadmap"}

COMMENT_CASES: dict[str, tuple[Any, list[str]]] = {
    "valid": ({"board": BOARD, "comment": {"id": "c-1", "text": "Hi"}}, []),
    "number as text": (
        {"board": BOARD, "comment": {"id": "c-1", "text": 5}},
        ["data.comment.text"],
    ),
    "missing comment": ({"board": BOARD}, ["data.comment"]),
    "missing nested fields": (
        {"board": {}, "comment": {"id": "c-1", "text": "Hi"}},
        ["data.board.id", "data.board.name"],
    ),
    "text too long": (
        {"board": BOARD, "comment": {"id": "c-1", "text": "x" * 10_001}},
        ["data.comment.text"],
    ),
    "not an object": (["board"], ["data"]),
    "null": (None, ["data"]),
}


@pytest.mark.parametrize(("data", "expected"), COMMENT_CASES.values(), ids=COMMENT_CASES.keys())
def test_comment_payload_paths(
    comment: catalog.NotificationType, data: Any, expected: list[str]
) -> None:
    assert paths(comment.validate_payload(data)) == expected


def test_message_says_what_is_wrong(comment: catalog.NotificationType) -> None:
    [error] = comment.validate_payload({"board": BOARD, "comment": {"id": "c-1", "text": 5}})

    assert error == catalog.PayloadError("data.comment.text", "5 is not of type 'string'")


def test_all_errors_sorted_with_array_indexes(order: catalog.NotificationType) -> None:
    items: list[dict[str, Any]] = [{"id": str(n)} for n in range(12)]
    items[2] = {"id": 2}
    items[10] = {}

    errors = order.validate_payload({"items": items, "extra": True, "tracking_url": "a b"})

    assert paths(errors) == [
        "data",  # additionalProperties
        "data.items.2.id",
        "data.items.10.id",  # numeric order, not text order
        "data.shipped_at",
        "data.tracking_url",
    ]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2024-05-01T10:00:00Z", True),
        ("2024-05-01T10:00:00.123+02:00", True),
        ("2024-05-01", False),
        ("2024-13-01T10:00:00Z", False),
        ("yesterday", False),
    ],
)
def test_date_time_format_is_checked(
    order: catalog.NotificationType, value: str, valid: bool
) -> None:
    errors = order.validate_payload({"items": [], "shipped_at": value})

    assert (errors == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("https://example.com/t/1?x=y", True),
        ("mailto:ann@example.com", True),
        ("/relative/path", False),
        ("https://example.com/a b", False),
        ("https://example.com/\n", False),
    ],
)
def test_uri_format_is_checked(order: catalog.NotificationType, value: str, valid: bool) -> None:
    data = {"items": [], "shipped_at": "2024-05-01T10:00:00Z", "tracking_url": value}

    assert (order.validate_payload(data) == []) is valid


TREE_TYPE = """\
key: tree.grown
category: trees
description: A tree grew.
schema:
  type: object
  properties:
    tree: {$ref: "#/$defs/tree"}
  $defs:
    tree: {type: array, items: {$ref: "#/$defs/tree"}}
channels:
  in_app: {title: Grown, body: Grown}
"""


def test_deeply_nested_payload_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "tree.yaml").write_text(TREE_TYPE, encoding="utf-8")
    tree = catalog.load(tmp_path).get("tree.grown")
    assert tree is not None
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]

    assert tree.validate_payload({"tree": [[[]]]}) == []
    assert tree.validate_payload({"tree": nested}) == [
        catalog.PayloadError("data", "the payload is nested too deeply")
    ]


def test_validator_is_compiled_once_at_load(
    order: catalog.NotificationType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.catalog import payload

    def refuse(schema: dict[str, Any]) -> None:
        raise AssertionError("validator compiled again")

    monkeypatch.setattr(payload, "compile_validator", refuse)

    assert order.validate_payload({"items": [], "shipped_at": "2024-05-01T10:00:00Z"}) == []
