"""The Amazon SES provider against moto in server mode: the one fake allowed here."""

from __future__ import annotations

import dataclasses
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from tests.integration.email_providers.conftest import SENDER, make_email
from tests.integration.email_providers.moto_ses import KEYS, REGION, sent_by_moto, ses_settings
from tidings.email.providers.base import PermanentSendError, TransientSendError
from tidings.email.providers.ses import INSTALL_HINT, SesProvider, SesSettings, classify


@pytest.fixture
async def ses(verified: str) -> AsyncIterator[SesProvider]:
    provider = SesProvider(ses_settings(verified))
    yield provider
    await provider.close()


async def test_sends_the_raw_message(ses: SesProvider, verified: str) -> None:
    email = make_email(1, recipient="ann@example.com")

    accepted = await ses.send(email)

    assert accepted.provider == "ses"
    assert accepted.provider_id
    assert accepted.reply == f"200 MessageId {accepted.provider_id}"
    [recorded] = sent_by_moto(verified)
    assert recorded["id"] == accepted.provider_id
    assert recorded["source"] == SENDER
    assert "ann@example.com" in recorded["destinations"]
    assert recorded["raw_data"].encode() == email.raw


async def test_an_address_needing_smtputf8_fails_saying_so_and_is_not_sent(
    ses: SesProvider, verified: str
) -> None:
    with pytest.raises(PermanentSendError, match="only ASCII before the @"):
        await ses.send(make_email(1, recipient="bøb@example.com"))
    assert sent_by_moto(verified) == []


async def test_many_sends_share_one_client(ses: SesProvider, verified: str) -> None:
    accepted = [await ses.send(make_email(n)) for n in range(5)]

    assert len({a.provider_id for a in accepted}) == 5
    assert len(sent_by_moto(verified)) == 5


async def test_sends_with_a_configuration_set(verified: str) -> None:
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=verified, **KEYS)
    try:
        client.create_configuration_set(ConfigurationSetName="tidings-events")
    finally:
        client.close()
    provider = SesProvider(ses_settings(verified, configuration_set="tidings-events"))
    try:
        accepted = await provider.send(make_email(1))
    finally:
        await provider.close()

    assert [m["id"] for m in sent_by_moto(verified)] == [accepted.provider_id]


async def test_an_unverified_sender_is_permanent(verified: str) -> None:
    provider = SesProvider(ses_settings(verified))
    stranger = dataclasses.replace(make_email(1), sender="someone@else.test")
    try:
        with pytest.raises(PermanentSendError) as raised:
            await provider.send(stranger)
    finally:
        await provider.close()

    assert raised.value.reply.startswith("MessageRejected: ")
    assert raised.value.code == 400
    assert raised.value.provider == "ses"
    assert sent_by_moto(verified) == []


async def test_an_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = SesProvider(ses_settings(f"http://127.0.0.1:{port}", timeout=2.0))
    try:
        with pytest.raises(TransientSendError, match="EndpointConnectionError"):
            await provider.send(make_email(1))
    finally:
        await provider.close()


async def test_closed_refuses_sends(ses: SesProvider) -> None:
    await ses.close()
    with pytest.raises(TransientSendError, match="closed"):
        await ses.send(make_email(1))
    await ses.close()


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (client_error("MessageRejected", 400), PermanentSendError, 400),
        (client_error("MailFromDomainNotVerifiedException", 400), PermanentSendError, 400),
        (client_error("AccountSuspendedException", 400), PermanentSendError, 400),
        (client_error("SendingPausedException", 400), PermanentSendError, 400),
        (client_error("BadRequestException", 400), PermanentSendError, 400),
        (client_error("TooManyRequestsException", 429), TransientSendError, 429),
        (client_error("LimitExceededException", 400), TransientSendError, 400),
        (client_error("ThrottlingException", 400), TransientSendError, 400),
        (client_error("InternalServiceErrorException", 500), TransientSendError, 500),
        (client_error("ServiceUnavailable", 503), TransientSendError, 503),
        (client_error("NotFoundException", 404), TransientSendError, 404),
        (client_error("UnrecognizedClientException", 403), TransientSendError, 403),
        (EndpointConnectionError(endpoint_url="http://nowhere"), TransientSendError, None),
        (TimeoutError("read timed out"), TransientSendError, None),
        (ParamValidationError(report="Invalid length for parameter"), PermanentSendError, None),
    ],
)
def test_errors_are_classified(error: Exception, kind: type[Exception], code: int | None) -> None:
    classified = classify(error)

    assert type(classified) is kind
    assert classified.code == code
    assert classified.provider == "ses"
    if isinstance(error, ClientError):
        code_name = error.response["Error"]["Code"]
        assert classified.reply == f"{code_name}: {code_name} happened"


def test_without_the_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)

    with pytest.raises(ImportError, match=r"pip install 'tidings\[ses\]'") as raised:
        SesProvider(SesSettings())
    assert str(raised.value) == INSTALL_HINT


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"access_key_id": "only-half"}, "secret_access_key"),
        ({"max_per_second": 0}, "max_per_second"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_settings_are_checked(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SesSettings(**bad)


def test_the_secret_is_not_in_the_repr() -> None:
    settings = SesSettings(access_key_id="AKIA", secret_access_key="very-secret")
    assert "very-secret" not in repr(settings)
