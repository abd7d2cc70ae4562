"""Which notification types a large topic's event can be broadcast for: those whose
in-app item is the same for every subscriber and that no rule decides per recipient."""

from __future__ import annotations

from tidings import catalog
from tidings.catalog import templates
from tidings.planning import planner


def refusal(ntype: catalog.NotificationType) -> str | None:
    """Why events of this type cannot be broadcast; None when they can."""
    if planner.IN_APP not in ntype.channels:
        return "no in-app channel"
    rules = ntype.rules
    for name in ("dedup", "collapse", "throttle", "digest", "delay", "email_if_unseen"):
        if getattr(rules, name) is not None:
            return f"a {name} rule"
    if rules.condition is not None or rules.channel_conditions:
        return "a condition (decided per recipient)"
    if not _reads_only_the_event(ntype):
        return "in-app templates that read the recipient"
    return None


def _reads_only_the_event(ntype: catalog.NotificationType) -> bool:
    """Whether every in-app template renders the same for every recipient of an event.

    The catalog compiles that fact into each template (it renders such a template once
    per event); it is read here from the compiled templates.
    """
    in_app = ntype._in_app
    if in_app is None:
        return False
    found = [in_app.title, in_app.body, in_app.action_url]
    return all(t is None or t in templates._EVENT_ONLY for t in found)
