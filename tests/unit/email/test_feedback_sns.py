"""Amazon SES feedback through SNS: envelopes signed as SNS signs them, then SES events."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tidings.email import feedback_sns
from tidings.email.feedback import Feedback, FeedbackKind
from tidings.email.feedback_sns import CertificateStore, SnsKind
from tidings.kit import errors

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
CERT_URL = (
    "https://sns.eu-west-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37f"
)


def make_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    key: rsa.RSAPrivateKey,
    *,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=30),
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


KEY = make_key()
PEM = make_cert(KEY)

# The string to sign as AWS documents it ("Verifying the signatures of Amazon SNS
# messages"), written out here rather than borrowed from the code under test.
NOTIFICATION_KEYS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_KEYS = [
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
]


def sign(
    envelope: dict[str, Any], *, version: str = "1", key: rsa.RSAPrivateKey = KEY
) -> dict[str, Any]:
    keys = NOTIFICATION_KEYS if envelope["Type"] == "Notification" else CONFIRMATION_KEYS
    text = "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    return {
        **envelope,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": envelope.get("SigningCertURL", CERT_URL),
    }


def notification(
    message: dict[str, Any] | str, *, at: dt.datetime = NOW, **extra: Any
) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else orjson.dumps(message).decode(),
        "Timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        **extra,
    }


def confirmation(kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37f",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": "2025-03-01T11:59:30.000Z",
    }


def parse(
    envelope: dict[str, Any],
    *,
    store: CertificateStore | None = None,
    topics: frozenset[str] = frozenset(),
    now: dt.datetime = NOW,
) -> feedback_sns.SnsResult:
    return feedback_sns.parse_sns(
        orjson.dumps(envelope),
        store or CertificateStore({CERT_URL: PEM}),
        topic_arns=topics,
        now=now,
    )


# Samples after AWS's "Amazon SNS notification examples for Amazon SES" and "Examples of
# event data that Amazon SES publishes to Amazon SNS".
MAIL: dict[str, Any] = {
    "timestamp": "2025-03-01T11:58:00.000Z",
    "source": "notifications@tidings.example",
    "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/tidings.example",
    "sourceIp": "127.0.3.0",
    "sendingAccountId": "123456789012",
    "callerIdentity": "tidings",
    "messageId": "0102018f-aaaa-bbbb-cccc-000000000000-000000",
    "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
    "headersTruncated": False,
    "headers": [
        {"name": "From", "value": "Tidings <notifications@tidings.example>"},
        {"name": "To", "value": "jane@example.com"},
        {"name": "Message-ID", "value": "<d-1@tidings.example>"},
        {"name": "Subject", "value": "Ann commented"},
    ],
    "commonHeaders": {
        "from": ["Tidings <notifications@tidings.example>"],
        "date": "Sat, 1 Mar 2025 11:58:00 +0000",
        "to": ["jane@example.com"],
        "messageId": "<d-1@tidings.example>",
        "subject": "Ann commented",
    },
}

BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "reportingMTA": "dns; email.example.com",
        "bouncedRecipients": [
            {
                "emailAddress": "jane@example.com",
                "status": "5.1.1",
                "action": "failed",
                "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User unknown",
            },
            {"emailAddress": "Mary Doe <mary@example.com>"},
        ],
        "bounceSubType": "General",
        "timestamp": "2025-03-01T11:59:00.237Z",
        "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
        "remoteMtaIp": "127.0.2.0",
    },
    "mail": MAIL,
}

COMPLAINT: dict[str, Any] = {
    "notificationType": "Complaint",
    "complaint": {
        "userAgent": "AnyCompany Feedback Loop (V0.01)",
        "complainedRecipients": [{"emailAddress": "richard@example.com"}],
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2025-03-01T11:59:00.000Z",
        "timestamp": "2025-03-01T11:59:01.000Z",
        "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
    },
    "mail": MAIL,
}

DELIVERY: dict[str, Any] = {
    "notificationType": "Delivery",
    "delivery": {
        "timestamp": "2025-03-01T11:58:01.546Z",
        "recipients": ["jane@example.com"],
        "processingTimeMillis": 546,
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "smtpResponse": "250 ok:  Message 64111812 accepted",
        "remoteMtaIp": "127.0.2.0",
    },
    "mail": MAIL,
}

COMMON = {
    "provider": "ses",
    "message_id": "<d-1@tidings.example>",
    "provider_message_id": "0102018f-aaaa-bbbb-cccc-000000000000-000000",
}


# --- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_is_verified(version: str) -> None:
    result = parse(sign(notification(BOUNCE), version=version))
    assert result.kind is SnsKind.NOTIFICATION
    assert result.topic_arn == TOPIC
    assert result.subscribe_url is None
    assert len(result.feedback) == 2


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_subject_is_part_of_what_is_signed(version: str) -> None:
    envelope = sign(notification(DELIVERY, Subject="Amazon SES Email Event"), version=version)
    assert parse(envelope).feedback
    without = {k: v for k, v in envelope.items() if k != "Subject"}
    with pytest.raises(errors.Unauthenticated):
        parse(without)


def test_a_null_subject_is_left_out() -> None:
    signed = sign(notification(DELIVERY))
    assert parse({**signed, "Subject": None}).feedback


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("SubscriptionConfirmation", SnsKind.SUBSCRIPTION_CONFIRMATION),
        ("UnsubscribeConfirmation", SnsKind.UNSUBSCRIBE_CONFIRMATION),
    ],
)
def test_confirmations_are_verified_and_carry_the_subscribe_url(
    version: str, kind: str, expected: SnsKind
) -> None:
    result = parse(sign(confirmation(kind), version=version))
    assert result.kind is expected
    assert result.subscribe_url == SUBSCRIBE_URL
    assert result.feedback == []


def test_a_confirmation_signed_with_the_notification_keys_is_refused() -> None:
    envelope = confirmation()
    text = "".join(f"{k}\n{envelope[k]}\n" for k in NOTIFICATION_KEYS if k in envelope)
    signature = KEY.sign(text.encode(), padding.PKCS1v15(), hashes.SHA1())
    forged = {
        **envelope,
        "SignatureVersion": "1",
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": CERT_URL,
    }
    with pytest.raises(errors.Unauthenticated):
        parse(forged)


def tampered(field: str, value: Any) -> dict[str, Any]:
    return {**sign(notification(BOUNCE)), field: value}


OTHER_PEM = make_cert(make_key())


@pytest.mark.parametrize(
    ("envelope", "store", "field"),
    [
        pytest.param(
            tampered(
                "Message", orjson.dumps({**BOUNCE, "mail": {**MAIL, "messageId": "x"}}).decode()
            ),
            None,
            "Signature",
            id="tampered-message",
        ),
        pytest.param(tampered("TopicArn", TOPIC + "-2"), None, "Signature", id="tampered-topic"),
        pytest.param(
            tampered("Timestamp", "2025-03-01T11:59:59.000Z"),
            None,
            "Signature",
            id="tampered-timestamp",
        ),
        pytest.param(
            {
                **sign(notification(BOUNCE, SubscribeURL=SUBSCRIBE_URL, Token="t")),
                "Type": "SubscriptionConfirmation",
            },
            None,
            "Signature",
            id="tampered-type",
        ),
        pytest.param(tampered("Signature", "bm90IGJhc2U2NA=="), None, "Signature", id="garbage"),
        pytest.param(tampered("Signature", "%%%"), None, "Signature", id="not-base64"),
        pytest.param(tampered("SignatureVersion", "3"), None, "SignatureVersion", id="version-3"),
        pytest.param(
            sign(notification(BOUNCE)),
            CertificateStore({CERT_URL: OTHER_PEM}),
            "Signature",
            id="wrong-cert",
        ),
        pytest.param(
            sign(notification(BOUNCE)), CertificateStore(), "SigningCertURL", id="cert-not-stored"
        ),
        pytest.param(
            sign(notification(BOUNCE)),
            CertificateStore({CERT_URL: "not a pem"}),
            "SigningCertURL",
            id="cert-not-pem",
        ),
        pytest.param(
            sign(notification(BOUNCE)),
            CertificateStore({CERT_URL: make_cert(KEY, not_after=NOW - dt.timedelta(seconds=1))}),
            "SigningCertURL",
            id="cert-expired",
        ),
        pytest.param(
            {k: v for k, v in sign(notification(BOUNCE)).items() if k != "SigningCertURL"},
            None,
            "SigningCertURL",
            id="no-cert-url",
        ),
    ],
)
def test_bad_signatures_are_unauthenticated(
    envelope: dict[str, Any], store: CertificateStore | None, field: str
) -> None:
    with pytest.raises(errors.Unauthenticated) as caught:
        parse(envelope, store=store)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sqs.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.txt",
        "https://sns.eu_west.amazonaws.com/SimpleNotificationService-1.pem",
        "file:///etc/ssl/cert.pem",
    ],
)
def test_certificates_from_anywhere_but_sns_are_refused_even_when_stored(url: str) -> None:
    envelope = sign({**notification(BOUNCE), "SigningCertURL": url})
    with pytest.raises(errors.Unauthenticated) as caught:
        parse(envelope, store=CertificateStore({url: PEM}))
    assert caught.value.field == "SigningCertURL"


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
        "https://SNS.us-gov-west-1.amazonaws.com:443/SimpleNotificationService-1.pem",
    ],
)
def test_sns_certificate_urls_are_accepted(url: str) -> None:
    feedback_sns.check_certificate_url(url)


def test_the_topic_must_be_allowed_when_a_list_is_given() -> None:
    envelope = sign(notification(BOUNCE))
    assert parse(envelope, topics=frozenset({TOPIC})).feedback
    with pytest.raises(errors.Unauthenticated) as caught:
        parse(envelope, topics=frozenset({TOPIC + "-other"}))
    assert caught.value.field == "TopicArn"


@pytest.mark.parametrize(
    ("sent", "ok"),
    [
        (NOW - dt.timedelta(minutes=59), True),
        (NOW - dt.timedelta(minutes=61), False),
        (NOW + dt.timedelta(minutes=4), True),
        (NOW + dt.timedelta(minutes=6), False),
    ],
)
def test_old_messages_are_refused_as_replays(sent: dt.datetime, ok: bool) -> None:
    envelope = sign(notification(BOUNCE, at=sent))
    if ok:
        assert parse(envelope).feedback
        return
    with pytest.raises(errors.Unauthenticated) as caught:
        parse(envelope)
    assert caught.value.field == "Timestamp"


def test_a_directory_mirroring_the_urls_is_a_store(tmp_path: Path) -> None:
    path = tmp_path / "sns.eu-west-1.amazonaws.com" / CERT_URL.rpartition("/")[2]
    path.parent.mkdir()
    path.write_bytes(PEM)
    store = CertificateStore(directory=tmp_path)
    assert len(parse(sign(notification(BOUNCE)), store=store).feedback) == 2
    other = CERT_URL.replace(".pem", "-2.pem")
    assert store.certificate(other) is None


def test_a_directory_store_reads_only_inside_its_folder(tmp_path: Path) -> None:
    store = CertificateStore(directory=tmp_path / "certs")
    (tmp_path / "secret.pem").write_bytes(PEM)
    for url in (
        "https://sns.eu-west-1.amazonaws.com/../secret.pem",
        "https://sns.eu-west-1.amazonaws.com/a/%2e%2e/secret.pem",
        "https://sns.eu-west-1.amazonaws.com//secret.pem",
    ):
        assert store.certificate(url) is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (orjson.dumps({"Type": "Other"}), "Type"),
        (orjson.dumps({**notification(BOUNCE), "Message": None}), "Message"),
        (orjson.dumps({k: v for k, v in notification(BOUNCE).items() if k != "TopicArn"}), None),
    ],
)
def test_what_is_not_an_sns_message_is_invalid(raw: bytes, field: str | None) -> None:
    with pytest.raises(errors.Invalid) as caught:
        feedback_sns.parse_sns(
            raw, CertificateStore({CERT_URL: PEM}), topic_arns=frozenset(), now=NOW
        )
    assert caught.value.field == (field or "TopicArn")


# --- SES events ----------------------------------------------------------------------


def ses(message: dict[str, Any] | str) -> list[Feedback]:
    return parse(sign(notification(message))).feedback


def test_a_permanent_bounce_is_a_hard_bounce_per_recipient() -> None:
    at = dt.datetime(2025, 3, 1, 11, 59, 0, 237000, tzinfo=dt.UTC)
    assert ses(BOUNCE) == [
        Feedback(
            FeedbackKind.HARD_BOUNCE,
            "jane@example.com",
            detail="Permanent/General: smtp; 550 5.1.1 <jane@example.com>... User unknown",
            occurred_at=at,
            **COMMON,
        ),
        Feedback(
            FeedbackKind.HARD_BOUNCE,
            "mary@example.com",
            detail="Permanent/General",
            occurred_at=at,
            **COMMON,
        ),
    ]


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined", "SomethingNew"])
def test_other_bounces_are_soft(bounce_type: str) -> None:
    event = copy.deepcopy(BOUNCE)
    event["bounce"]["bounceType"] = bounce_type
    event["bounce"]["bounceSubType"] = "MailboxFull"
    assert {f.kind for f in ses(event)} == {FeedbackKind.SOFT_BOUNCE}


def test_a_complaint_names_each_complaining_recipient() -> None:
    assert ses(COMPLAINT) == [
        Feedback(
            FeedbackKind.COMPLAINT,
            "richard@example.com",
            detail="abuse",
            occurred_at=dt.datetime(2025, 3, 1, 11, 59, 1, tzinfo=dt.UTC),
            **COMMON,
        )
    ]


def test_a_delivery_names_each_recipient() -> None:
    assert ses(DELIVERY) == [
        Feedback(
            FeedbackKind.DELIVERED,
            "jane@example.com",
            detail="250 ok:  Message 64111812 accepted",
            occurred_at=dt.datetime(2025, 3, 1, 11, 58, 1, 546000, tzinfo=dt.UTC),
            **COMMON,
        )
    ]


@pytest.mark.parametrize("sample", [BOUNCE, COMPLAINT, DELIVERY])
def test_event_publishing_records_read_the_same(sample: dict[str, Any]) -> None:
    event = {"eventType": sample["notificationType"]} | {
        k: v for k, v in sample.items() if k != "notificationType"
    }
    assert ses(event) == ses(sample)


def test_the_message_id_falls_back_to_the_common_headers_then_to_none() -> None:
    no_headers = {**MAIL, "headers": []}
    no_headers["commonHeaders"] = {**MAIL["commonHeaders"], "messageId": "d-2@tidings.example"}
    [item] = ses({**DELIVERY, "mail": no_headers})
    assert item.message_id == "<d-2@tidings.example>"
    bare = {k: v for k, v in MAIL.items() if k not in ("headers", "commonHeaders")}
    [item] = ses({**DELIVERY, "mail": bare})
    assert item.message_id is None
    assert item.provider_message_id == MAIL["messageId"]


@pytest.mark.parametrize(
    "event",
    [
        {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have..."},
        {"eventType": "Open", "mail": MAIL, "open": {"ipAddress": "192.0.2.1"}},
        {"eventType": "Send", "mail": MAIL, "send": {}},
    ],
)
def test_other_ses_events_give_no_feedback(event: dict[str, Any]) -> None:
    assert ses(event) == []


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ("plain text", "Message"),
        ([1], "Message"),
        ({**BOUNCE, "mail": None}, "Message.mail"),
        ({**BOUNCE, "bounce": "x"}, "Message.bounce"),
        (
            {**BOUNCE, "bounce": {**BOUNCE["bounce"], "bounceType": None}},
            "Message.bounce.bounceType",
        ),
        (
            {**BOUNCE, "bounce": {**BOUNCE["bounce"], "bouncedRecipients": [{}]}},
            "Message.bounce.bouncedRecipients.0.emailAddress",
        ),
        (
            {**COMPLAINT, "complaint": {"complainedRecipients": "x"}},
            "Message.complaint.complainedRecipients",
        ),
        (
            {**DELIVERY, "delivery": {"recipients": ["jane@example.com", "nope"]}},
            "Message.delivery.recipients.1",
        ),
        ({**DELIVERY, "mail": {**MAIL, "messageId": 5}}, "Message.mail.messageId"),
    ],
)
def test_malformed_ses_events_are_invalid(event: Any, field: str) -> None:
    message = event if isinstance(event, str) else orjson.dumps(event).decode()
    with pytest.raises(errors.Invalid) as caught:
        ses(message)
    assert caught.value.field == field
