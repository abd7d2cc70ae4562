"""Find the catalog files in a folder, and turn them into a Catalog or a list of problems."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tidings.catalog.notification_type import NotificationType
from tidings.catalog.parse import parse_file
from tidings.catalog.problems import CatalogInvalid, CatalogProblem

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, eq=False)
class Catalog:
    """The notification types of one catalog folder, by key; iterating yields the types."""

    types: Mapping[str, NotificationType]
    source_dir: Path

    def get(self, key: str) -> NotificationType | None:
        """The type declared under ``key``, or None."""
        return self.types.get(key)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, NotificationType):
            return self.types.get(item.key) is item
        return isinstance(item, str) and item in self.types

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator[NotificationType]:
        return iter(self.types.values())


def check(path: str | Path) -> list[CatalogProblem]:
    """Every problem in the catalog folder at ``path``; empty when it would load."""
    return _scan(Path(path))[1]


def load(path: str | Path) -> Catalog:
    """Load the catalog folder at ``path``.

    Raises ``CatalogInvalid`` carrying the problems ``check`` reports.
    """
    source_dir = Path(path)
    types, problems = _scan(source_dir)
    if problems:
        raise CatalogInvalid(problems)
    by_key = {notification_type.key: notification_type for notification_type in types}
    return Catalog(types=MappingProxyType(dict(sorted(by_key.items()))), source_dir=source_dir)


def _scan(root: Path) -> tuple[list[NotificationType], list[CatalogProblem]]:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        return [], [CatalogProblem(str(root), "", f"the catalog folder {what}")]
    files = _catalog_files(root)
    if not files:
        message = "the catalog folder holds no notification types (*.yaml or *.yml files)"
        return [], [CatalogProblem(str(root), "", message)]
    types: list[NotificationType] = []
    problems: list[CatalogProblem] = []
    declared_in: dict[str, str] = {}
    for file in files:
        parsed = parse_file(file, str(file))
        problems.extend(parsed.problems)
        if parsed.key is not None:
            first = declared_in.setdefault(parsed.key, str(file))
            if first != str(file):
                message = f"duplicate key {parsed.key!r}: also declared in {first}"
                problems.append(CatalogProblem(str(file), "key", message, parsed.key_line))
        if parsed.notification_type is not None:
            types.append(parsed.notification_type)
    return types, problems


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
