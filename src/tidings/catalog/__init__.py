"""The catalog: notification types declared as YAML files in a folder.

``catalog.load(path)`` gives a ``Catalog`` of ``NotificationType``; ``catalog.check(path)``
lists every ``CatalogProblem`` without raising.
"""

from __future__ import annotations

from tidings.catalog.loader import Catalog, check, load
from tidings.catalog.notification_type import NotificationType
from tidings.catalog.payload import PayloadError
from tidings.catalog.priority import Priority
from tidings.catalog.problems import CatalogInvalid, CatalogProblem
from tidings.catalog.templates import InAppContent, RenderError

__all__ = [
    "Catalog",
    "CatalogInvalid",
    "CatalogProblem",
    "InAppContent",
    "NotificationType",
    "PayloadError",
    "Priority",
    "RenderError",
    "check",
    "load",
]
