"""The fenced code blocks of the documentation, as markdown-it's CommonMark parser sees them.

A block's info string is its language, then words that say how the docs tests treat it:

- ``notest``: illustrative only (a fragment, a diagram, a benchmark that runs for
  minutes, a multi-host deployment); never run. Every other block is run, so a block
  that is neither runnable nor marked fails the suite instead of slipping through.
- ``key="value"`` options, read by the runner of that language (``under="rules"`` for a
  YAML fragment of a notification type, ``request="PUT /v1/..."`` for a JSON body).

GitHub and other renderers read only the first word, so these stay invisible to readers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
ILLUSTRATIVE = "notest"

SHELL = frozenset({"sh", "bash", "console", "shell"})
PYTHON = frozenset({"python", "py"})
YAML = frozenset({"yaml", "yml"})
HTTP = frozenset({"http"})
JSON = frozenset({"json"})
RUNNABLE = SHELL | PYTHON | YAML | HTTP | JSON

_OPTION = re.compile(r"^([A-Za-z_][\w-]*)=(.*)$", re.S)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language and markers, and its text."""

    path: Path
    line: int  # of the opening fence, 1-based, as an editor shows it
    language: str
    tags: frozenset[str]
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""

    @property
    def illustrative(self) -> bool:
        return ILLUSTRATIVE in self.tags

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE

    def __str__(self) -> str:
        try:
            where = self.path.relative_to(ROOT)
        except ValueError:
            where = self.path
        return f"{where}:{self.line} ({self.language or 'no language'})"


def documents() -> list[Path]:
    """Every page whose examples the suite runs: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def collect(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    return [
        _block(path, token.info, token.content, token.map[0] + 1)
        for token in tokens
        if token.type == "fence" and token.map
    ]


def _block(path: Path, info: str, content: str, line: int) -> Block:
    words = shlex.split(info) if info.strip() else []
    language = words[0].lower() if words else ""
    tags: set[str] = set()
    options: dict[str, str] = {}
    for word in words[1:]:
        if match := _OPTION.match(word):
            options[match.group(1)] = match.group(2)
        else:
            tags.add(word)
    return Block(path, line, language, frozenset(tags), MappingProxyType(options), content)


def unaccounted(blocks: list[Block]) -> Iterator[Block]:
    """Blocks that are neither run (a runnable language) nor marked illustrative."""
    return (b for b in blocks if not b.illustrative and not b.runnable)
