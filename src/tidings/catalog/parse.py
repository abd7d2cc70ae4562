"""Turn one catalog file into a NotificationType, or into the problems that prevent it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from jinja2 import Template, TemplateSyntaxError
from jsonschema import Draft202012Validator

from tidings.catalog import payload
from tidings.catalog.model import InAppChannelFile, NotificationTypeFile
from tidings.catalog.notification_type import NotificationType
from tidings.catalog.problems import CatalogProblem
from tidings.catalog.templates import InAppTemplates, RenderError, compile_template
from tidings.catalog.yaml_source import FieldPath, YamlDocument, YamlSyntaxError, parse_yaml

EXAMPLE_ACTOR = {"id": "u-example", "name": "Example"}
EXAMPLE_RECIPIENT = {"id": "u-example", "name": "Example"}

_IN_APP = ("channels", "in_app")


@dataclass(frozen=True)
class ParsedFile:
    """The outcome for one file: a type when there were no problems."""

    notification_type: NotificationType | None
    problems: list[CatalogProblem]
    key: str | None = None  # the declared key, even when the file has other problems
    key_line: int | None = None


@dataclass
class _Report:
    file: str
    document: YamlDocument = field(default_factory=lambda: YamlDocument(data=None))
    problems: list[CatalogProblem] = field(default_factory=list)

    def add(self, path: FieldPath, message: str, line: int | None = None) -> None:
        line = self.document.line_of(path) if line is None else line
        self.problems.append(CatalogProblem(self.file, _dotted(path), message, line))


def parse_file(path: Path, display: str) -> ParsedFile:
    """Read, validate and compile the catalog file at ``path``; ``display`` names it."""
    report = _Report(display)
    try:
        document = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        report.add((), f"cannot read the file: {exc}")
        return ParsedFile(None, report.problems)
    except YamlSyntaxError as exc:
        report.add((), f"invalid YAML: {exc.message}", exc.line)
        return ParsedFile(None, report.problems)
    report.document = document
    for duplicate, line in document.duplicate_keys:
        report.add(duplicate, "appears more than once", line)
    if not isinstance(document.data, dict):
        report.add((), "expected a mapping of fields (key, category, schema, …) at the top level")
        return ParsedFile(None, report.problems)
    declared_key = document.data.get("key")
    key = declared_key if isinstance(declared_key, str) else None
    key_line = document.line_of(("key",))
    try:
        model = NotificationTypeFile.model_validate(document.data)
    except pydantic.ValidationError as exc:
        _report_model_errors(report, exc)
        return ParsedFile(None, report.problems, key, key_line)
    notification_type = _build(model, report)
    if report.problems:
        return ParsedFile(None, report.problems, key, key_line)
    return ParsedFile(notification_type, [], key, key_line)


def _report_model_errors(report: _Report, exc: pydantic.ValidationError) -> None:
    for error in exc.errors(include_url=False):
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
        else:
            message = error["msg"]
        report.add(tuple(error["loc"]), message)


def _build(model: NotificationTypeFile, report: _Report) -> NotificationType | None:
    validator = _compile_schema(report, model.payload_schema)
    example_ok = _check_json(report, ("example",), model.example)
    in_app = _compile_in_app(report, model.channels.in_app)
    if model.channels.in_app is None:
        report.add(("channels",), "declares no channel (in_app is the one supported now)")
    if validator is not None and model.example is not None and example_ok:
        errors = payload.validation_errors(validator, model.example)
        for where, message in errors:
            report.add(("example", *where), f"does not match the schema: {message}")
        if not errors and in_app is not None:
            _render_example(report, model.key, model.example, in_app)
    if report.problems or validator is None:
        return None
    return NotificationType(
        key=model.key,
        category=model.category,
        priority=model.priority,
        description=model.description,
        payload_schema=model.payload_schema,
        example=model.example,
        channels=frozenset({"in_app"} if in_app is not None else ()),
        source=report.file,
        _validator=validator,
        _in_app=in_app,
    )


def _check_json(report: _Report, path: FieldPath, value: Any) -> bool:
    found = list(payload.json_problems(value, path))
    for where, message in found:
        report.add(where, message)
    return not found


def _compile_schema(report: _Report, schema: dict[str, Any]) -> Draft202012Validator | None:
    if not _check_json(report, ("schema",), schema):
        return None
    found = payload.schema_problems(schema)
    for where, message in found:
        report.add(("schema", *where), f"invalid JSON Schema: {message}")
    return None if found else payload.compile_validator(schema)


def _compile_in_app(report: _Report, channel: InAppChannelFile | None) -> InAppTemplates | None:
    if channel is None:
        return None
    title = _compile(report, "title", channel.title)
    body = _compile(report, "body", channel.body)
    action_url = None
    if channel.action_url is not None:
        action_url = _compile(report, "action_url", channel.action_url)
        if action_url is None:
            return None
    if title is None or body is None:
        return None
    return InAppTemplates(title=title, body=body, action_url=action_url)


def _compile(report: _Report, name: str, source: str) -> Template | None:
    path = (*_IN_APP, name)
    try:
        return compile_template(source)
    except TemplateSyntaxError as exc:
        line = report.document.template_line(path, exc.lineno)
        report.add(path, exc.message or "invalid template", line)
    except RecursionError:
        report.add(path, "the template is nested too deeply")
    return None


def _render_example(
    report: _Report, key: str, example: dict[str, Any], in_app: InAppTemplates
) -> None:
    context = {
        "data": example,
        "actor": EXAMPLE_ACTOR,
        "recipient": EXAMPLE_RECIPIENT,
        "event": {"id": "ev-example", "type": key, "tenant": "example"},
    }
    try:
        content = in_app.render(context)
    except RenderError as exc:
        report.add(tuple(exc.field.split(".")), f"fails to render the example: {exc.message}")
        return
    if not content.title:
        report.add((*_IN_APP, "title"), "renders empty for the example")


def _dotted(path: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in path)
