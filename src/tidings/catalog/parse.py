"""Turn one catalog file into a NotificationType, or into the problems that prevent it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pydantic

from tidings.catalog import payload
from tidings.catalog.model import InAppChannelFile, NotificationTypeFile
from tidings.catalog.notification_type import Deprecation, NotificationType
from tidings.catalog.parse_channels import compile_sections, render_example
from tidings.catalog.parse_email import CompiledEmail, check_example, compile_email
from tidings.catalog.problems import CatalogProblem
from tidings.catalog.report import Report
from tidings.catalog.rules import DigestRule, compile_field, compile_rules, key_templates
from tidings.catalog.templates import InAppTemplates, RenderError, render
from tidings.catalog.yaml_source import FieldPath, YamlSyntaxError, parse_yaml
from tidings.channels import registry
from tidings.channels.interface import Channel

EXAMPLE_ACTOR = {"id": "u-example", "name": "Example"}
EXAMPLE_RECIPIENT = {
    "id": "u-example",
    "name": "Example",
    "email": "example@example.com",
    "locale": "en",
    "timezone": "UTC",
}
# Rule templates also see a group of notifications, or a digest: two, in check.
EXAMPLE_OTHER_ACTOR = {"id": "u-example-2", "name": "Another Example"}
EXAMPLE_CREATED_AT = "2024-05-01T09:30:00Z"
# Email templates also see the link that unsubscribes the recipient from the category.
EXAMPLE_UNSUBSCRIBE_URL = "https://tidings.example/v1/unsubscribe/example"

_IN_APP = ("channels", "in_app")


@dataclass(frozen=True)
class ParsedFile:
    """The outcome for one file: a type when there were no problems."""

    notification_type: NotificationType | None
    problems: list[CatalogProblem]
    key: str | None = None  # the declared key, even when the file has other problems
    key_line: int | None = None


def parse_file(
    path: Path,
    display: str,
    root: Path | None = None,
    plugins: Mapping[str, Channel] | None = None,
) -> ParsedFile:
    """Read, validate and compile the catalog file at ``path``; ``display`` names it.

    Template files it names must lie inside ``root``, the catalog folder (by default
    the file's own folder). ``plugins`` are the plugin channels it may use (by default
    the installed ones).
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
    if plugins is None:
        plugins = registry.installed()
    notification_type = _build(model, report, path.parent, root or path.parent, plugins)
    if report.problems:
        return ParsedFile(None, report.problems, key, key_line)
    return ParsedFile(notification_type, [], key, key_line)


def _build(
    model: NotificationTypeFile,
    report: Report,
    base_dir: Path,
    root: Path,
    plugins: Mapping[str, Channel],
) -> NotificationType | None:
    validator = _compile_schema(report, model.payload_schema)
    example_ok = _check_json(report, ("example",), model.example)
    channels = model.channels
    in_app = _compile_in_app(report, channels.in_app)
    email = None
    if channels.email is not None:
        email = compile_email(report, channels.email, base_dir, root)
    extra = channels.model_extra or {}
    sections = compile_sections(report, extra, plugins)
    if channels.in_app is None and channels.email is None and not extra:
        report.add(("channels",), f"declares no channel ({', '.join(registry.names(plugins))})")
    declared = frozenset(
        name
        for name, channel in (("in_app", channels.in_app), ("email", channels.email))
        if channel is not None
    ) | frozenset(sections)
    rules = compile_rules(report, model.rules, declared)
    context = None
    if validator is not None and model.example is not None and example_ok:
        errors = payload.validation_errors(validator, model.example)
        for where, message in errors:
            report.add(("example", *where), f"does not match the schema: {message}")
        if not errors:
            context = _example_context(model.key, model.example)
            _render_example(report, context, in_app, email)
            for failure in render_example(report, sections, plugins, context):
                _report_render_error(report, failure)
    if report.problems or validator is None or rules is None:
        return None
    notification_type = NotificationType(
        key=model.key,
        category=model.category,
        priority=model.priority,
        description=model.description,
        payload_schema=model.payload_schema,
        example=model.example,
        channels=frozenset(
            name for name, present in (("in_app", in_app), ("email", email)) if present
        )
        | frozenset(sections),
        source=report.file,
        _validator=validator,
        _in_app=in_app,
        _email=None if email is None else email.templates,
        rules=rules,
        _sections=sections,
        version=model.version,
        deprecated=None
        if model.deprecated is None
        else Deprecation(model.deprecated.since, model.deprecated.sunset, model.deprecated.note),
    )
    if context is not None:
        _check_rules_example(report, notification_type, context)
    return None if report.problems else notification_type


def _check_json(report: Report, path: FieldPath, value: Any) -> bool:
    found = list(payload.json_problems(value, path))
    for where, message in found:
        report.add(where, message)
    return not found


def _compile_schema(report: Report, schema: dict[str, Any]) -> payload.PayloadValidator | None:
    if not _check_json(report, ("schema",), schema):
        return None
    found = payload.schema_problems(schema)
    for where, message in found:
        report.add(("schema", *where), f"invalid JSON Schema: {message}")
    return None if found else payload.compile_validator(schema)


def _compile_in_app(report: Report, channel: InAppChannelFile | None) -> InAppTemplates | None:
    if channel is None:
        return None
    title = compile_field(report, (*_IN_APP, "title"), channel.title)
    body = compile_field(report, (*_IN_APP, "body"), channel.body)
    action_url = None
    if channel.action_url is not None:
        action_url = compile_field(report, (*_IN_APP, "action_url"), channel.action_url)
        if action_url is None:
            return None
    if title is None or body is None:
        return None
    return InAppTemplates(title=title, body=body, action_url=action_url)


def _example_context(key: str, example: dict[str, Any]) -> dict[str, Any]:
    """What templates see when ``check`` renders them with the type's example."""
    return {
        "data": example,
        "actor": EXAMPLE_ACTOR,
        "recipient": EXAMPLE_RECIPIENT,
        "event": {"id": "ev-example", "type": key, "tenant": "example"},
        "unsubscribe_url": EXAMPLE_UNSUBSCRIBE_URL,
    }


def _render_example(
    report: Report,
    context: dict[str, Any],
    in_app: InAppTemplates | None,
    email: CompiledEmail | None,
) -> None:
    if in_app is not None:
        _render_in_app_example(report, in_app, context)
    if email is not None:
        check_example(report, email, context)


def _render_in_app_example(report: Report, in_app: InAppTemplates, context: dict[str, Any]) -> None:
    try:
        content = in_app.render(context)
    except RenderError as exc:
        _report_render_error(report, exc)
        return
    if not content.title:
        report.add((*_IN_APP, "title"), "renders empty for the example")


def _report_render_error(report: Report, exc: RenderError) -> None:
    """A template failed on the example: reported at its line in the file when known."""
    path = tuple(exc.field.split("."))
    line = None if exc.line is None else report.document.template_line(path, exc.line)
    report.add(path, f"fails to render the example: {exc.message}", line)


def _check_rules_example(
    report: Report, notification_type: NotificationType, context: dict[str, Any]
) -> None:
    """Render every rule template with the example: keys, the collapsed item, the digest."""
    check = _RuleCheck(report)
    rules = notification_type.rules
    for condition in rules.conditions():
        problem = condition.check(context)
        if problem is not None:
            report.add(tuple(condition.field.split(".")), problem)
    for name, template in key_templates(rules).items():
        check.attempt(name, partial(render, template, context, name))
    if rules.collapse is not None:
        group = {"count": 2, "actors": [EXAMPLE_ACTOR, EXAMPLE_OTHER_ACTOR], "others": 1}
        collapsed = partial(notification_type.render_collapsed, {**context, "group": group})
        check.attempt("rules.collapse.title", lambda: collapsed().title)
    digest = rules.digest
    if digest is not None:
        values = _example_digest(notification_type, context, digest)
        in_app = partial(notification_type.render_digest, values, digest)
        check.attempt("rules.digest.title", lambda: in_app().title)
        email = partial(notification_type.render_digest_email, values, digest, None)
        subject = "rules.digest.subject" if digest.subject is not None else "rules.digest.title"
        check.attempt(subject, lambda: email().subject)


@dataclass
class _RuleCheck:
    """Reports each rule template's failure with the example once, at its line."""

    report: Report
    reported: set[str] = field(default_factory=set)

    def attempt(self, name: str, rendering: Callable[[], str]) -> None:
        """Run ``rendering``; a failure, or empty text where ``name`` needs some, is reported."""
        try:
            text = rendering()
        except RenderError as exc:
            if exc.field not in self.reported:
                self.reported.add(exc.field)
                _report_render_error(self.report, exc)
            return
        if not text and name not in self.reported:
            self.reported.add(name)
            self.report.add(tuple(name.split(".")), "renders empty for the example")


def _example_digest(
    notification_type: NotificationType, context: dict[str, Any], rule: DigestRule
) -> dict[str, Any]:
    """A digest of two notifications made from the example, as the planner gathers them."""
    content = notification_type.summary(context, None)
    title, body, action_url = content.title, content.body, content.action_url
    items = [
        {
            "title": title,
            "body": body,
            "action_url": action_url,
            "actor": actor,
            "data": context["data"],
            "event_id": f"ev-example-{number}",
            "created_at": EXAMPLE_CREATED_AT,
        }
        for number, actor in enumerate((EXAMPLE_ACTOR, EXAMPLE_OTHER_ACTOR), start=1)
    ]
    key = ""
    if rule.key is not None:
        with contextlib.suppress(RenderError):  # reported as the key's own problem
            key = render(rule.key, context, "rules.digest.key")
    shown = items[: rule.show]
    return {
        "recipient": EXAMPLE_RECIPIENT,
        "digest": {
            "count": len(items),
            "items": shown,
            "more": len(items) - len(shown),
            "key": key,
            "type": notification_type.key,
        },
    }
