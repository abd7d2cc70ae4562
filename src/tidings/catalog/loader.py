"""Find the catalog files in a folder, and turn them into a Catalog or a list of problems.

Every ``*.yaml`` / ``*.yml`` file declares one notification type, except
``categories.yaml`` at the top of the folder, which declares the categories.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tidings.catalog.categories import FILE_NAMES, Category, parse_categories, undeclared
from tidings.catalog.notification_type import NotificationType
from tidings.catalog.parse import parse_file
from tidings.catalog.problems import CatalogInvalid, CatalogProblem
from tidings.channels import registry
from tidings.channels.interface import Channel

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class _Contents:
    """What one load of the folder declared: swapped as a whole, never edited."""

    types: Mapping[str, NotificationType]
    categories: Mapping[str, Category]


class Catalog:
    """The notification types of one catalog folder, by key; iterating yields the types.

    Services keep the one ``Catalog`` of their process and read it on every use, so a
    reload (``adopt``) is seen by all of them at once: the types and categories are held
    in one reference that is replaced, never changed in place.
    """

    def __init__(
        self,
        types: Mapping[str, NotificationType],
        source_dir: Path,
        categories: Mapping[str, Category] | None = None,
    ) -> None:
        self.source_dir = source_dir
        self._contents = _Contents(types, MappingProxyType(dict(categories or {})))

    @property
    def types(self) -> Mapping[str, NotificationType]:
        """The types, by key."""
        return self._contents.types

    @property
    def categories(self) -> Mapping[str, Category]:
        """The categories declared in ``categories.yaml``, by name."""
        return self._contents.categories

    def adopt(self, newer: Catalog) -> None:
        """Serve ``newer``'s types and categories from now on. One reference changes, so
        a reader sees either the old catalog or the new one, never a mix of the two."""
        self._contents = newer._contents

    def category(self, name: str) -> Category:
        """The category ``name``: as declared, or an optional one when undeclared."""
        declared = self.categories.get(name)
        return declared if declared is not None else undeclared(name)

    def get(self, key: str) -> NotificationType | None:
        """The type declared under ``key``, or None."""
        return self.types.get(key)

    def __contains__(self, item: object) -> bool:
        types = self.types
        if isinstance(item, NotificationType):
            return types.get(item.key) is item
        return isinstance(item, str) and item in types

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator[NotificationType]:
        return iter(self.types.values())


def check(path: str | Path, channels: Mapping[str, Channel] | None = None) -> list[CatalogProblem]:
    """Every problem in the catalog folder at ``path``; empty when it would load.

    ``channels`` are the plugin channels types may use: the installed ones by default.
    """
    return _scan(Path(path), _plugins(channels)).problems


def load(path: str | Path, channels: Mapping[str, Channel] | None = None) -> Catalog:
    """Load the catalog folder at ``path``, with the plugin ``channels`` (as for ``check``).

    Raises ``CatalogInvalid`` carrying the problems ``check`` reports.
    """
    source_dir = Path(path)
    scanned = _scan(source_dir, _plugins(channels))
    if scanned.problems:
        raise CatalogInvalid(scanned.problems)
    by_key = {notification_type.key: notification_type for notification_type in scanned.types}
    return Catalog(
        types=MappingProxyType(dict(sorted(by_key.items()))),
        source_dir=source_dir,
        categories=MappingProxyType(scanned.categories),
    )


@dataclass
class _Scan:
    types: list[NotificationType] = field(default_factory=list)
    categories: dict[str, Category] = field(default_factory=dict)
    problems: list[CatalogProblem] = field(default_factory=list)


def _plugins(channels: Mapping[str, Channel] | None) -> Mapping[str, Channel]:
    return registry.installed() if channels is None else channels


def _scan(root: Path, plugins: Mapping[str, Channel]) -> _Scan:
    scan = _Scan()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        scan.problems.append(CatalogProblem(str(root), "", f"the catalog folder {what}"))
        return scan
    categories_files = [root / name for name in FILE_NAMES if (root / name).is_file()]
    for file in categories_files[1:]:
        message = f"two categories files: also {categories_files[0]}"
        scan.problems.append(CatalogProblem(str(file), "", message))
    categories_readable = False
    if categories_files:
        scan.categories, problems = parse_categories(
            categories_files[0], str(categories_files[0]), registry.names(plugins)
        )
        scan.problems.extend(problems)
        categories_readable = not problems
    files = [file for file in _catalog_files(root) if file not in categories_files]
    if not files:
        message = "the catalog folder holds no notification types (*.yaml or *.yml files)"
        scan.problems.append(CatalogProblem(str(root), "", message))
        return scan
    declared_in: dict[str, str] = {}
    problems = scan.problems
    types = scan.types
    for file in files:
        parsed = parse_file(file, str(file), root, plugins)
        problems.extend(parsed.problems)
        if parsed.key is not None:
            first = declared_in.setdefault(parsed.key, str(file))
            if first != str(file):
                message = f"duplicate key {parsed.key!r}: also declared in {first}"
                problems.append(CatalogProblem(str(file), "key", message, parsed.key_line))
        if parsed.notification_type is not None:
            types.append(parsed.notification_type)
            category = parsed.notification_type.category
            # Once categories are declared, a typo ("securty") must not quietly turn a
            # mandatory category into one people can switch off.
            if categories_readable and category not in scan.categories:
                message = f"category {category!r} is not declared in {categories_files[0].name}"
                problems.append(CatalogProblem(str(file), "category", message))
    return scan


def _catalog_files(root: Path) -> list[Path]:
    found = [
        file
        for file in root.rglob("*")
        if file.suffix in SUFFIXES
        and file.is_file()
        # Hidden files and folders (.git, editor swap files) are not part of the catalog.
        and not any(part.startswith(".") for part in file.relative_to(root).parts)
    ]
    return sorted(found, key=lambda file: file.relative_to(root).as_posix())
