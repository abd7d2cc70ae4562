"""Email's carrier: render in the event loop, build and DKIM-sign in a pool of processes,
hand to the provider.

Messages are rendered a chunk at a time, then built and signed in ``compose_pool``'s
worker processes (in the event loop when the batch is small, or the pool has none),
each chunk handed over as soon as it is signed. The provider bounds how many are sent
at once (``Capabilities.connections``). Before anything is composed, an address missing
or on the suppression list (which may have grown since planning: a bounce arrived
meanwhile) suppresses the delivery.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.channels.sending import (
    Batch,
    Later,
    Outgoing,
    Refused,
    Result,
    Sent,
)
from tidings.delivery import digests
from tidings.delivery.plan_rows import event_context
from tidings.email.compose_pool import BuildFailed, ComposePool
from tidings.email.composer import Draft, EmailComposer
from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import (
    Accepted,
    EmailProvider,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from tidings.email.suppressions import Suppressions, normalise_address
from tidings.events.service import carried_addresses
from tidings.planning import planner

log = logging.getLogger(__name__)

IN_FLIGHT = 8
"""The most messages being sent at once when the provider does not say how many it
sends at once (``Capabilities.connections``)."""

POOL_FROM = 8
"""A batch with fewer messages to send builds them in the event loop: so few are not
worth starting the compose processes for (a batch of several is: more may follow)."""

_SUPPRESSED = "email_suppressed"
"""Where ``read`` leaves the batch's suppressed addresses (``Batch.found``)."""


class EmailCarrier:
    """Carries ``email`` deliveries. ``compose_processes``: None for
    ``compose_pool.default_processes()``, 0 to build in the event loop; the processes
    start with the first batch big enough to use them, and ``close`` stops them (so
    does a minute without work)."""

    name = "email"

    def __init__(
        self,
        types: catalog.Catalog,
        suppressions: Suppressions,
        composer: EmailComposer,
        provider: EmailProvider,
        *,
        compose_processes: int | None = None,
    ) -> None:
        self._catalog = types
        self._suppressions = suppressions
        self._composer = composer
        self._provider = provider
        self.compose_pool = ComposePool(composer.builder, compose_processes)

    async def close(self) -> None:
        """Stop the compose processes (a batch still running builds in the loop)."""
        await self.compose_pool.close()

    def in_flight(self) -> int:
        # No more on their way than the provider sends at once: one handed over is
        # being sent, not waiting its turn while the lease runs out.
        return self._provider.capabilities.connections or IN_FLIGHT

    def _pooled(self, batch_size: int) -> bool:
        return batch_size >= POOL_FROM and self.compose_pool.processes > 0

    def compose_ahead(self, batch_size: int) -> int:
        return self.compose_pool.processes + 1 if self._pooled(batch_size) else 1

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        mine = [item for item in batch.items if item.delivery["channel"] == self.name]
        addresses = sorted(
            {item.recipient.email for item in mine if item.recipient.email}
            | carried_addresses(batch.events.values())
        )
        batch.found[_SUPPRESSED] = (
            await self._suppressions.among(conn, addresses) if addresses else {}
        )

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        if not item.recipient.email:
            return planner.SuppressionReason.NO_ADDRESS.value
        if normalise_address(item.recipient.email) in batch.found.get(_SUPPRESSED, {}):
            return planner.SuppressionReason.ADDRESS_SUPPRESSED.value
        return None

    async def compose(
        self, chunk: Sequence[Outgoing], now: dt.datetime, *, batch_size: int
    ) -> list[Any]:
        """Render the chunk here, then build and sign it (in the pool when the batch is
        big enough for it); a message that cannot be made is ``Refused``."""
        drafts: list[Draft] = []
        composed: list[Any] = []
        for item in chunk:
            try:
                drafts.append(self._draft(item, now))
                composed.append(None)
            except (catalog.RenderError, KeyError) as exc:
                composed.append(Refused("render_error", str(exc)))
            except ValueError as exc:  # e.g. an address no header may carry
                composed.append(Refused("invalid_message", str(exc)))
        if not drafts:
            return composed
        if self._pooled(batch_size):
            built = await self.compose_pool.build(drafts)
        else:
            built = self.compose_pool.build_here(drafts)
        results = iter(built)
        for index, slot in enumerate(composed):
            if slot is None:
                made = next(results)
                composed[index] = (
                    Refused("invalid_message", made.error)
                    if isinstance(made, BuildFailed)
                    else made
                )
        return composed

    async def hand_over(self, item: Outgoing, ready: Any) -> Result:
        email: OutgoingEmail = ready
        try:
            outcome: Accepted | SendError = await self._provider.send(email)
        except SendError as exc:
            outcome = exc
        except Exception as exc:  # a provider bug must not lose the batch's other outcomes
            log.exception("provider failed unexpectedly on %s", email.message_id)
            outcome = TransientSendError(f"{type(exc).__name__}: {exc}", provider="unknown")
        if isinstance(outcome, Accepted):
            log.debug("email %s went to %s", email.message_id, email.recipient)
            return Sent(
                state="sent",
                detail=outcome.reply or None,
                fields={
                    "message_id": email.message_id,
                    "provider": outcome.provider,
                    "provider_message_id": outcome.provider_id,
                },
                by=outcome.provider,
            )
        if isinstance(outcome, PermanentSendError):
            return Refused(
                "rejected",
                outcome.reply,
                fields={"provider": outcome.provider},
                by=outcome.provider,
            )
        return Later(outcome.reply, by=outcome.provider)

    def _draft(self, item: Outgoing, now: dt.datetime) -> Draft:
        source = item.digest if item.digest is not None else item.event
        if source is None:
            raise KeyError(f"delivery {item.delivery['id']} has neither an event nor a digest")
        type_key = source["type"]
        ntype = self._catalog.get(type_key)
        if ntype is None:
            raise KeyError(f"type {type_key!r} is not in the catalog any more")
        recipient = item.recipient
        assert recipient.email is not None
        if item.digest is not None:
            rule = digests.rule_of(ntype)
            rendered = ntype.render_digest_email(
                {"recipient": recipient.as_context(), "digest": digests.context(item.digest, rule)},
                rule,
                recipient.locale,
            )
            return self._composer.draft_rendered(
                delivery_id=item.delivery["id"],
                rendered=rendered,
                category=self._catalog.category(ntype.category),
                to_address=recipient.email,
                to_name=recipient.name,
                user_id=recipient.id,
                now=now,
            )
        assert item.event is not None
        return self._composer.draft(
            delivery_id=item.delivery["id"],
            ntype=ntype,
            category=self._catalog.category(ntype.category),
            context={**event_context(item.event), "recipient": recipient.as_context()},
            to_address=recipient.email,
            to_name=recipient.name,
            user_id=recipient.id,
            locale=recipient.locale,
            now=now,
        )
