"""HTTP for provider feedback: bounce, complaint and delivery webhooks, signed, no API key."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from tidings.delivery.feedback import FeedbackConfig, FeedbackRecorder
from tidings.email import feedback_generic, feedback_sns
from tidings.kit import errors

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

PROVIDERS = ("ses", "generic")


class Recorded(BaseModel):
    """Feedback taken: items received, suppressions asked, deliveries moved, unmatched."""

    recorded: int
    suppressed: int
    bounced: int
    delivered: int
    unmatched: int


class SnsSubscription(BaseModel):
    """An SNS subscription step the operator finishes by opening ``subscribe_url``."""

    status: Literal["confirmation_required", "unsubscribed"]
    subscribe_url: str | None


async def feedback_recorder(request: Request) -> FeedbackRecorder:
    recorder: FeedbackRecorder = request.app.state.feedback
    return recorder


async def feedback_config(request: Request) -> FeedbackConfig:
    config: FeedbackConfig = request.app.state.feedback_config
    return config


@router.post(
    "/email/{provider}",
    response_model=Recorded | SnsSubscription,
    responses={401: {"description": "Missing, wrong or stale signature"}},
)
async def email_feedback(
    provider: str,
    request: Request,
    recorder: Annotated[FeedbackRecorder, Depends(feedback_recorder)],
    config: Annotated[FeedbackConfig, Depends(feedback_config)],
    tidings_signature: Annotated[
        str | None, Header(description="'t=<unix>,v1=<hex HMAC-SHA256>', generic only")
    ] = None,
) -> Recorded | SnsSubscription:
    """Bounces, complaints and deliveries from an email provider, verified by signature.

    ``ses``: Amazon SES events in an SNS HTTP(S) message, signed by SNS. ``generic``: one
    event or ``{"events": [...]}``, signed with ``Tidings-Signature``. Hard bounces and
    complaints suppress the address; a hard bounce marks the delivery bounced.
    """
    if provider not in PROVIDERS:
        raise errors.NotFound(
            f"No feedback webhook for provider {provider!r}; use one of {', '.join(PROVIDERS)}.",
            field="provider",
        )
    raw = await request.body()
    now = recorder.clock.now()
    if provider == "generic":
        items = feedback_generic.parse_generic(raw, tidings_signature, config.generic_secret, now)
    else:
        result = feedback_sns.parse_sns(
            raw, config.sns_certificates, topic_arns=config.sns_topic_arns, now=now
        )
        if result.kind is feedback_sns.SnsKind.SUBSCRIPTION_CONFIRMATION:
            log.warning(
                "SNS topic %s asks to confirm this webhook's subscription; Tidings fetches "
                "nothing itself: open %s to confirm it",
                result.topic_arn,
                result.subscribe_url,
            )
            return SnsSubscription(
                status="confirmation_required", subscribe_url=result.subscribe_url
            )
        if result.kind is feedback_sns.SnsKind.UNSUBSCRIBE_CONFIRMATION:
            log.warning(
                "SNS topic %s unsubscribed this webhook: no more SES feedback arrives from it; "
                "open %s to subscribe again",
                result.topic_arn,
                result.subscribe_url,
            )
            return SnsSubscription(status="unsubscribed", subscribe_url=result.subscribe_url)
        items = result.feedback
    outcome = await recorder.record(items)
    return Recorded(
        recorded=outcome.recorded,
        suppressed=outcome.suppressed,
        bounced=outcome.bounced,
        delivered=outcome.delivered,
        unmatched=outcome.unmatched,
    )
