"""Collecting the problems of one catalog file, each placed at its field and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pydantic

from tidings.catalog.problems import CatalogProblem
from tidings.catalog.yaml_source import FieldPath, YamlDocument


@dataclass
class Report:
    """The problems found so far in ``file``, located through its parsed ``document``."""

    file: str
    document: YamlDocument = field(default_factory=lambda: YamlDocument(data=None))
    problems: list[CatalogProblem] = field(default_factory=list)

    def add(self, path: FieldPath, message: str, line: int | None = None) -> None:
        """A problem at ``path``; on the line of that field unless ``line`` is given."""
        line = self.document.line_of(path) if line is None else line
        self.problems.append(CatalogProblem(self.file, dotted(path), message, line))

    def add_in(self, file: str, path: FieldPath, message: str, line: int | None) -> None:
        """A problem in another file (a template file) that the field at ``path`` names."""
        self.problems.append(CatalogProblem(file, dotted(path), message, line))

    def add_model_errors(self, exc: pydantic.ValidationError, prefix: FieldPath = ()) -> None:
        """One problem per pydantic error, in the catalog's words."""
        for error in exc.errors(include_url=False):
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            elif error["type"] == "missing":
                message = "required field is missing"
            elif error["type"] == "value_error":
                message = str(error.get("ctx", {}).get("error", error["msg"]))
            else:
                message = error["msg"]
            self.add((*prefix, *error["loc"]), message)


def dotted(path: Iterable[str | int]) -> str:
    """``("channels", "in_app", "title")`` → ``channels.in_app.title``."""
    return ".".join(str(part) for part in path)
