"""Plugin channels in the catalog: sections checked by the plugin, templates compiled and
rendered like the built-in ones, unknown channel names refused."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest

from tidings import catalog, channels

TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema:
  type: object
  properties:
    name: {{type: string}}
example: {{name: Kettle}}
channels:
{channels}"""

CARRIER = """\
  carrier:
    text: "{{ data.name }} happened to {{ recipient.id }}"
    priority: 3
"""


class CarrierSection(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    text: str
    priority: int = 1


class CarrierChannel(channels.Channel):
    """A channel made only of the public interface, as a plugin would be."""

    name: ClassVar[str] = "carrier"
    section: ClassVar[type[pydantic.BaseModel]] = CarrierSection

    async def send(
        self, delivery: channels.Delivery, payload: Mapping[str, Any], recipient: channels.Recipient
    ) -> channels.Outcome:
        return channels.Delivered()


PLUGINS = {"carrier": CarrierChannel()}


def write(folder: Path, channels_yaml: str, categories: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thing.yaml").write_text(TYPE.format(channels=channels_yaml), encoding="utf-8")
    if categories is not None:
        (folder / "categories.yaml").write_text(categories, encoding="utf-8")
    return folder


def problems(folder: Path, plugins: Mapping[str, channels.Channel]) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in catalog.check(folder, plugins)]


def test_a_plugin_section_compiles_and_renders(tmp_path: Path) -> None:
    folder = write(tmp_path, CARRIER)

    ntype = catalog.load(folder, PLUGINS).types["thing.happened"]

    assert ntype.channels == frozenset({"carrier"})
    section = ntype.channel_section("carrier")
    payload = PLUGINS["carrier"].render(
        section, {"data": {"name": "Kettle"}, "recipient": {"id": "u-1"}}
    )
    assert payload == {"text": "Kettle happened to u-1", "priority": 3}


def test_a_channel_no_plugin_provides_is_a_clear_catalog_error(tmp_path: Path) -> None:
    folder = write(tmp_path, CARRIER)

    [(field, message)] = problems(folder, {})

    assert field == "channels.carrier"
    assert message.startswith("unknown channel 'carrier': no installed channel plugin")
    assert "in_app, email" in message
    with pytest.raises(catalog.CatalogInvalid):
        catalog.load(folder, {})


def test_webpush_without_its_plugin_is_refused_and_with_it_loads(tmp_path: Path) -> None:
    folder = write(tmp_path, '  webpush: {title: "{{ data.name }}", body: "b"}\n')

    assert problems(folder, {}) == [
        (
            "channels.webpush",
            "unknown channel 'webpush': no installed channel plugin has that name "
            "(channels here: in_app, email)",
        )
    ]
    assert "webpush" in channels.installed()
    assert catalog.check(folder) == []


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ('  carrier: {text: "hi", colour: red}\n', "channels.carrier.colour", "unknown field"),
        ("  carrier: {priority: 2}\n", "channels.carrier.text", "required field is missing"),
        ('  carrier: {text: "{{ data.name "}\n', "channels.carrier.text", "unexpected"),
        (
            '  carrier: {text: "{{ data.name.upper.__class__ }}"}\n',
            "channels.carrier.text",
            "fails to render the example",
        ),
    ],
)
def test_a_bad_plugin_section_is_reported_at_its_field(
    tmp_path: Path, section: str, field: str, message: str
) -> None:
    folder = write(tmp_path, section)

    [(found_field, found_message)] = problems(folder, PLUGINS)

    assert found_field == field
    assert message in found_message


def test_category_defaults_may_name_plugin_channels_only_when_installed(tmp_path: Path) -> None:
    categories = (
        "categories:\n  things:\n    description: Things.\n    channels: {carrier: false}\n"
    )
    folder = write(tmp_path, CARRIER, categories)

    loaded = catalog.load(folder, PLUGINS)
    assert loaded.category("things").default_channels == {"carrier": False}

    (folder / "thing.yaml").write_text(
        TYPE.format(channels="  in_app: {title: t, body: b}\n"), encoding="utf-8"
    )
    [(field, message)] = problems(folder, {})
    assert field == "categories.things.channels.carrier"
    assert message.startswith("unknown channel 'carrier'")
