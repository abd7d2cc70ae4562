"""Turn one catalog file into a NotificationType, or into the problems that prevent it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from jinja2 import Template, TemplateSyntaxError
from jsonschema import Draft202012Validator

from tidings.catalog import payload
from tidings.catalog.model import InAppChannelFile, NotificationTypeFile
from tidings.catalog.notification_type import NotificationType
from tidings.catalog.parse_email import CompiledEmail, check_example, compile_email
from tidings.catalog.problems import CatalogProblem
from tidings.catalog.report import Report
from tidings.catalog.templates import InAppTemplates, RenderError, compile_template
from tidings.catalog.yaml_source import FieldPath, YamlSyntaxError, parse_yaml

EXAMPLE_ACTOR = {"id": "u-example", "name": "Example"}
EXAMPLE_RECIPIENT = {
    "id": "u-example",
    "name": "Example",
    "email": "example@example.com",
    "locale": "en",
    "timezone": "UTC",
}

_IN_APP = ("channels", "in_app")


@dataclass(frozen=True)
class ParsedFile:
    """The outcome for one file: a type when there were no problems."""

    notification_type: NotificationType | None
    problems: list[CatalogProblem]
    key: str | None = None  # the declared key, even when the file has other problems
    key_line: int | None = None


def parse_file(path: Path, display: str, root: Path | None = None) -> ParsedFile:
    """Read, validate and compile the catalog file at ``path``; ``display`` names it.

    Template files it names must lie inside ``root``, the catalog folder (by default
    the file's own folder).
    """
    report = Report(display)
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
        report.add_model_errors(exc)
        return ParsedFile(None, report.problems, key, key_line)
    notification_type = _build(model, report, path.parent, root or path.parent)
    if report.problems:
        return ParsedFile(None, report.problems, key, key_line)
    return ParsedFile(notification_type, [], key, key_line)


def _build(
    model: NotificationTypeFile, report: Report, base_dir: Path, root: Path
) -> NotificationType | None:
    validator = _compile_schema(report, model.payload_schema)
    example_ok = _check_json(report, ("example",), model.example)
    channels = model.channels
    in_app = _compile_in_app(report, channels.in_app)
    email = None
    if channels.email is not None:
        email = compile_email(report, channels.email, base_dir, root)
    if channels.in_app is None and channels.email is None:
        report.add(("channels",), "declares no channel (in_app, email)")
    if validator is not None and model.example is not None and example_ok:
        errors = payload.validation_errors(validator, model.example)
        for where, message in errors:
            report.add(("example", *where), f"does not match the schema: {message}")
        if not errors:
            _render_example(report, model.key, model.example, in_app, email)
    if report.problems or validator is None:
        return None
    return NotificationType(
        key=model.key,
        category=model.category,
        priority=model.priority,
        description=model.description,
        payload_schema=model.payload_schema,
        example=model.example,
        channels=frozenset(
            name for name, present in (("in_app", in_app), ("email", email)) if present
        ),
        source=report.file,
        _validator=validator,
        _in_app=in_app,
        _email=None if email is None else email.templates,
    )


def _check_json(report: Report, path: FieldPath, value: Any) -> bool:
    found = list(payload.json_problems(value, path))
    for where, message in found:
        report.add(where, message)
    return not found


def _compile_schema(report: Report, schema: dict[str, Any]) -> Draft202012Validator | None:
    if not _check_json(report, ("schema",), schema):
        return None
    found = payload.schema_problems(schema)
    for where, message in found:
        report.add(("schema", *where), f"invalid JSON Schema: {message}")
    return None if found else payload.compile_validator(schema)


def _compile_in_app(report: Report, channel: InAppChannelFile | None) -> InAppTemplates | None:
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


def _compile(report: Report, name: str, source: str) -> Template | None:
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
    report: Report,
    key: str,
    example: dict[str, Any],
    in_app: InAppTemplates | None,
    email: CompiledEmail | None,
) -> None:
    context = {
        "data": example,
        "actor": EXAMPLE_ACTOR,
        "recipient": EXAMPLE_RECIPIENT,
        "event": {"id": "ev-example", "type": key, "tenant": "example"},
    }
    if in_app is not None:
        _render_in_app_example(report, in_app, context)
    if email is not None:
        check_example(report, email, context)


def _render_in_app_example(report: Report, in_app: InAppTemplates, context: dict[str, Any]) -> None:
    try:
        content = in_app.render(context)
    except RenderError as exc:
        path = tuple(exc.field.split("."))
        line = None if exc.line is None else report.document.template_line(path, exc.line)
        report.add(path, f"fails to render the example: {exc.message}", line)
        return
    if not content.title:
        report.add((*_IN_APP, "title"), "renders empty for the example")
