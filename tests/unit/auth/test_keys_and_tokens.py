from __future__ import annotations

import datetime as dt

import jwt
import pytest

from tidings.auth import keys, tokens
from tidings.kit import errors

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SECRET = "s" * 40
OTHER = "o" * 40


def test_generated_keys_verify_and_are_not_stored_in_plaintext() -> None:
    generated = keys.generate()
    assert keys.parse_prefix(generated.plaintext) == generated.prefix
    assert generated.plaintext not in generated.secret_hash
    assert keys.matches(generated.plaintext, generated.secret_hash)
    assert not keys.matches(generated.plaintext + "x", generated.secret_hash)
    assert keys.generate().plaintext != generated.plaintext


@pytest.mark.parametrize("presented", ["", "tdg", "tdg__x", "abc_def_ghi", "tdg_pfx_"])
def test_malformed_keys_have_no_prefix(presented: str) -> None:
    assert keys.parse_prefix(presented) is None


@pytest.mark.parametrize(
    ("scopes", "type_key", "allowed"),
    [
        (("comment.*",), "comment.created", True),
        (("comment.*",), "mention.created", False),
        (("*",), "anything.at_all", True),
        (("auth.password_reset",), "auth.password_reset", True),
        (("auth.password_reset",), "auth.password_reset2", False),
        (("comment.*", "mention.*"), "mention.created", True),
    ],
)
def test_scopes(scopes: tuple[str, ...], type_key: str, allowed: bool) -> None:
    key = keys.ApiKey("id", "team", "pfx", scopes, NOW)
    assert key.may_publish(type_key) is allowed


def test_a_token_speaks_for_its_user_only_with_the_right_secret() -> None:
    token = tokens.issue_user_token(
        SECRET, "u-bob", ttl=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC)
    )
    assert tokens.verify_user_token(SECRET, token) == "u-bob"
    with pytest.raises(errors.Unauthenticated):
        tokens.verify_user_token(OTHER, token)


def test_expired_and_foreign_tokens_are_refused() -> None:
    expired = tokens.issue_user_token(SECRET, "u-bob", ttl=dt.timedelta(seconds=1), now=NOW)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        tokens.verify_user_token(SECRET, expired)
    other_audience = jwt.encode(
        {"sub": "u-bob", "exp": 4102444800, "aud": "else"}, SECRET, algorithm="HS256"
    )
    with pytest.raises(errors.Unauthenticated):
        tokens.verify_user_token(SECRET, other_audience)
    unsigned = jwt.encode(
        {"sub": "u-bob", "exp": 4102444800, "aud": tokens.AUDIENCE}, None, algorithm="none"
    )
    with pytest.raises(errors.Unauthenticated):
        tokens.verify_user_token(SECRET, unsigned)


@pytest.mark.parametrize(
    ("scopes", "capability", "allowed"),
    [
        (("comment.*",), "users:write", False),
        (("*",), "users:write", False),
        (("comment.*", "users:write"), "users:write", True),
        (("users:write",), "users:read", False),
        (("admin",), "users:erase", True),
        (("admin",), "dev:mailbox", True),
    ],
)
def test_capabilities(scopes: tuple[str, ...], capability: str, allowed: bool) -> None:
    key = keys.ApiKey("id", "team", "pfx", scopes, NOW)
    assert key.has(capability) is allowed


def test_a_capability_scope_is_never_a_type_pattern() -> None:
    key = keys.ApiKey("id", "team", "pfx", ("users:write", "comment.*", "*:*"), NOW)
    assert key.type_patterns == ("comment.*",)
    assert key.capabilities == ("users:write",)
    assert not key.may_publish("users.write")


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        ([" comment.* ", "users:read", "comment.*"], ["comment.*", "users:read"]),
        (["admin"], ["admin"]),
        (["billing.invoice_paid", "dev:mailbox"], ["billing.invoice_paid", "dev:mailbox"]),
    ],
)
def test_checked_scopes_keep_known_ones_once(given: list[str], wanted: list[str]) -> None:
    assert keys.checked_scopes(given) == wanted


@pytest.mark.parametrize("scope", ["users:wrte", "preferences:*", "users", "Comment.*", "a b.*"])
def test_checked_scopes_refuse_what_is_neither(scope: str) -> None:
    with pytest.raises(errors.Invalid, match="Unknown scope") as refused:
        keys.checked_scopes(["comment.*", scope])
    assert refused.value.field == "scopes"


def test_checked_scopes_need_one() -> None:
    with pytest.raises(errors.Invalid, match="at least one scope"):
        keys.checked_scopes([" ", ""])
