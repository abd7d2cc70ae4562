"""The plugin channels' sections of one catalog file: known names, valid sections,
templates that compile and render the example."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from tidings.catalog.channel_section import ChannelSection
from tidings.catalog.report import Report
from tidings.catalog.rules import compile_field
from tidings.catalog.templates import RenderError
from tidings.channels import registry
from tidings.channels.interface import Channel


def compile_sections(
    report: Report, sections: Mapping[str, Any], plugins: Mapping[str, Channel]
) -> dict[str, ChannelSection]:
    """Each section under ``channels`` that names a plugin channel, compiled; an unknown
    name, an invalid section or a template that does not compile is reported."""
    compiled: dict[str, ChannelSection] = {}
    for name, raw in sections.items():
        path = ("channels", name)
        plugin = plugins.get(name)
        if plugin is None:
            known = ", ".join(registry.names(plugins))
            report.add(
                path,
                f"unknown channel {name!r}: no installed channel plugin has that name "
                f"(channels here: {known})",
            )
            continue
        try:
            model = plugin.section.model_validate(raw)
        except pydantic.ValidationError as exc:
            report.add_model_errors(exc, path)
            continue
        templates = {}
        for field in type(model).model_fields:
            source = getattr(model, field)
            if isinstance(source, str):
                template = compile_field(report, (*path, field), source)
                if template is not None:
                    templates[field] = template
        compiled[name] = ChannelSection(name, model, templates)
    return compiled


def render_example(
    report: Report,
    sections: Mapping[str, ChannelSection],
    plugins: Mapping[str, Channel],
    context: Mapping[str, Any],
) -> list[RenderError]:
    """Render each section with the type's example; returns the failures to report."""
    failures = []
    for name, section in sections.items():
        try:
            plugins[name].render(section, context)
        except RenderError as exc:
            failures.append(exc)
    return failures
