"""Categories: what preferences are set per, declared in the catalog's ``categories.yaml``.

The file is optional; a category a type uses but the file does not declare is an
ordinary one (not mandatory, no description, no defaults).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import pydantic

from tidings.catalog import locales
from tidings.catalog.model import CATEGORY_PATTERN, CategoriesFile, CategoryFile
from tidings.catalog.problems import CatalogProblem
from tidings.catalog.report import Report
from tidings.catalog.yaml_source import YamlSyntaxError, parse_yaml

FILE_NAMES = ("categories.yaml", "categories.yml")


@dataclass(frozen=True)
class DigestDefault:
    """How often a category reaches recipients who chose nothing: ``hour`` is local."""

    cadence: Literal["instant", "hourly", "daily"]
    hour: int = 9


@dataclass(frozen=True)
class Category:
    """A category of notifications; a recipient cannot opt out of a mandatory one.

    ``default_channels`` and ``default_digest`` are the catalog's defaults, under the
    choices of tenants and recipients.
    """

    name: str
    description: str
    mandatory: bool
    default_channels: Mapping[str, bool] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    default_digest: DigestDefault | None = None
    title: str = ""
    """What recipients read for it; empty when the catalog gives none."""
    titles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """The title in other languages, by normalised locale tag (``fr``, ``pt-BR``)."""

    def title_for(self, locale: str | None) -> str:
        """The title in the closest language to ``locale`` (``fr-CA`` → ``fr``), else the
        default title, else the category's name."""
        for tag in locales.fallbacks(locale):
            if tag in self.titles:
                return self.titles[tag]
        return self.title or self.name


def undeclared(name: str) -> Category:
    """The category ``name`` when the catalog does not declare it: optional."""
    return Category(name=name, description="", mandatory=False)


def parse_categories(
    path: Path, display: str, channels: Collection[str] = ("in_app", "email")
) -> tuple[dict[str, Category], list[CatalogProblem]]:
    """Read ``categories.yaml``: the categories by name, or the problems that prevent it.

    ``channels`` are the channel names default switches may name.
    """
    report = Report(display)
    try:
        report.document = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        report.add((), f"cannot read the file: {exc}")
        return {}, report.problems
    except YamlSyntaxError as exc:
        report.add((), f"invalid YAML: {exc.message}", exc.line)
        return {}, report.problems
    for duplicate, line in report.document.duplicate_keys:
        report.add(duplicate, "appears more than once", line)
    data = report.document.data
    if not isinstance(data, dict):
        report.add((), "expected a mapping with one field, categories")
        return {}, report.problems
    try:
        model = CategoriesFile.model_validate(data)
    except pydantic.ValidationError as exc:
        report.add_model_errors(exc)
        return {}, report.problems
    for name, entry in model.categories.items():
        if not re.fullmatch(CATEGORY_PATTERN, name) or len(name) > 100:
            report.add(("categories", name), f"{name!r} should match pattern {CATEGORY_PATTERN!r}")
        for channel, enabled in entry.channels.items():
            if channel not in channels:
                message = f"unknown channel {channel!r}: channels here are {', '.join(channels)}"
                report.add(("categories", name, "channels", channel), message)
            elif entry.mandatory and not enabled:
                message = "a mandatory category cannot be off, not even by default"
                report.add(("categories", name, "channels", channel), message)
        for key in entry.locales:
            tag = locales.normalise(key)
            if tag is None or locales.to_babel(tag) is None:
                message = f"{key!r} is not a known locale (e.g. fr, fr-CA, pt-BR)"
                report.add(("categories", name, "locales", key), message)
    if report.problems:
        return {}, report.problems
    categories = {name: _category(name, entry) for name, entry in sorted(model.categories.items())}
    return categories, []


def _category(name: str, entry: CategoryFile) -> Category:
    digest = entry.digest
    return Category(
        name=name,
        description=entry.description,
        mandatory=entry.mandatory,
        default_channels=MappingProxyType({str(k): v for k, v in entry.channels.items()}),
        default_digest=(
            None
            if digest is None
            else DigestDefault(digest.cadence, 9 if digest.hour is None else digest.hour)
        ),
        title=entry.title or "",
        titles=MappingProxyType(
            {str(locales.normalise(key)): found.title for key, found in entry.locales.items()}
        ),
    )
