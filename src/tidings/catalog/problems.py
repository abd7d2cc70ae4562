"""What can be wrong with a catalog, reported as values rather than raised one at a time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogProblem:
    """One thing wrong with a catalog file, located as precisely as the source allows.

    ``field`` is the dotted path inside the file (``channels.in_app.title``), or empty
    when the problem concerns the whole file or folder.
    """

    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class CatalogInvalid(Exception):
    """Raised by ``load`` when the catalog has problems; ``str()`` lists one per line."""

    def __init__(self, problems: Iterable[CatalogProblem]) -> None:
        self.problems: list[CatalogProblem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
