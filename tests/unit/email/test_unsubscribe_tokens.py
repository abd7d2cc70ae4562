from __future__ import annotations

import base64
import datetime as dt
import json
import re

import jwt
import pytest

from tidings.auth import tokens as user_tokens
from tidings.email import unsubscribe_tokens
from tidings.email.unsubscribe_tokens import UnsubscribeClaim
from tidings.kit import errors

SECRET = "s3cret-for-tests-" + "x" * 64
OTHER_SECRET = "another-secret-for-tests-" + "y" * 64
NOW = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(decoded, dict)
    return decoded


@pytest.mark.parametrize("email", [None, "bob@example.com"])
def test_a_token_round_trips(email: str | None) -> None:
    token = unsubscribe_tokens.issue(
        SECRET, user_id="u-bob", category="comments", email=email, now=NOW
    )
    assert unsubscribe_tokens.verify(SECRET, token) == UnsubscribeClaim(
        user_id="u-bob", category="comments", email=email
    )


def test_tokens_are_compact_url_safe_and_never_expire() -> None:
    token = unsubscribe_tokens.issue(
        SECRET, user_id="0190f6b2-7c1e-7d3a-9e51-3b2f4c5d6e7f", category="comments", now=NOW
    )
    assert re.fullmatch(r"[A-Za-z0-9_\-.]+", token)
    assert len(token) < 256  # a UUID user and a category: about 210
    claims = claims_of(token)
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["aud"] == "tidings:unsubscribe"
    assert "exp" not in claims


def test_old_and_future_dated_tokens_still_verify() -> None:
    old = unsubscribe_tokens.issue(
        SECRET, user_id="u", category="c", now=dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    )
    skewed = unsubscribe_tokens.issue(
        SECRET, user_id="u", category="c", now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )
    for token in (old, skewed):
        assert unsubscribe_tokens.verify(SECRET, token).user_id == "u"


def test_the_clock_is_used_when_no_time_is_given() -> None:
    before = int(dt.datetime.now(dt.UTC).timestamp())
    token = unsubscribe_tokens.issue(SECRET, user_id="u", category="c")
    iat = claims_of(token)["iat"]
    assert isinstance(iat, int)
    assert before <= iat <= before + 5


def forge(claims: dict[str, object], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "u-eve"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return ".".join((header, forged, signature))


GOOD = {"aud": "tidings:unsubscribe", "sub": "u-bob", "cat": "comments", "iat": 1714566600}
VALID = unsubscribe_tokens.issue(SECRET, user_id="u-bob", category="comments", now=NOW)

BAD_TOKENS = [
    pytest.param(tampered(VALID), id="tampered-payload"),
    pytest.param(VALID[:-4] + ("AAAA" if not VALID.endswith("AAAA") else "BBBB"), id="bad-sig"),
    pytest.param(forge(GOOD, secret=OTHER_SECRET), id="other-secret"),
    pytest.param(forge({**GOOD, "aud": "tidings:user"}), id="other-audience"),
    pytest.param(
        user_tokens.issue_user_token(SECRET, "u-bob", ttl=dt.timedelta(days=1), now=NOW),
        id="user-token",
    ),
    pytest.param(forge({k: v for k, v in GOOD.items() if k != "aud"}), id="no-audience"),
    pytest.param(forge({k: v for k, v in GOOD.items() if k != "cat"}), id="no-category"),
    pytest.param(forge({k: v for k, v in GOOD.items() if k != "sub"}), id="no-user"),
    pytest.param(forge({k: v for k, v in GOOD.items() if k != "iat"}), id="no-iat"),
    pytest.param(forge({**GOOD, "sub": ""}), id="empty-user"),
    pytest.param(forge({**GOOD, "cat": 7}), id="category-not-text"),
    pytest.param(forge({**GOOD, "cat": ""}), id="empty-category"),
    pytest.param(forge({**GOOD, "eml": ["x"]}), id="email-not-text"),
    pytest.param(forge({**GOOD, "iat": "yesterday"}), id="iat-not-a-number"),
    pytest.param(forge(GOOD, secret=SECRET, algorithm="HS512"), id="other-algorithm"),
    pytest.param(jwt.encode(GOOD, "", algorithm="none"), id="alg-none"),
    pytest.param("", id="empty"),
    pytest.param("garbage", id="garbage"),
    pytest.param("a.b.c", id="three-garbage-parts"),
    pytest.param("é.ü.ö", id="non-ascii"),
    pytest.param(VALID + "." + VALID, id="doubled"),
    pytest.param("x" * 10_000, id="huge"),
]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_bad_tokens_are_invalid(token: str) -> None:
    with pytest.raises(errors.Invalid) as caught:
        unsubscribe_tokens.verify(SECRET, token)
    assert caught.value.field == "token"
    assert caught.value.code == "invalid"
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("secret", "user_id", "category"), [("", "u", "c"), (SECRET, "", "c"), (SECRET, "u", "")]
)
def test_issuing_needs_a_secret_a_user_and_a_category(
    secret: str, user_id: str, category: str
) -> None:
    with pytest.raises(ValueError, match=r"secret|user"):
        unsubscribe_tokens.issue(secret, user_id=user_id, category=category)
