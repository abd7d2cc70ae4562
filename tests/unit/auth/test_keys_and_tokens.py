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
