"""Compile a type's ``channels.email`` and check it against the example payload.

Every problem is placed where the author can fix it: the line inside an inline template
of the catalog file, or the line inside a template file it names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError

from tidings.catalog import locales
from tidings.catalog.email_body import BodyError, compile_body
from tidings.catalog.email_templates import (
    DEFAULT,
    EmailPart,
    EmailTemplates,
    EmailVariant,
    clean_subject,
)
from tidings.catalog.model import EmailChannelFile, EmailContentFile
from tidings.catalog.report import Report, dotted
from tidings.catalog.templates import RenderError, compile_template, render
from tidings.catalog.yaml_source import FieldPath

_EMAIL: FieldPath = ("channels", "email")
_BODIES = ("mjml", "mjml_file", "html", "html_file")
_TEXTS = ("text", "text_file")


@dataclass(frozen=True)
class _Source:
    """A template's text and where it came from: inline at ``path``, or from ``file``."""

    text: str
    path: FieldPath
    file: str | None = None  # the template file as problems name it

    @property
    def field(self) -> str:
        return dotted(self.path)


@dataclass
class CompiledEmail:
    """The channel's templates, and what ``check`` needs to place a failing render."""

    templates: EmailTemplates
    sources: dict[str, _Source] = field(default_factory=dict)  # by field
    # The body as written (before MJML), compiled: its failures carry the author's lines.
    probes: dict[str, Template] = field(default_factory=dict)  # by field


@dataclass
class _Compiler:
    report: Report
    base_dir: Path  # the catalog file's folder: template files are relative to it
    root: Path  # the catalog folder: template files must be inside it
    sources: dict[str, _Source] = field(default_factory=dict)
    probes: dict[str, Template] = field(default_factory=dict)

    def problem(self, source: _Source, message: str, line: int | None = None) -> None:
        _place(self.report, source, message, line)

    def read(self, content: EmailContentFile, path: FieldPath, name: str) -> _Source | None:
        """The source of template ``name`` (``mjml``, ``html_file``…) at ``path``, if set."""
        value = getattr(content, name)
        if value is None:
            return None
        where = (*path, name)
        if not name.endswith("_file"):
            return _Source(value, where)
        relative = Path(value)
        file = (self.base_dir / relative).resolve()
        shown = os.path.normpath(Path(self.report.file).parent / relative)
        if relative.is_absolute() or not file.is_relative_to(self.root.resolve()):
            self.report.add(
                where, "must be a path inside the catalog folder, relative to this file"
            )
            return None
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "no such file" if not file.exists() else str(exc)
            self.report.add(where, f"cannot read {shown}: {reason}")
            return None
        if not text.strip():
            self.report.add_in(shown, where, "the template file is empty", None)
            return None
        return _Source(text, where, shown)

    def template(self, source: _Source, *, html: bool = False) -> Template | None:
        try:
            return compile_template(source.text, html=html)
        except TemplateSyntaxError as exc:
            self.problem(source, exc.message or "invalid template", exc.lineno)
        except RecursionError:
            self.problem(source, "the template is nested too deeply")
        return None

    def part(self, source: _Source, *, html: bool = False) -> EmailPart | None:
        template = self.template(source, html=html)
        if template is None:
            return None
        self.sources[source.field] = source
        return EmailPart(template, source.field)

    def body(self, source: _Source, *, mjml: bool) -> tuple[EmailPart, EmailPart] | None:
        """The HTML part and the text part derived from it."""
        probe = self.template(source, html=True)
        if probe is None:
            return None
        try:
            compiled = compile_body(source.text, mjml=mjml)
        except BodyError as exc:
            self.problem(source, exc.message, exc.line)
            return None
        html = self._generated(source, compiled.html, html=True, what="HTML")
        text = self._generated(source, compiled.text, html=False, what="text part")
        if html is None or text is None:
            return None
        self.sources[source.field] = source
        self.probes[source.field] = probe
        return (
            EmailPart(html, source.field, lines_are_source=False),
            EmailPart(text, source.field, lines_are_source=False),
        )

    def _generated(self, source: _Source, text: str, *, html: bool, what: str) -> Template | None:
        try:
            return compile_template(text, html=html)
        except (TemplateSyntaxError, RecursionError) as exc:
            message = getattr(exc, "message", None) or type(exc).__name__
            hint = " (write a text template)" if what == "text part" else ""
            self.problem(
                source, f"the Jinja tags do not survive rendering the {what}: {message}{hint}"
            )
            return None


def compile_email(
    report: Report, channel: EmailChannelFile, base_dir: Path, root: Path
) -> CompiledEmail | None:
    """Compile every variant of the channel; None (with problems reported) when it cannot."""
    compiler = _Compiler(report, base_dir, root)
    written_in = _default_locale(report, channel.default_locale)
    default = _variant(compiler, channel, _EMAIL, DEFAULT, written_in or "en", None)
    overrides: dict[str, EmailVariant] = {}
    seen: dict[str, str] = {}
    for key, content in channel.locales.items():
        path = (*_EMAIL, "locales", key)
        tag = _override_tag(report, path, key, seen)
        if tag is None:
            continue
        if all(getattr(content, name) is None for name in type(content).model_fields):
            report.add(path, "overrides nothing: give a subject, a body or a text")
            continue
        if default is not None:
            variant = _variant(compiler, content, path, tag, tag, default)
            if variant is not None:
                overrides[tag] = variant
    if report.problems or default is None or written_in is None:
        return None
    templates = EmailTemplates(default=default, overrides=dict(sorted(overrides.items())))
    return CompiledEmail(templates, compiler.sources, compiler.probes)


def _default_locale(report: Report, value: str) -> str | None:
    tag = locales.normalise(value)
    if tag is None or locales.to_babel(tag) is None:
        report.add((*_EMAIL, "default_locale"), f"{value!r} is not a known locale (e.g. en, fr-CA)")
        return None
    return tag


def _override_tag(report: Report, path: FieldPath, key: str, seen: dict[str, str]) -> str | None:
    tag = locales.normalise(key)
    if tag is None or locales.to_babel(tag) is None:
        report.add(path, f"{key!r} is not a known locale (e.g. fr, fr-CA, pt-BR)")
        return None
    if tag in seen:
        report.add(path, f"the same locale as {seen[tag]!r}")
        return None
    seen[tag] = key
    return tag


def _variant(
    compiler: _Compiler,
    content: EmailContentFile,
    path: FieldPath,
    tag: str,
    written_in: str,
    default: EmailVariant | None,
) -> EmailVariant | None:
    """Compile one variant; what ``content`` leaves out comes from ``default``."""
    report = compiler.report
    bodies = [name for name in _BODIES if getattr(content, name) is not None]
    texts = [name for name in _TEXTS if getattr(content, name) is not None]
    if len(bodies) > 1:
        report.add((*path, bodies[1]), f"give only one of {', '.join(_BODIES)}")
        return None
    if len(texts) > 1:
        report.add((*path, texts[1]), "give only one of text, text_file")
        return None
    if default is None and not bodies:
        report.add(path, f"needs a body: one of {', '.join(_BODIES)}")
        return None
    problems_before = len(report.problems)
    subject_source = compiler.read(content, path, "subject")
    subject = None if subject_source is None else compiler.part(subject_source)
    body_source = compiler.read(content, path, bodies[0]) if bodies else None
    body = None
    if body_source is not None:
        body = compiler.body(body_source, mjml=bodies[0].startswith("mjml"))
    text_source = compiler.read(content, path, texts[0]) if texts else None
    text = None if text_source is None else compiler.part(text_source)
    if len(report.problems) > problems_before:
        return None
    if default is not None:
        subject = subject or default.subject
    if subject is None:
        return None
    if body is not None:
        html, derived = body
        text_is_derived = text is None
        text = text or derived
    elif default is not None:
        # The default's body, and its text unless this locale writes its own.
        html = default.html
        text_is_derived = text is None and default.text_is_derived
        text = text or default.text
    else:
        return None
    return EmailVariant(
        tag=tag,
        written_in=written_in,
        subject=subject,
        html=html,
        text=text,
        text_is_derived=text_is_derived,
    )


def check_example(report: Report, compiled: CompiledEmail, context: Mapping[str, Any]) -> None:
    """Render every template of every variant with the example; report each failure once."""
    reported: set[tuple[str, str]] = set()
    for variant in compiled.templates.variants():
        values = variant.context_for(context, variant.written_in)
        values["subject"] = "Example subject"
        for part in variant.parts:
            try:
                rendered = part.render(values)
            except RenderError as exc:
                line, message = exc.line, exc.message
                probe = compiled.probes.get(part.field)
                if line is None and probe is not None:
                    line, message = _probe(probe, values, part.field, line, message)
                if (part.field, message) not in reported:
                    reported.add((part.field, message))
                    message = f"fails to render the example: {message}"
                    _place(report, compiled.sources[part.field], message, line)
                continue
            empty = part is variant.subject and not clean_subject(rendered)
            if empty and (part.field, "empty") not in reported:
                reported.add((part.field, "empty"))
                report.add(compiled.sources[part.field].path, "renders empty for the example")


def _place(report: Report, source: _Source, message: str, line: int | None) -> None:
    """Report at ``line`` of the template, in the file it was read from or in the catalog."""
    if source.file is not None:
        report.add_in(source.file, source.path, message, line)
    elif line is not None:
        report.add(source.path, message, report.document.template_line(source.path, line))
    else:
        report.add(source.path, message)


def _probe(
    probe: Template, values: Mapping[str, Any], field: str, line: int | None, message: str
) -> tuple[int | None, str]:
    # The body as the author wrote it fails the same way, at a line the author knows.
    try:
        render(probe, values, field)
    except RenderError as exc:
        return exc.line, exc.message
    return line, message
