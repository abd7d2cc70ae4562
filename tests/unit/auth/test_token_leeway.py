"""User tokens and clock skew: a token minted by an application whose clock is a little
ahead of or behind Tidings' is accepted, one outside the leeway is not."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from tidings.auth import tokens
from tidings.kit import errors

SECRET = "s" * 40


def minted(**offsets: float) -> str:
    """A user token whose claims sit the given seconds away from now (``iat``, ``nbf``,
    ``exp``); a claim not given is left as an honest clock would set it."""
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, object] = {
        "sub": "u-bob",
        "aud": tokens.AUDIENCE,
        "iat": now + dt.timedelta(seconds=offsets.get("iat", 0)),
        "exp": now + dt.timedelta(seconds=offsets.get("exp", 3600)),
    }
    if "nbf" in offsets:
        claims["nbf"] = now + dt.timedelta(seconds=offsets["nbf"])
    return jwt.encode(claims, SECRET, algorithm=tokens.ALGORITHM)


@pytest.mark.parametrize(
    ("forgiven", "refused", "says"),
    [
        ({"iat": 1}, {"iat": 120}, "not valid"),  # minted by a clock that is ahead
        ({"iat": 20, "nbf": 20}, {"iat": 20, "nbf": 120}, "not valid"),
        ({"exp": -1}, {"exp": -60}, "expired"),  # judged by a clock that is behind
        ({"exp": -20}, {"exp": -31}, "expired"),
    ],
    ids=["iat", "nbf", "exp-1s", "exp-20s"],
)
def test_clock_skew_within_the_leeway_is_forgiven_and_beyond_it_refused(
    forgiven: dict[str, float], refused: dict[str, float], says: str
) -> None:
    assert tokens.verify_user_token(SECRET, minted(**forgiven)) == "u-bob"
    with pytest.raises(errors.Unauthenticated, match=says):
        tokens.verify_user_token(SECRET, minted(**refused))


def test_the_leeway_is_30_seconds_and_a_token_is_accepted_until_exp_plus_it() -> None:
    assert dt.timedelta(seconds=30) == tokens.LEEWAY
    token = tokens.issue_user_token(
        SECRET, "u-bob", ttl=dt.timedelta(hours=1), now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    assert tokens.accepted_until(token) == dt.datetime(2026, 1, 1, 1, 0, 30, tzinfo=dt.UTC)
