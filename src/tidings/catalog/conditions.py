"""Conditions: whether a type (or one of its channels) goes to a recipient at all,
as a Jinja expression over the event and the recipient's profile.

``data.invoice.amount > 1000`` or ``recipient.locale == "fr"``: the language of the
catalog's templates, in the same sandbox (no Python internals, nothing mutated), so an
author writes one syntax and Tidings ships no second interpreter. An expression is
compiled when the catalog loads (a syntax error is ``file:line: field: message``) and,
by ``tidings catalog check``, evaluated on the type's example: a field the example does
not have, or a value other than true or false, is reported there. At planning an
expression that fails (a field this event lacks) counts as false: the delivery is
suppressed with reason ``condition``, never sent by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.runtime import Undefined

from tidings.catalog import templates


@dataclass(frozen=True)
class Condition:
    """One compiled condition; ``field`` is where it is written (``rules.condition``)."""

    field: str
    source: str
    _lenient: Any
    _strict: Any

    def holds(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition is true for ``context``; false when it cannot be
        evaluated (a field the event does not have)."""
        try:
            value = self._lenient(**context)
        except Exception:
            return False
        return value is True or (not isinstance(value, Undefined) and bool(value))

    def check(self, context: Mapping[str, Any]) -> str | None:
        """What is wrong with the condition on ``context`` (the type's example): a name it
        does not have, a failure, or a value that is not true or false; None if nothing."""
        try:
            value = self._strict(**context)
        except Exception as exc:
            return f"fails on the example: {exc}"
        if not isinstance(value, bool):
            return f"gives {value!r} for the example, not true or false"
        return None


def compile_condition(field: str, source: str) -> Condition:
    """Compile ``source``; raises ``TemplateSyntaxError`` (with ``lineno``) when bad."""
    if not source.strip():
        raise TemplateSyntaxError("the condition is empty", 1)
    lenient = templates.text_environment().compile_expression(source)
    strict = _STRICT.compile_expression(source)
    return Condition(field, source, lenient, strict)


def _strict_environment() -> Any:
    environment = templates.text_environment().overlay(undefined=StrictUndefined)
    return environment


_STRICT = _strict_environment()
