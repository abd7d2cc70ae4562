"""Read a catalog file's YAML into plain JSON-like data, remembering where each field was."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

FieldPath = tuple[str | int, ...]

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _JsonLikeLoader(yaml.SafeLoader):
    """A safe loader that leaves dates as strings, as they arrive in a JSON event."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class YamlSyntaxError(Exception):
    """The text is not a single well-formed YAML document."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class YamlDocument:
    """Parsed data plus, for each field path, the line of its key and its value node."""

    data: Any
    key_lines: Mapping[FieldPath, int] = field(default_factory=dict)
    value_nodes: Mapping[FieldPath, yaml.Node] = field(default_factory=dict)
    duplicate_keys: list[tuple[FieldPath, int]] = field(default_factory=list)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of ``path``, or of its closest ancestor that exists in the file."""
        for end in range(len(path), 0, -1):
            line = self.key_lines.get(path[:end])
            if line is not None:
                return line
        return None

    def template_line(self, path: FieldPath, template_line: int) -> int | None:
        """The file line of line ``template_line`` of the string value at ``path``."""
        node = self.value_nodes.get(path)
        if not isinstance(node, yaml.ScalarNode):
            return self.line_of(path)
        first = node.start_mark.line + 1
        # A block scalar's text starts on the line after its ``|`` or ``>`` indicator.
        if node.style in ("|", ">"):
            return first + template_line
        return first + template_line - 1


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raises ``YamlSyntaxError`` with the line when it cannot."""
    try:
        node, data = _compose_and_construct(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlSyntaxError(f"character #x{exc.character:04x} is not allowed", line) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlSyntaxError(
            message or "malformed document", mark.line + 1 if mark else None
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from exc
    except RecursionError as exc:
        raise YamlSyntaxError("the document is nested too deeply", None) from exc
    if node is None:
        return YamlDocument(data=None)
    index = _Index()
    try:
        index.visit(node, ())
    except RecursionError as exc:
        raise YamlSyntaxError("the document is nested too deeply", None) from exc
    return YamlDocument(
        data=data,
        key_lines=index.key_lines,
        value_nodes=index.value_nodes,
        duplicate_keys=index.duplicate_keys,
    )


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    loader = _JsonLikeLoader(text)
    try:
        node = loader.get_single_node()
        return node, None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


@dataclass
class _Index:
    key_lines: dict[FieldPath, int] = field(default_factory=dict)
    value_nodes: dict[FieldPath, yaml.Node] = field(default_factory=dict)
    duplicate_keys: list[tuple[FieldPath, int]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def visit(self, node: yaml.Node, path: FieldPath) -> None:
        # Aliases share node objects; visiting each once keeps anchors from blowing up.
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            names: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    child = (*path, key_node.value)
                    line = key_node.start_mark.line + 1
                    if key_node.value in names:
                        self.duplicate_keys.append((child, line))
                    names.add(key_node.value)
                    self._record(child, line, value_node)
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                self._record((*path, position), item.start_mark.line + 1, item)

    def _record(self, path: FieldPath, line: int, value_node: yaml.Node) -> None:
        self.key_lines.setdefault(path, line)
        self.value_nodes.setdefault(path, value_node)
        self.visit(value_node, path)
