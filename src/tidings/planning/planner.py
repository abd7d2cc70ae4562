"""The planner: pure decisions over plain data, no I/O.

For one notification and one recipient it decides each channel: deliver now, hold until
a time, fold into a digest, or suppress with a reason. The rules apply in a fixed order —
staleness, the type's conditions, channel and address, suppression list, preferences,
dedup window, throttle, digest, delay and email-if-unseen, quiet hours — and the first
"no" is the one recorded.
Stateful rules (dedup marks, throttle counts) read and update in-memory books that the
caller loaded from storage and writes back afterwards.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.catalog.rules import OverLimit, Rules, ThrottleScope
from tidings.planning.rules import digest_schedule, quiet_hours, staleness
from tidings.planning.rules.dedup import DedupBook
from tidings.planning.rules.digest_schedule import Cadence, CadenceKind
from tidings.planning.rules.quiet_hours import QuietHours
from tidings.planning.rules.throttle import ThrottleBook

IN_APP = "in_app"
EMAIL = "email"


class SuppressionReason(enum.StrEnum):
    """Machine-readable reasons a delivery does not happen."""

    CHANNEL_UNAVAILABLE = "channel_unavailable"
    NO_ADDRESS = "no_address"
    ADDRESS_SUPPRESSED = "address_suppressed"
    OPTED_OUT = "opted_out"
    STALE = "stale"
    DEDUPLICATED = "deduplicated"
    THROTTLED = "throttled"
    SEEN_IN_APP = "seen_in_app"
    ERASED = "erased"
    """The recipient was erased after the event was accepted."""
    CANCELLED = "cancelled"
    """Its producer cancelled the event before this delivery was sent."""
    CONDITION = "condition"
    """The type's (or the channel's) condition is false for this event and recipient."""


class HoldReason(enum.StrEnum):
    """Machine-readable reasons a delivery waits."""

    DELAYED = "delayed"
    QUIET_HOURS = "quiet_hours"
    WAITING_UNSEEN = "waiting_unseen"
    DIGEST = "digest"
    THROTTLED = "throttled"


class Action(enum.StrEnum):
    DELIVER = "deliver"
    HOLD = "hold"
    DIGEST = "digest"
    SUPPRESS = "suppress"


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str | None = None
    email: str | None = None
    locale: str | None = None
    timezone: str | None = None

    @classmethod
    def from_profile(cls, user_id: str, profile: Mapping[str, Any] | None) -> Recipient:
        if profile is None:
            return cls(id=user_id)
        return cls(
            id=user_id,
            name=profile.get("name"),
            email=profile.get("email"),
            locale=profile.get("locale"),
            timezone=profile.get("timezone"),
        )

    def as_context(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "locale": self.locale,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class Facts:
    """What is known about one recipient that bears on one notification."""

    mandatory: bool = False
    opted_out: frozenset[str] = field(default_factory=frozenset)
    address_suppressed: bool = False


@dataclass(frozen=True)
class Decision:
    """One channel for one recipient: deliver, or suppress with a reason."""

    channel: str
    deliver: bool
    reason: SuppressionReason | None = None


@dataclass(frozen=True)
class ChannelPlan:
    """What happens on one channel, after every rule.

    ``not_before`` is when a held delivery runs; ``silent`` writes an in-app item without
    a live push; ``unless_seen`` drops an email whose in-app item was seen by then.
    """

    channel: str
    action: Action
    reason: str | None = None
    not_before: dt.datetime | None = None
    silent: bool = False
    unless_seen: bool = False


@dataclass(frozen=True)
class DigestPlan:
    """The notification goes into a digest: which one (``kind``), due when, on which channels."""

    kind: str
    due_at: dt.datetime
    channels: tuple[str, ...]
    cadence: Cadence


@dataclass(frozen=True)
class Situation:
    """Everything the rules need about one notification for one recipient.

    ``dedup_key`` is the rendered (and hashed) dedup key when the type declares one.
    """

    now: dt.datetime
    created_at: dt.datetime
    rules: Rules
    category: str
    critical: bool = False
    quiet_hours: QuietHours | None = None
    digest_cadence: Cadence = field(default_factory=Cadence)
    dedup_key: str | None = None
    unmet: frozenset[str] = frozenset()
    """The channels whose condition is false (the type's false: every channel)."""


@dataclass
class Books:
    """The mutable state of one planning batch: dedup marks and throttle counts.

    ``owner`` is the notification being planned with them, if the caller names it: the
    marks and hits it sets carry it, so a batch planned again after a failure can tell
    its own leftovers from everyone else's. Copies with another owner share the books.
    """

    dedup: DedupBook = field(default_factory=lambda: DedupBook({}))
    throttle: ThrottleBook = field(default_factory=lambda: ThrottleBook({}))
    owner: str | None = None


@dataclass(frozen=True)
class Plan:
    channels: tuple[ChannelPlan, ...]
    digests: tuple[DigestPlan, ...] = ()


def throttle_scope(user_id: str, channel: str, category: str | None) -> str:
    """The throttle counter a delivery counts against: per channel, or per channel and category."""
    return f"{user_id}|{channel}|{category or '*'}"


def plan_recipient(
    declared: Collection[str],
    available: Collection[str],
    recipient: Recipient,
    facts: Facts | None = None,
) -> list[Decision]:
    """Decide each channel a type declares, for one recipient.

    ``declared`` are the type's channels, ``available`` those this deployment can deliver.
    Rules apply in order — channel, address, suppression list, preferences — and the
    first "no" is the recorded reason. A mandatory category ignores opt-outs, never the
    suppression list: mail to an address that bounced would bounce again.
    """
    facts = facts or Facts()
    return [_decide(channel, available, recipient, facts) for channel in sorted(declared)]


def _decide(
    channel: str, available: Collection[str], recipient: Recipient, facts: Facts
) -> Decision:
    if channel not in available:
        return Decision(channel, False, SuppressionReason.CHANNEL_UNAVAILABLE)
    if channel == EMAIL:
        if not recipient.email:
            return Decision(channel, False, SuppressionReason.NO_ADDRESS)
        if facts.address_suppressed:
            return Decision(channel, False, SuppressionReason.ADDRESS_SUPPRESSED)
    if channel in facts.opted_out and not facts.mandatory:
        return Decision(channel, False, SuppressionReason.OPTED_OUT)
    return Decision(channel, True)


def plan_notification(
    declared: Collection[str],
    available: Collection[str],
    recipient: Recipient,
    facts: Facts,
    situation: Situation,
    books: Books,
) -> Plan:
    """Decide every channel of one notification for one recipient, all rules applied."""
    rules = situation.rules
    if staleness.is_stale(situation.created_at, situation.now, rules.max_age):
        return Plan(
            tuple(
                ChannelPlan(c, Action.SUPPRESS, SuppressionReason.STALE) for c in sorted(declared)
            )
        )
    plans = {
        d.channel: ChannelPlan(d.channel, Action.DELIVER)
        if d.deliver
        else ChannelPlan(d.channel, Action.SUPPRESS, d.reason)
        for d in plan_recipient(declared, available, recipient, facts)
    }
    for channel in situation.unmet & plans.keys():
        plans[channel] = ChannelPlan(channel, Action.SUPPRESS, SuppressionReason.CONDITION)
    live = [c for c, p in plans.items() if p.action is Action.DELIVER]
    if not live:
        return Plan(tuple(plans.values()))
    if (
        rules.dedup is not None
        and situation.dedup_key is not None
        and books.dedup.check(
            situation.dedup_key, situation.now, rules.dedup.window, owner=books.owner
        )
    ):
        for channel in live:
            plans[channel] = ChannelPlan(channel, Action.SUPPRESS, SuppressionReason.DEDUPLICATED)
        return Plan(tuple(plans.values()))
    folded = _throttle(recipient, situation, books, plans, live)
    digests = _digest(recipient, situation, plans, folded)
    for channel, plan in plans.items():
        if plan.action is Action.DELIVER:
            plans[channel] = _timing(channel, recipient, situation, plans)
    return Plan(tuple(plans.values()), digests)


def _throttle(
    recipient: Recipient,
    situation: Situation,
    books: Books,
    plans: dict[str, ChannelPlan],
    live: list[str],
) -> list[str]:
    """Apply the type's throttle to each live channel; returns the channels to fold into a
    digest (the type's choice when over the cap)."""
    rule = situation.rules.throttle
    if rule is None:
        return []
    folded = []
    for channel in live:
        category = situation.category if rule.per is ThrottleScope.CATEGORY else None
        scope = throttle_scope(recipient.id, channel, category)
        if books.throttle.admit(scope, situation.now, rule.limit, rule.window, owner=books.owner):
            continue
        if rule.over is OverLimit.DIGEST:
            folded.append(channel)
            plans[channel] = ChannelPlan(channel, Action.DIGEST, HoldReason.THROTTLED)
        else:
            plans[channel] = ChannelPlan(channel, Action.SUPPRESS, SuppressionReason.THROTTLED)
    return folded


def _digest(
    recipient: Recipient, situation: Situation, plans: dict[str, ChannelPlan], folded: list[str]
) -> tuple[DigestPlan, ...]:
    """Which channels wait for a digest, which digest, and when it is due.

    A type with a digest rule digests every live channel over its window; a recipient
    who chose an hourly or daily cadence for the category gets email, and every channel
    but the inbox, in a digest at that cadence (the inbox stays on the type's own terms);
    throttled channels the type folds go to the next digest of their channel. Each
    distinct (kind, due time) is a digest.
    """
    rule = situation.rules.digest
    cadence = situation.digest_cadence
    slower = cadence.kind is not CadenceKind.INSTANT
    now = situation.now
    live = [c for c, p in plans.items() if p.action is Action.DELIVER]
    chosen = live if rule is not None else [c for c in live if c != IN_APP] if slower else []
    by_digest: dict[tuple[str, dt.datetime], list[str]] = {}
    for channel in sorted({*chosen, *folded}):
        if channel != IN_APP and slower:
            kind = "cadence"
            due = digest_schedule.due_at(now, cadence, recipient.timezone)
        else:
            kind = "rule" if channel in chosen else "throttled"
            window = rule.window if rule is not None else FOLD_WINDOW
            due = digest_schedule.window_end(now, window)
        assert due is not None
        by_digest.setdefault((kind, due), []).append(channel)
        reason = HoldReason.DIGEST if channel in chosen else HoldReason.THROTTLED
        plans[channel] = ChannelPlan(channel, Action.DIGEST, reason, not_before=due)
    return tuple(
        DigestPlan(kind=kind, due_at=due, channels=tuple(channels), cadence=cadence)
        for (kind, due), channels in by_digest.items()
    )


FOLD_WINDOW = dt.timedelta(hours=1)


def _timing(
    channel: str, recipient: Recipient, situation: Situation, plans: Mapping[str, ChannelPlan]
) -> ChannelPlan:
    """When a live channel delivers: after the type's delay, after the unseen wait for an
    email that depends on the in-app item, and outside quiet hours for non-critical email
    and plugin channels. In-app items are never held by quiet hours: they are written
    without a live push."""
    rules = situation.rules
    now = situation.now
    at = now + rules.delay if rules.delay else now
    reason: str | None = HoldReason.DELAYED if rules.delay else None
    unless_seen = False
    if channel == EMAIL and rules.email_if_unseen is not None:
        unless_seen = True
        at = max(at, now + rules.email_if_unseen)
        reason = HoldReason.WAITING_UNSEEN
    quiet = situation.quiet_hours
    silent = False
    if quiet is not None and not situation.critical:
        if channel != IN_APP:
            until = quiet_hours.quiet_until(at, quiet, recipient.timezone)
            if until is not None:
                at, reason = until, HoldReason.QUIET_HOURS
        elif quiet_hours.is_quiet(at, quiet, recipient.timezone):
            silent = True
    if at <= now:
        return ChannelPlan(channel, Action.DELIVER, silent=silent, unless_seen=unless_seen)
    return ChannelPlan(
        channel, Action.HOLD, reason, not_before=at, silent=silent, unless_seen=unless_seen
    )
