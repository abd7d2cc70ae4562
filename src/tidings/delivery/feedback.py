"""Provider feedback recorded: delivery states and the email suppression list."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.delivery import repository
from tidings.delivery.states import DeliveryState
from tidings.email import feedback, feedback_sns
from tidings.email.suppressions import SuppressionCause, Suppressions
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.settings import Settings

log = logging.getLogger(__name__)

_CAUSES = {
    feedback.FeedbackKind.HARD_BOUNCE: SuppressionCause.HARD_BOUNCE,
    feedback.FeedbackKind.COMPLAINT: SuppressionCause.COMPLAINT,
}
# A soft bounce or a complaint leaves the delivery as it is: the message was sent, and
# for a complaint, delivered; only the address's future changes.
_TARGETS = {
    feedback.FeedbackKind.HARD_BOUNCE: (DeliveryState.BOUNCED, "hard_bounce"),
    feedback.FeedbackKind.DELIVERED: (DeliveryState.DELIVERED, None),
}


@dataclass(frozen=True)
class FeedbackConfig:
    """What the feedback webhooks verify with."""

    generic_secret: str
    sns_certificates: feedback_sns.CertificateStore
    sns_topic_arns: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackConfig:
        """``webhook_secret``, ``sns_certificates_dir`` and ``sns_topic_arns``."""
        return cls(
            generic_secret=settings.webhook_secret,
            sns_certificates=feedback_sns.CertificateStore(directory=settings.sns_certificates_dir),
            sns_topic_arns=frozenset(settings.sns_topic_arns),
        )


@dataclass(frozen=True)
class FeedbackOutcome:
    """What one call changed: items seen, suppressions asked, deliveries moved."""

    recorded: int = 0
    suppressed: int = 0
    bounced: int = 0
    delivered: int = 0
    unmatched: int = 0


class FeedbackRecorder:
    """Turns verified provider feedback into delivery states and suppressions."""

    def __init__(self, db: Database, clock: Clock, suppressions: Suppressions) -> None:
        self._db = db
        self.clock = clock
        self._suppressions = suppressions

    async def record(self, items: Sequence[feedback.Feedback]) -> FeedbackOutcome:
        """Record a batch of feedback in one transaction; the same batch again changes nothing.

        Hard bounces and complaints put the address on the suppression list (first cause
        wins); a hard bounce moves its delivery to bounced, a delivery report to
        delivered, each only where the state machine allows it.
        """
        now = self.clock.now()
        suppressed = bounced = delivered = unmatched = 0
        async with self._db.transaction() as conn:
            for item in items:
                cause = _CAUSES.get(item.kind)
                if cause is not None:
                    await self._suppressions.add(
                        conn, item.address, cause, detail=item.detail, provider=item.provider
                    )
                    suppressed += 1
                if item.kind is feedback.FeedbackKind.SOFT_BOUNCE:
                    log.info(
                        "soft bounce from %s for message %s: %s",
                        item.provider,
                        item.message_id or item.provider_message_id,
                        item.detail,
                    )
                target = _TARGETS.get(item.kind)
                if target is None:
                    continue
                row = await repository.find_by_message(
                    conn,
                    message_id=item.message_id,
                    provider_message_id=item.provider_message_id,
                )
                if row is None:
                    unmatched += 1
                    continue
                state, reason = target
                change = repository.StateChange(
                    delivery_id=row["id"],
                    target=state,
                    reason=reason,
                    detail=item.detail,
                    stage="feedback",
                )
                if await repository.advance(self._db, conn, [change], now):
                    bounced += state is DeliveryState.BOUNCED
                    delivered += state is DeliveryState.DELIVERED
        return FeedbackOutcome(
            recorded=len(items),
            suppressed=suppressed,
            bounced=bounced,
            delivered=delivered,
            unmatched=unmatched,
        )
