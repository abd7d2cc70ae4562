"""Locale tags: normalising what recipients and catalog files say, and falling back.

Tags are BCP 47-like, written with hyphens (``fr-CA``, ``zh-Hant-TW``); underscores
(``fr_CA``) and any letter case are accepted. A request falls back by dropping subtags
from the end (``fr-CA`` → ``fr``), then to the default templates.
"""

from __future__ import annotations

import re

from babel import Locale, UnknownLocaleError

_SUBTAG = re.compile(r"[A-Za-z0-9]{1,8}")


def normalise(tag: str | None) -> str | None:
    """``fr_ca`` → ``fr-CA``; None when ``tag`` is not a locale tag at all.

    A POSIX suffix (``fr_FR.UTF-8``, ``de_DE@euro``) is ignored.
    """
    if not isinstance(tag, str):
        return None
    core = re.split(r"[.@]", tag.strip(), maxsplit=1)[0]
    parts = re.split(r"[-_]", core)
    if not parts or not all(_SUBTAG.fullmatch(part) for part in parts):
        return None
    language, *rest = parts
    if not language.isalpha() or not 2 <= len(language) <= 8:
        return None
    out = [language.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())  # script: Hant
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())  # region: CA, 419
        else:
            out.append(part.lower())
    return "-".join(out)


def fallbacks(tag: str | None) -> list[str]:
    """The tags to try for a request, most specific first: ``fr-CA`` → ``[fr-CA, fr]``."""
    normal = normalise(tag)
    if normal is None:
        return []
    parts = normal.split("-")
    return ["-".join(parts[:end]) for end in range(len(parts), 0, -1)]


def language(tag: str) -> str:
    """The language subtag of a normalised tag: ``fr`` for ``fr-CA``."""
    return tag.split("-", 1)[0]


def to_babel(tag: str | None) -> Locale | None:
    """The Babel locale for a tag, or None when Babel has no data for it."""
    normal = normalise(tag)
    if normal is None:
        return None
    try:
        return Locale.parse(normal.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def formatting_tag(requested: str | None, template_tag: str) -> str:
    """The locale to format dates and numbers in, for templates written in ``template_tag``.

    The requested locale when it speaks the templates' language (``fr-CA`` reading French
    templates gets Canadian formats) and Babel knows it; else the templates' own locale,
    so that a German reader of English templates never sees "3. Mai" in an English sentence.
    """
    normal = normalise(requested)
    if (
        normal is not None
        and language(normal) == language(template_tag)
        and to_babel(normal) is not None
    ):
        return normal
    return template_tag
