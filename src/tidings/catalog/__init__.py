"""The catalog: notification types declared as YAML files in a folder.

``catalog.load(path)`` gives a ``Catalog`` of ``NotificationType`` (and of ``Category``,
from ``categories.yaml``); ``catalog.check(path)`` lists every ``CatalogProblem`` without
raising. The format is described in docs/catalog.md.
"""

from __future__ import annotations

from tidings.catalog.categories import Category
from tidings.catalog.html_text import html_to_text
from tidings.catalog.loader import Catalog, check, load
from tidings.catalog.notification_type import Deprecation, NotificationType, deprecation_headers
from tidings.catalog.payload import PayloadError
from tidings.catalog.priority import Priority
from tidings.catalog.problems import CatalogInvalid, CatalogProblem
from tidings.catalog.rules import (
    FALLBACK_DIGEST,
    CollapseRule,
    DedupRule,
    DigestRule,
    OverLimit,
    Rules,
    ThrottleRule,
    ThrottleScope,
)
from tidings.catalog.templates import InAppContent, RenderError

__all__ = [
    "FALLBACK_DIGEST",
    "Catalog",
    "CatalogInvalid",
    "CatalogProblem",
    "Category",
    "CollapseRule",
    "DedupRule",
    "Deprecation",
    "DigestRule",
    "InAppContent",
    "NotificationType",
    "OverLimit",
    "PayloadError",
    "Priority",
    "RenderError",
    "Rules",
    "ThrottleRule",
    "ThrottleScope",
    "check",
    "deprecation_headers",
    "html_to_text",
    "load",
]
