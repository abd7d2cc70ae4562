"""The carrier of a channel plugin (``tidings.channels``): render through the plugin,
then its ``send``, a few at once.

A plugin answers with the public outcomes of ``channels.interface``; they become the
sender's results here. A plugin that raises is retried (``Later``): one plugin's bug
must not lose the batch's other outcomes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog, channels
from tidings.channels.sending import (
    Batch,
    Later,
    Outgoing,
    Refused,
    Result,
    Sent,
    Unaddressed,
)
from tidings.delivery import digests
from tidings.delivery.plan_rows import event_context

log = logging.getLogger(__name__)

IN_FLIGHT = 16
"""How many deliveries of one plugin channel are on their way at once."""


class PluginCarrier:
    """Carries the deliveries of one plugin channel."""

    def __init__(self, plugin: channels.Channel, types: catalog.Catalog) -> None:
        self._plugin = plugin
        self._catalog = types

    @property
    def name(self) -> str:
        return self._plugin.name

    def in_flight(self) -> int:
        return IN_FLIGHT

    def compose_ahead(self, batch_size: int) -> int:
        return 1

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        return None

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        return None

    async def compose(
        self, chunk: Sequence[Outgoing], now: dt.datetime, *, batch_size: int
    ) -> list[Any]:
        composed: list[Any] = []
        for item in chunk:
            try:
                composed.append(self._render(item))
            except (catalog.RenderError, KeyError) as exc:
                composed.append(Refused("render_error", str(exc)))
        return composed

    def _render(self, item: Outgoing) -> tuple[channels.Delivery, Any, channels.Recipient]:
        """What the plugin sends: the payload it rendered, for whom. Raises
        ``RenderError``, or ``KeyError`` when the event or its type is gone."""
        source = item.digest if item.digest is not None else item.event
        if source is None:
            raise KeyError(f"delivery {item.delivery['id']} has neither an event nor a digest")
        ntype = self._catalog.get(source["type"])
        if ntype is None:
            raise KeyError(f"type {source['type']!r} is not in the catalog any more")
        recipient = item.recipient
        if item.digest is not None:
            rule = digests.rule_of(ntype)
            content = ntype.render_digest(
                {"recipient": recipient.as_context(), "digest": digests.context(item.digest, rule)},
                rule,
            )
            payload = self._plugin.render_digest(
                channels.Content(content.title, content.body, content.action_url)
            )
        else:
            assert item.event is not None
            context = {**event_context(item.event), "recipient": recipient.as_context()}
            payload = self._plugin.render(ntype.channel_section(self.name), context)
        delivery = channels.Delivery(
            id=item.delivery["id"],
            event_id=item.delivery["event_id"],
            type=ntype.key,
            channel=self.name,
            attempt=item.job.attempts,
            digest=item.digest is not None,
        )
        to = channels.Recipient(
            id=recipient.id,
            name=recipient.name,
            email=recipient.email,
            locale=recipient.locale,
            timezone=recipient.timezone,
        )
        return delivery, payload, to

    async def hand_over(self, item: Outgoing, ready: Any) -> Result:
        delivery, payload, to = ready
        try:
            outcome = await self._plugin.send(delivery, payload, to)
        except Exception as exc:
            log.exception("channel %s failed on %s", self.name, delivery.id)
            return Later(f"{type(exc).__name__}: {exc}", by=self.name)
        if isinstance(outcome, channels.Delivered):
            return Sent(detail=outcome.detail)
        if isinstance(outcome, channels.NoAddress):
            return Unaddressed(outcome.detail)
        if isinstance(outcome, channels.Failed):
            return Refused(outcome.reason, outcome.detail)
        return Later(outcome.detail, by=self.name)
