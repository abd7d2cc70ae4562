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


def test_declares_the_five_types(shipped: catalog.Catalog) -> None:
    summary = {t.key: (t.category, t.priority, t.priority.lane) for t in shipped}

    assert summary == {
        "auth.password_reset": ("security", catalog.Priority.CRITICAL, 0),
        "board.invited": ("invitations", catalog.Priority.NORMAL, 2),
        "comment.created": ("comments", catalog.Priority.NORMAL, 2),
        "comment.liked": ("comments", catalog.Priority.NORMAL, 2),
        "mention.created": ("mentions", catalog.Priority.HIGH, 1),
    }


def test_every_type_is_documented_and_in_app(shipped: catalog.Catalog) -> None:
    for notification_type in shipped:
        assert notification_type.description
        assert notification_type.example is not None
        assert "in_app" in notification_type.channels
        assert Path(notification_type.source).parent == SHIPPED


def test_comments_and_password_resets_are_also_emailed(shipped: catalog.Catalog) -> None:
    channels = {t.key: (t.channels, t.email_locales) for t in shipped}

    assert channels == {
        "auth.password_reset": (frozenset({"in_app", "email"}), frozenset()),
        "board.invited": (frozenset({"in_app"}), frozenset()),
        "comment.created": (frozenset({"in_app", "email"}), frozenset({"fr"})),
        "comment.liked": (frozenset({"in_app"}), frozenset()),
        "mention.created": (frozenset({"in_app"}), frozenset()),
    }


def test_declares_the_categories(shipped: catalog.Catalog) -> None:
    mandatory = {name: category.mandatory for name, category in shipped.categories.items()}

    assert mandatory == {
        "billing": True,
        "comments": False,
        "invitations": False,
        "mentions": False,
        "security": True,
    }
    assert all(category.description for category in shipped.categories.values())
    for notification_type in shipped:
        assert notification_type.category in shipped.categories
    assert shipped.category("security").mandatory
    assert "categories" not in {t.key for t in shipped}


def test_catalog_is_a_collection_of_types(shipped: catalog.Catalog) -> None:
    comment = shipped.get("comment.created")

    assert comment is not None
    assert "comment.created" in shipped
    assert comment in shipped
    assert "comment.deleted" not in shipped
    assert shipped.get("comment.deleted") is None
    assert len(shipped) == 5
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


RECIPIENT = {"id": "u-bob", "name": "Bob", "email": "bob@example.com"}


@pytest.mark.parametrize(
    ("locale", "used", "subject", "button"),
    [
        (None, "default", "Ann commented on Roadmap", "View the comment"),
        ("en-US", "default", "Ann commented on Roadmap", "View the comment"),
        ("fr-CA", "fr", "Ann a commenté Roadmap", "Voir le commentaire"),
    ],
)
def test_canonical_event_renders_an_email(
    shipped: catalog.Catalog, locale: str | None, used: str, subject: str, button: str
) -> None:
    comment = shipped.get("comment.created")
    assert comment is not None

    email = comment.render_email(
        {
            "data": CANONICAL_EVENT["data"],
            "actor": CANONICAL_EVENT["actor"],
            "recipient": RECIPIENT,
            "event": {"id": "ev-1", "type": "comment.created", "tenant": "acme"},
        },
        locale,
    )

    assert (email.locale, email.subject) == (used, subject)
    assert f"<title>{subject}</title>" in email.html
    assert "Looks good" in email.html
    assert "fonts.googleapis" not in email.html
    assert f"{button} (https://app.example.com/boards/b-1#comment-c-1)" in email.text
    assert "<" not in email.text


def test_password_reset_email_has_its_own_text(shipped: catalog.Catalog) -> None:
    reset = shipped.get("auth.password_reset")
    assert reset is not None
    assert reset.example is not None

    email = reset.render_email({"data": reset.example, "recipient": RECIPIENT}, "de")

    assert email.subject == "Reset your password"
    assert email.locale == "default"
    assert email.text.startswith("Hello Bob,\n\nSomeone asked to reset the password")
    assert "\nhttps://app.example.com/reset?token=example-token\n" in email.text
    assert 'href="https://app.example.com/reset?token=example-token"' in email.html
    assert 'class="button" href="https://app.example.com/reset?token=example-token" style="' in (
        email.html
    )
