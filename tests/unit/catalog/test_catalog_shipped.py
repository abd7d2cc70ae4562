"""The example catalog shipped at the repository root loads cleanly and behaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings import catalog

SHIPPED = Path(__file__).resolve().parents[3] / "catalog"

CANONICAL_EVENT: dict[str, Any] = {
    "type": "comment.created",
    "actor": {"id": "u-ann", "name": "Ann"},
    "data": {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": "c-1", "text": "Looks good"},
    },
}


@pytest.fixture(scope="module")
def shipped() -> catalog.Catalog:
    return catalog.load(SHIPPED)


def test_check_finds_no_problems() -> None:
    assert catalog.check(SHIPPED) == []


def test_declares_the_four_types(shipped: catalog.Catalog) -> None:
    summary = {t.key: (t.category, t.priority, t.priority.lane) for t in shipped}

    assert summary == {
        "auth.password_reset": ("security", catalog.Priority.CRITICAL, 0),
        "board.invited": ("invitations", catalog.Priority.NORMAL, 2),
        "comment.created": ("comments", catalog.Priority.NORMAL, 2),
        "mention.created": ("mentions", catalog.Priority.HIGH, 1),
    }


def test_every_type_is_documented_and_in_app(shipped: catalog.Catalog) -> None:
    for notification_type in shipped:
        assert notification_type.description
        assert notification_type.example is not None
        assert notification_type.channels == frozenset({"in_app"})
        assert Path(notification_type.source).parent == SHIPPED


def test_catalog_is_a_collection_of_types(shipped: catalog.Catalog) -> None:
    comment = shipped.get("comment.created")

    assert comment is not None
    assert "comment.created" in shipped
    assert comment in shipped
    assert "comment.deleted" not in shipped
    assert shipped.get("comment.deleted") is None
    assert len(shipped) == 4
    assert [t.key for t in shipped] == sorted(shipped.types)
    assert shipped.source_dir == SHIPPED


def test_canonical_event_validates_and_renders(shipped: catalog.Catalog) -> None:
    comment = shipped.get(CANONICAL_EVENT["type"])
    assert comment is not None

    assert comment.validate_payload(CANONICAL_EVENT["data"]) == []
    content = comment.render_in_app(
        {
            "data": CANONICAL_EVENT["data"],
            "actor": CANONICAL_EVENT["actor"],
            "recipient": {"id": "u-bob", "name": "Bob", "email": "bob@example.com"},
            "event": {"id": "ev-1", "type": "comment.created", "tenant": "acme"},
        }
    )

    assert content == catalog.InAppContent(
        title="Ann commented on Roadmap",
        body="Looks good",
        action_url="/boards/b-1#comment-c-1",
    )


@pytest.mark.parametrize("key", ["auth.password_reset", "board.invited", "mention.created"])
def test_example_validates_and_renders(shipped: catalog.Catalog, key: str) -> None:
    notification_type = shipped.get(key)
    assert notification_type is not None
    assert notification_type.example is not None

    assert notification_type.validate_payload(notification_type.example) == []
    content = notification_type.render_in_app(
        {"data": notification_type.example, "actor": {"id": "u-ann", "name": "Ann"}}
    )
    assert content.title
    assert content.body
    assert "{{" not in content.title + content.body


def test_password_reset_requires_a_uri_and_minutes(shipped: catalog.Catalog) -> None:
    reset = shipped.get("auth.password_reset")
    assert reset is not None

    errors = reset.validate_payload({"reset_url": "not a url", "expires_in_minutes": "30"})

    assert [error.path for error in errors] == ["data.expires_in_minutes", "data.reset_url"]
