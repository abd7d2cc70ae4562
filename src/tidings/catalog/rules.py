"""A type's rules, compiled: how often and when its notifications reach a recipient.

The catalog only declares and renders them; the planner applies them (dedup, throttle,
digest, delay, email-if-unseen, staleness) and the inbox collapses items. Key templates
render over the usual context (``data``, ``actor``, ``recipient``, ``event``).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from jinja2 import Template, TemplateSyntaxError

from tidings.catalog.conditions import Condition, compile_condition
from tidings.catalog.model import (
    RulesCollapseFile,
    RulesDedupFile,
    RulesDigestFile,
    RulesFile,
    RulesThrottleFile,
)
from tidings.catalog.report import Report
from tidings.catalog.templates import compile_template
from tidings.catalog.yaml_source import FieldPath

_RULES: FieldPath = ("rules",)
# Rendered keys land in indexed columns of 400 characters, with room to spare.
KEY_MAX = 200
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class DedupRule:
    """One notification per rendered ``key`` and recipient within ``window``."""

    key: Template
    window: timedelta


@dataclass(frozen=True)
class CollapseRule:
    """Unread inbox items with the same rendered ``key`` merge into the newest one.

    ``title`` (and ``body``, else the in-app body) render with ``group`` in the context.
    """

    key: Template
    title: Template
    body: Template | None


class ThrottleScope(enum.StrEnum):
    """What a throttle counts: the recipient's notifications on one channel, or in one category."""

    CHANNEL = "channel"
    CATEGORY = "category"


class OverLimit(enum.StrEnum):
    """What happens to a notification over the cap: dropped (and recorded) or digested."""

    DROP = "drop"
    DIGEST = "digest"


@dataclass(frozen=True)
class ThrottleRule:
    """At most ``limit`` notifications per recipient and ``per`` scope within ``window``."""

    limit: int
    window: timedelta
    per: ThrottleScope
    over: OverLimit


@dataclass(frozen=True)
class DigestRule:
    """Notifications with the same rendered ``key`` gathered for ``window``, sent as one.

    ``key`` None means one digest per type. ``title``, ``body`` and ``subject`` render
    with ``recipient`` and ``digest`` in the context; ``show`` items are listed.
    """

    key: Template | None
    window: timedelta
    show: int
    title: Template
    body: Template | None
    subject: Template | None


@dataclass(frozen=True)
class Rules:
    """Every rule of one type; None where the type declares none."""

    dedup: DedupRule | None = None
    collapse: CollapseRule | None = None
    throttle: ThrottleRule | None = None
    digest: DigestRule | None = None
    delay: timedelta | None = None
    email_if_unseen: timedelta | None = None
    max_age: timedelta | None = None
    condition: Condition | None = None
    """Whether the type goes to a recipient at all."""
    channel_conditions: Mapping[str, Condition] = field(default_factory=dict)
    """Whether each of these channels does."""

    def conditions(self) -> list[Condition]:
        """Every condition, the type's first."""
        found = [] if self.condition is None else [self.condition]
        return [*found, *(self.channel_conditions[c] for c in sorted(self.channel_conditions))]


# For notifications a throttle folds into a digest when their type declares none.
FALLBACK_DIGEST = DigestRule(
    key=None,
    window=timedelta(hours=1),
    show=5,
    title=compile_template(
        "{{ digest.count }} new notification{{ '' if digest.count == 1 else 's' }}"
    ),
    body=None,
    subject=None,
)


def compile_rules(report: Report, model: RulesFile, channels: frozenset[str]) -> Rules | None:
    """Compile ``rules`` for a type on ``channels``; None (problems reported) when it cannot."""
    problems_before = len(report.problems)
    _check_channels(report, model, channels)
    _check_timing(report, model)
    rules = Rules(
        dedup=None if model.dedup is None else _dedup(report, model.dedup),
        collapse=None if model.collapse is None else _collapse(report, model.collapse),
        throttle=None if model.throttle is None else _throttle(model.throttle),
        digest=None if model.digest is None else _digest(report, model.digest),
        delay=model.delay,
        email_if_unseen=model.email_if_unseen,
        max_age=model.max_age,
        condition=None
        if model.condition is None
        else _condition(report, (*_RULES, "condition"), model.condition),
        channel_conditions=_channel_conditions(report, model, channels),
    )
    return None if len(report.problems) > problems_before else rules


def _channel_conditions(
    report: Report, model: RulesFile, channels: frozenset[str]
) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for channel, source in model.channel_conditions.items():
        path = (*_RULES, "channel_conditions", channel)
        if channel not in channels:
            report.add(path, f"names a channel the type does not declare ({channel})")
            continue
        condition = _condition(report, path, source)
        if condition is not None:
            found[channel] = condition
    return found


def _condition(report: Report, path: FieldPath, source: str) -> Condition | None:
    """Compile the condition at ``path``; a syntax error is reported at its line."""
    field = ".".join(str(part) for part in path)
    return _compiled(report, path, lambda: compile_condition(field, source), "expression")


def key_templates(rules: Rules) -> dict[str, Template]:
    """The key templates of ``rules``, by the catalog field they come from."""
    found = {
        "rules.dedup.key": None if rules.dedup is None else rules.dedup.key,
        "rules.collapse.key": None if rules.collapse is None else rules.collapse.key,
        "rules.digest.key": None if rules.digest is None else rules.digest.key,
    }
    return {name: template for name, template in found.items() if template is not None}


_Compiled = TypeVar("_Compiled")


def compile_field(report: Report, path: FieldPath, source: str) -> Template | None:
    """Compile the template at ``path``; a syntax error is reported at its line in the file."""
    return _compiled(report, path, lambda: compile_template(source), "template")


def _compiled(
    report: Report, path: FieldPath, compile_it: Callable[[], _Compiled], what: str
) -> _Compiled | None:
    """What ``compile_it`` makes of the Jinja source at ``path``; None, with the problem
    reported at its line in the file, when it cannot."""
    try:
        return compile_it()
    except TemplateSyntaxError as exc:
        line = report.document.template_line(path, exc.lineno)
        report.add(path, exc.message or f"invalid {what}", line)
    except RecursionError:
        report.add(path, f"the {what} is nested too deeply")
    return None


def _check_channels(report: Report, model: RulesFile, channels: frozenset[str]) -> None:
    if model.collapse is not None and "in_app" not in channels:
        report.add((*_RULES, "collapse"), "needs the in_app channel")
    if model.email_if_unseen is not None and not {"in_app", "email"} <= channels:
        report.add((*_RULES, "email_if_unseen"), "needs both the in_app and email channels")


def _check_timing(report: Report, model: RulesFile) -> None:
    # Staleness is measured from the event: a wait as long as max_age always ends stale.
    if model.max_age is None:
        return
    if model.delay is not None and model.delay >= model.max_age:
        report.add(
            (*_RULES, "max_age"),
            "is not longer than rules.delay: every notification would be stale",
        )
    if model.email_if_unseen is not None and model.email_if_unseen >= model.max_age:
        report.add(
            (*_RULES, "max_age"),
            "is not longer than rules.email_if_unseen: every email would be stale",
        )


def _dedup(report: Report, model: RulesDedupFile) -> DedupRule | None:
    key = compile_field(report, (*_RULES, "dedup", "key"), model.key)
    return None if key is None else DedupRule(key=key, window=model.window)


def _collapse(report: Report, model: RulesCollapseFile) -> CollapseRule | None:
    path = (*_RULES, "collapse")
    key = compile_field(report, (*path, "key"), model.key)
    title = compile_field(report, (*path, "title"), model.title)
    body = None
    if model.body is not None:
        body = compile_field(report, (*path, "body"), model.body)
        if body is None:
            return None
    if key is None or title is None:
        return None
    return CollapseRule(key=key, title=title, body=body)


def _throttle(model: RulesThrottleFile) -> ThrottleRule:
    return ThrottleRule(
        limit=model.limit,
        window=model.window,
        per=ThrottleScope(model.per),
        over=OverLimit(model.over),
    )


def _digest(report: Report, model: RulesDigestFile) -> DigestRule | None:
    path = (*_RULES, "digest")
    optional = {"key": model.key, "body": model.body, "subject": model.subject}
    compiled = {
        name: compile_field(report, (*path, name), source)
        for name, source in optional.items()
        if source is not None
    }
    title = compile_field(report, (*path, "title"), model.title)
    if title is None or None in compiled.values():
        return None
    return DigestRule(
        key=compiled.get("key"),
        window=model.window,
        show=model.show,
        title=title,
        body=compiled.get("body"),
        subject=compiled.get("subject"),
    )


def storable_key(key: str) -> str:
    """``key`` as stored: a long key, or one holding what a database column cannot hold
    (NUL, unpaired surrogates), becomes a readable prefix and a digest of the whole.

    Equal keys stay equal, and different keys stay different.
    """
    if len(key) <= KEY_MAX and not _UNSTORABLE.search(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = _UNSTORABLE.sub("\ufffd", key[: KEY_MAX - len(digest) - 1])
    return f"{prefix}#{digest}"
