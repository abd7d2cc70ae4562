"""Email feedback webhooks end to end: signed requests in, delivery states and suppressions out."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.routing import APIRoute

from tidings.app.runtime import Runtime
from tidings.delivery import feedback_endpoints
from tidings.delivery.feedback import FeedbackConfig, FeedbackRecorder
from tidings.email.feedback_sns import CertificateStore
from tidings.email.suppressions import Suppressions
from tidings.kit import tables

SECRET = "whsec-integration"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
MESSAGE_ID = "<m1@example.com>"
SES_ID = "0100018f-1111-2222-3333-444455556666-000000"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_pem() -> bytes:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def feedback_app(app: FastAPI, runtime: Runtime) -> FastAPI:
    """The app with the feedback webhook, whether or not the composition root wires it yet."""
    if getattr(app.state, "feedback", None) is None:
        app.state.feedback = FeedbackRecorder(
            runtime.db, runtime.clock, Suppressions(runtime.db, runtime.clock)
        )
    # The test's own secret and certificate, whatever the settings hold.
    app.state.feedback_config = FeedbackConfig(
        generic_secret=SECRET,
        sns_certificates=CertificateStore({CERT_URL: self_signed_pem()}),
        sns_topic_arns=frozenset({TOPIC}),
    )
    path = "/v1/webhooks/email/{provider}"
    if not any(isinstance(r, APIRoute) and r.path == path for r in app.router.routes):
        app.include_router(feedback_endpoints.router)
    return app


@pytest.fixture
async def delivery_id(feedback_app: FastAPI, runtime: Runtime) -> str:
    """An email delivery the provider has accepted."""
    now = dt.datetime.now(dt.UTC)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            tables.deliveries.insert().values(
                id="d-1",
                notification_id="n-1",
                event_id="e-1",
                user_id="u-jane",
                channel="email",
                state="sent",
                message_id=MESSAGE_ID,
                provider="ses",
                provider_message_id=SES_ID,
                created_at=now,
                updated_at=now,
            )
        )
    return "d-1"


def generic(
    body: Any, *, secret: str = SECRET, age: dt.timedelta = dt.timedelta(0)
) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    t = int((dt.datetime.now(dt.UTC) - age).timestamp())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {"Tidings-Signature": f"t={t},v1={digest}", "Content-Type": "application/json"}


def sns(envelope: dict[str, Any]) -> bytes:
    """An SNS HTTP message, signed with the SHA256withRSA (version 2) scheme."""
    keys = (
        ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        if envelope["Type"] == "Notification"
        else ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    )
    text = "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope)
    signature = KEY.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return orjson.dumps(
        {
            **envelope,
            "SignatureVersion": "2",
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": CERT_URL,
        }
    )


def sns_notification(event: dict[str, Any]) -> bytes:
    return sns(
        {
            "Type": "Notification",
            "MessageId": "5a1b2c3d-0000-4000-8000-000000000001",
            "TopicArn": TOPIC,
            "Message": orjson.dumps(event).decode(),
            "Timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }
    )


SES_MAIL = {
    "timestamp": "2025-03-01T11:58:00.000Z",
    "source": "notifications@tidings.example",
    "messageId": SES_ID,
    "destination": ["jane@example.com"],
    "headersTruncated": False,
    "headers": [{"name": "Message-ID", "value": MESSAGE_ID}],
    "commonHeaders": {"messageId": MESSAGE_ID, "subject": "Ann commented"},
}


async def delivery(runtime: Runtime, delivery_id: str) -> dict[str, Any]:
    async with runtime.db.reader() as conn:
        row = (
            await conn.execute(
                sa.select(tables.deliveries).where(tables.deliveries.c.id == delivery_id)
            )
        ).one()
        transitions = (
            await conn.execute(
                sa.select(tables.delivery_transitions.c.state, tables.delivery_transitions.c.reason)
                .where(tables.delivery_transitions.c.delivery_id == delivery_id)
                .order_by(tables.delivery_transitions.c.at)
            )
        ).all()
    return {**row._mapping, "transitions": [tuple(t) for t in transitions]}


async def suppressions(runtime: Runtime) -> dict[str, tuple[str, str | None]]:
    async with runtime.db.reader() as conn:
        rows = await conn.execute(sa.select(tables.email_suppressions))
        return {r.address: (r.reason, r.provider) for r in rows}


HARD_BOUNCE = {
    "type": "bounce",
    "bounce_type": "hard",
    "recipient": "Jane@Example.com",
    "message_id": MESSAGE_ID,
    "detail": "550 5.1.1 user unknown",
}


async def test_a_signed_hard_bounce_bounces_the_delivery_and_suppresses_the_address(
    client: httpx.AsyncClient, runtime: Runtime, delivery_id: str
) -> None:
    raw, headers = generic(HARD_BOUNCE)
    response = await client.post("/v1/webhooks/email/generic", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "recorded": 1,
        "suppressed": 1,
        "bounced": 1,
        "delivered": 0,
        "unmatched": 0,
    }
    row = await delivery(runtime, delivery_id)
    assert (row["state"], row["reason"], row["detail"]) == (
        "bounced",
        "hard_bounce",
        "550 5.1.1 user unknown",
    )
    # The delivery's first state is logged as it changes, then the bounce.
    assert row["transitions"][0] == ("planned", None)
    assert row["transitions"][-1] == ("bounced", "hard_bounce")
    assert len(row["transitions"]) == 3
    assert await suppressions(runtime) == {"jane@example.com": ("hard_bounce", "generic")}

    # The provider retries: the same request again changes nothing.
    again = await client.post("/v1/webhooks/email/generic", content=raw, headers=headers)
    assert again.status_code == 200
    assert again.json()["bounced"] == 0
    assert await delivery(runtime, delivery_id) == row
    assert await suppressions(runtime) == {"jane@example.com": ("hard_bounce", "generic")}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Tidings-Signature": "t=1,v1=" + "0" * 64},
        generic(HARD_BOUNCE, secret="not-the-secret")[1],
        generic(HARD_BOUNCE, age=dt.timedelta(minutes=6))[1],
    ],
    ids=["missing", "garbage", "wrong-secret", "stale"],
)
async def test_a_bad_signature_is_a_401_and_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, delivery_id: str, headers: dict[str, str]
) -> None:
    raw, _ = generic(HARD_BOUNCE)
    response = await client.post("/v1/webhooks/email/generic", content=raw, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("unauthenticated", "tidings-signature")
    assert (await delivery(runtime, delivery_id))["state"] == "sent"
    assert await suppressions(runtime) == {}


async def test_a_bad_generic_body_is_a_422_naming_the_field(
    client: httpx.AsyncClient, feedback_app: FastAPI
) -> None:
    raw, headers = generic({"events": [HARD_BOUNCE, {**HARD_BOUNCE, "bounce_type": "medium"}]})
    response = await client.post("/v1/webhooks/email/generic", content=raw, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events.1.bounce_type"


async def test_an_unknown_provider_is_a_404(
    client: httpx.AsyncClient, feedback_app: FastAPI
) -> None:
    raw, headers = generic(HARD_BOUNCE)
    response = await client.post("/v1/webhooks/email/postmark", content=raw, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_feedback_for_an_unknown_message_still_suppresses(
    client: httpx.AsyncClient, runtime: Runtime, feedback_app: FastAPI
) -> None:
    raw, headers = generic(
        {
            "events": [
                {**HARD_BOUNCE, "message_id": "<other@x>"},
                {"type": "complaint", "recipient": "r@x.example"},
            ]
        }
    )
    response = await client.post("/v1/webhooks/email/generic", content=raw, headers=headers)
    assert response.json() == {
        "recorded": 2,
        "suppressed": 2,
        "bounced": 0,
        "delivered": 0,
        "unmatched": 1,
    }
    assert await suppressions(runtime) == {
        "jane@example.com": ("hard_bounce", "generic"),
        "r@x.example": ("complaint", "generic"),
    }


async def test_an_sns_subscription_asks_the_operator_to_confirm(
    client: httpx.AsyncClient, feedback_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"
    raw = sns(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37f",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": url,
            "Timestamp": dt.datetime.now(dt.UTC).isoformat(),
        }
    )
    with caplog.at_level(logging.WARNING):
        response = await client.post(
            "/v1/webhooks/email/ses", content=raw, headers={"Content-Type": "text/plain"}
        )
    assert response.status_code == 200
    assert response.json() == {"status": "confirmation_required", "subscribe_url": url}
    assert any(url in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_ses_feedback_through_sns_moves_deliveries_and_suppresses(
    client: httpx.AsyncClient, runtime: Runtime, delivery_id: str
) -> None:
    delivered = {
        "notificationType": "Delivery",
        "mail": {**SES_MAIL, "headers": [], "commonHeaders": {}},  # matched by SES's own id
        "delivery": {
            "timestamp": "2025-03-01T11:58:01.546Z",
            "recipients": ["jane@example.com"],
            "smtpResponse": "250 ok",
        },
    }
    response = await client.post("/v1/webhooks/email/ses", content=sns_notification(delivered))
    assert response.status_code == 200, response.text
    assert response.json()["delivered"] == 1
    assert (await delivery(runtime, delivery_id))["state"] == "delivered"

    complaint = {
        "eventType": "Complaint",
        "mail": SES_MAIL,
        "complaint": {
            "complainedRecipients": [{"emailAddress": "jane@example.com"}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2025-03-01T12:00:00.000Z",
        },
    }
    response = await client.post("/v1/webhooks/email/ses", content=sns_notification(complaint))
    assert response.json()["suppressed"] == 1
    assert await suppressions(runtime) == {"jane@example.com": ("complaint", "ses")}
    row = await delivery(runtime, delivery_id)
    assert row["state"] == "delivered"

    # A bounce can follow a delivery report; the first cause on the list stays.
    bounce = {
        "notificationType": "Bounce",
        "mail": SES_MAIL,
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "jane@example.com"}],
            "timestamp": "2025-03-01T12:01:00.000Z",
        },
    }
    response = await client.post("/v1/webhooks/email/ses", content=sns_notification(bounce))
    assert response.json()["bounced"] == 1
    row = await delivery(runtime, delivery_id)
    assert (row["state"], row["reason"], row["detail"]) == (
        "bounced",
        "hard_bounce",
        "Permanent/General",
    )
    assert [t[0] for t in row["transitions"]][-2:] == ["delivered", "bounced"]
    assert await suppressions(runtime) == {"jane@example.com": ("complaint", "ses")}


async def test_an_sns_message_that_fails_verification_is_a_401(
    client: httpx.AsyncClient, runtime: Runtime, delivery_id: str
) -> None:
    envelope = orjson.loads(sns_notification({"notificationType": "Delivery"}))
    envelope["Message"] = orjson.dumps(
        {
            "notificationType": "Bounce",
            "mail": SES_MAIL,
            "bounce": {
                "bounceType": "Permanent",
                "bouncedRecipients": [{"emailAddress": "jane@example.com"}],
            },
        }
    ).decode()
    response = await client.post("/v1/webhooks/email/ses", content=orjson.dumps(envelope))
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "Signature"
    assert (await delivery(runtime, delivery_id))["state"] == "sent"
    assert await suppressions(runtime) == {}


async def test_webhooks_need_no_api_key_but_a_topic_on_the_list(
    client: httpx.AsyncClient, feedback_app: FastAPI
) -> None:
    feedback_app.state.feedback_config = FeedbackConfig(
        generic_secret=SECRET,
        sns_certificates=CertificateStore({CERT_URL: self_signed_pem()}),
        sns_topic_arns=frozenset({TOPIC + "-other"}),
    )
    response = await client.post(
        "/v1/webhooks/email/ses", content=sns_notification({"notificationType": "Delivery"})
    )
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "TopicArn"
