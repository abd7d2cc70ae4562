"""Preference resolution: user over tenant over catalog over the default, mandatory above all."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import catalog
from tidings.catalog.categories import DigestDefault
from tidings.planning.rules.digest_schedule import Cadence, CadenceKind
from tidings.planning.rules.preferences import (
    CHANNELS,
    CategoryChoices,
    Choices,
    Setting,
    Source,
    resolve,
)
from tidings.planning.rules.quiet_hours import QuietHours

COMMENTS = catalog.Category("comments", "Comments.", False)
SECURITY = catalog.Category("security", "Security notices.", True)
CATEGORY_NAMES = ("comments", "mentions", "security")


def owner(*, everywhere: bool | None = None, comments: bool | None = None) -> Choices:
    """Choices with an email switch globally and/or for comments (None: not chosen)."""
    doc: dict[str, Any] = {}
    if everywhere is not None:
        doc["channels"] = {"email": everywhere}
    if comments is not None:
        doc["categories"] = {"comments": {"channels": {"email": comments}}}
    return Choices.from_document(doc)


def with_default(email: bool | None) -> catalog.Category:
    defaults = {} if email is None else {"email": email}
    return catalog.Category("comments", "Comments.", False, default_channels=defaults)


# id: (user global, user category, tenant global, tenant category, catalog default) -> setting
CHANNEL_CASES: dict[str, tuple[tuple[bool | None, ...], Setting[bool]]] = {
    "nothing chosen: on": ((None, None, None, None, None), Setting(True, "default")),
    "catalog default": ((None, None, None, None, False), Setting(False, "catalog")),
    "tenant global over catalog": ((None, None, False, None, True), Setting(False, "tenant")),
    "tenant category over tenant global": (
        (None, None, False, True, None),
        Setting(True, "tenant"),
    ),
    "user global over tenant category": (
        (False, None, None, True, True),
        Setting(False, "user"),
    ),
    "user category over user global": ((False, True, None, None, None), Setting(True, "user")),
    "user category over everything": ((True, False, True, True, True), Setting(False, "user")),
    "user global opt-out over catalog on": (
        (False, None, None, None, True),
        Setting(False, "user"),
    ),
    "tenant global on over catalog off": ((None, None, True, None, False), Setting(True, "tenant")),
}


@pytest.mark.parametrize(("layers", "expected"), CHANNEL_CASES.values(), ids=CHANNEL_CASES.keys())
def test_channel_precedence(layers: tuple[bool | None, ...], expected: Setting[bool]) -> None:
    user_global, user_category, tenant_global, tenant_category, default = layers
    preferences = resolve(
        owner(everywhere=user_global, comments=user_category),
        owner(everywhere=tenant_global, comments=tenant_category),
    )

    assert preferences.channel(with_default(default), "email") == expected


def test_a_switch_for_one_channel_leaves_the_other_alone() -> None:
    preferences = resolve(owner(everywhere=False, comments=False), None)

    assert preferences.channel(COMMENTS, "in_app") == Setting(True, "default")


def test_a_switch_for_one_category_leaves_the_others_alone() -> None:
    mentions = catalog.Category("mentions", "Mentions.", False)

    assert resolve(owner(comments=False), None).channel(mentions, "email") == Setting(
        True, "default"
    )


def test_a_mandatory_category_is_on_whatever_anyone_chose() -> None:
    off = Choices.from_document(
        {"channels": {"email": False}, "categories": {"security": {"channels": {"email": False}}}}
    )

    assert resolve(off, off).channel(SECURITY, "email") == Setting(True, "mandatory")


def test_no_choices_at_all() -> None:
    preferences = resolve(None, None)

    assert preferences.channel(COMMENTS, "email") == Setting(True, "default")
    assert preferences.digest(COMMENTS) == Setting(Cadence(CadenceKind.INSTANT), "default")
    assert preferences.quiet_hours == Setting(None, "default")


def digest_owner(cadence: str | None, hour: int | None = None) -> Choices | None:
    if cadence is None:
        return None
    digest: dict[str, Any] = {"cadence": cadence}
    if hour is not None:
        digest["hour"] = hour
    return Choices.from_document({"categories": {"comments": {"digest": digest}}})


# id: (user, tenant, catalog default) -> setting
DIGEST_CASES: dict[str, tuple[Any, Any, DigestDefault | None, Setting[Cadence]]] = {
    "default: instant": (None, None, None, Setting(Cadence(CadenceKind.INSTANT), "default")),
    "catalog": (
        None,
        None,
        DigestDefault("daily", 8),
        Setting(Cadence(CadenceKind.DAILY, 8), "catalog"),
    ),
    "tenant over catalog": (
        None,
        ("hourly", None),
        DigestDefault("daily", 8),
        Setting(Cadence(CadenceKind.HOURLY), "tenant"),
    ),
    "user over tenant": (
        ("daily", 18),
        ("hourly", None),
        DigestDefault("daily", 8),
        Setting(Cadence(CadenceKind.DAILY, 18), "user"),
    ),
    "user instant over a tenant digest": (
        ("instant", None),
        ("daily", None),
        None,
        Setting(Cadence(CadenceKind.INSTANT), "user"),
    ),
    "daily without an hour: 9": (
        ("daily", None),
        None,
        None,
        Setting(Cadence(CadenceKind.DAILY, 9), "user"),
    ),
}


@pytest.mark.parametrize(
    ("user", "tenant", "default", "expected"), DIGEST_CASES.values(), ids=DIGEST_CASES.keys()
)
def test_digest_precedence(
    user: tuple[str, int | None] | None,
    tenant: tuple[str, int | None] | None,
    default: DigestDefault | None,
    expected: Setting[Cadence],
) -> None:
    category = catalog.Category("comments", "Comments.", False, default_digest=default)
    preferences = resolve(
        digest_owner(*user) if user else None, digest_owner(*tenant) if tenant else None
    )

    assert preferences.digest(category) == expected


def test_a_global_switch_does_not_touch_the_digest() -> None:
    preferences = resolve(owner(everywhere=False), digest_owner("hourly"))

    assert preferences.digest(COMMENTS) == Setting(Cadence(CadenceKind.HOURLY), "tenant")


NIGHT = QuietHours(dt.time(22), dt.time(7), "Europe/Paris")
LUNCH = QuietHours(dt.time(12), dt.time(13, 30))


def quiet_owner(quiet: QuietHours | None) -> Choices:
    return Choices(quiet_hours=quiet)


@pytest.mark.parametrize(
    ("user", "tenant", "expected"),
    [
        (None, None, Setting(None, "default")),
        (None, LUNCH, Setting(LUNCH, "tenant")),
        (NIGHT, LUNCH, Setting(NIGHT, "user")),
        (NIGHT, None, Setting(NIGHT, "user")),
    ],
    ids=["none", "tenant", "user over tenant", "user"],
)
def test_quiet_hours_precedence(
    user: QuietHours | None, tenant: QuietHours | None, expected: Setting[QuietHours | None]
) -> None:
    assert resolve(quiet_owner(user), quiet_owner(tenant)).quiet_hours == expected


def test_the_document_is_parsed_and_written_back_canonically() -> None:
    doc = {
        "quiet_hours": {"start": "22:00", "end": "07:30", "timezone": "Europe/Paris"},
        "categories": {
            "mentions": {},
            "comments": {
                "digest": {"cadence": "daily", "hour": 8},
                "channels": {"in_app": True, "email": False},
            },
            "invitations": {"digest": {"cadence": "hourly"}},
        },
        "channels": {"email": False},
    }

    choices = Choices.from_document(doc)

    assert choices.channels == {"email": False}
    assert choices.categories["comments"] == CategoryChoices(
        channels={"email": False, "in_app": True}, digest=Cadence(CadenceKind.DAILY, 8)
    )
    assert choices.quiet_hours == QuietHours(dt.time(22), dt.time(7, 30), "Europe/Paris")
    assert choices.to_document() == {
        "channels": {"email": False},
        "categories": {
            "comments": {
                "channels": {"email": False, "in_app": True},
                "digest": {"cadence": "daily", "hour": 8},
            },
            "invitations": {"digest": {"cadence": "hourly"}},
        },
        "quiet_hours": {"start": "22:00", "end": "07:30", "timezone": "Europe/Paris"},
    }


@pytest.mark.parametrize("doc", [None, {}, {"channels": {}, "categories": {}}])
def test_no_document_is_no_choices(doc: dict[str, Any] | None) -> None:
    choices = Choices.from_document(doc)

    assert choices == Choices()
    assert choices.to_document() == {}


def test_quiet_hours_without_a_timezone_keep_none() -> None:
    choices = Choices.from_document({"quiet_hours": {"start": "23:00", "end": "06:00"}})

    assert choices.quiet_hours == QuietHours(dt.time(23), dt.time(6), None)
    assert choices.to_document() == {"quiet_hours": {"start": "23:00", "end": "06:00"}}


def test_with_channel_sets_one_switch_and_keeps_the_rest() -> None:
    choices = Choices.from_document({"categories": {"comments": {"digest": {"cadence": "hourly"}}}})

    changed = choices.with_channel("comments", "email", False).with_channel(None, "in_app", True)

    assert changed.to_document() == {
        "channels": {"in_app": True},
        "categories": {"comments": {"channels": {"email": False}, "digest": {"cadence": "hourly"}}},
    }
    assert choices.to_document() == {"categories": {"comments": {"digest": {"cadence": "hourly"}}}}


# Properties.

switches = st.dictionaries(st.sampled_from(CHANNELS), st.booleans())
cadences = st.one_of(
    st.builds(Cadence, st.sampled_from([CadenceKind.INSTANT, CadenceKind.HOURLY])),
    st.builds(Cadence, st.just(CadenceKind.DAILY), st.integers(0, 23)),
)
minutes = st.builds(dt.time, st.integers(0, 23), st.integers(0, 59))
quiet_hours = st.builds(
    QuietHours, minutes, minutes, st.sampled_from([None, "Europe/Paris", "America/New_York"])
)
category_choices = st.builds(CategoryChoices, switches, st.none() | cadences)
choices_strategy = st.builds(
    Choices,
    switches,
    st.dictionaries(st.sampled_from(CATEGORY_NAMES), category_choices),
    st.none() | quiet_hours,
)
categories = st.builds(
    catalog.Category,
    st.sampled_from(CATEGORY_NAMES),
    st.just(""),
    st.booleans(),
    switches,
    st.none()
    | st.builds(DigestDefault, st.sampled_from(["instant", "hourly", "daily"]), st.integers(0, 23)),
)


@given(
    st.none() | choices_strategy,
    st.none() | choices_strategy,
    categories,
    st.sampled_from(CHANNELS),
)
def test_mandatory_is_always_on(
    user: Choices | None, tenant: Choices | None, category: catalog.Category, channel: str
) -> None:
    setting = resolve(user, tenant).channel(category, channel)

    assert setting.value or not category.mandatory
    assert (setting.source == "mandatory") == category.mandatory


@given(choices_strategy, st.none() | choices_strategy, categories, st.sampled_from(CHANNELS))
def test_a_users_category_switch_wins_over_everything_but_mandatory(
    user: Choices, tenant: Choices | None, category: catalog.Category, channel: str
) -> None:
    entry = user.categories.get(category.name)
    explicit = None if entry is None else entry.channels.get(channel)

    setting = resolve(user, tenant).channel(category, channel)

    if explicit is not None and not category.mandatory:
        assert setting == Setting(explicit, "user")


@given(
    st.none() | choices_strategy,
    st.none() | choices_strategy,
    categories,
    st.sampled_from(CHANNELS),
)
def test_channel_is_the_first_layer_that_chose(
    user: Choices | None, tenant: Choices | None, category: catalog.Category, channel: str
) -> None:
    layers: list[tuple[bool | None, Source]] = []
    owners: tuple[tuple[Choices | None, Source], ...] = ((user, "user"), (tenant, "tenant"))
    for choices, source in owners:
        if choices is not None:
            entry = choices.categories.get(category.name)
            layers.append((None if entry is None else entry.channels.get(channel), source))
            layers.append((choices.channels.get(channel), source))
    layers.append((category.default_channels.get(channel), "catalog"))
    expected = next(
        (Setting(value, source) for value, source in layers if value is not None),
        Setting(True, "default"),
    )

    setting = resolve(user, tenant).channel(category, channel)

    assert setting == (Setting(True, "mandatory") if category.mandatory else expected)


@given(choices_strategy)
def test_the_document_round_trips(choices: Choices) -> None:
    doc = choices.to_document()
    again = Choices.from_document(doc)

    assert again.to_document() == doc
    for channel in CHANNELS:
        for name in CATEGORY_NAMES:
            assert again.switch(name, channel) == choices.switch(name, channel)
            assert again.digest(name) == choices.digest(name)
    assert again.quiet_hours == choices.quiet_hours


# Catalog defaults, as categories.yaml declares them.

TYPE = """\
key: comment.created
category: comments
description: Someone commented.
schema: {type: object}
channels:
  in_app: {title: t, body: b}
"""


def load_categories(tmp_path: Path, categories: str) -> catalog.Catalog:
    (tmp_path / "comment.yaml").write_text(TYPE, encoding="utf-8")
    (tmp_path / "categories.yaml").write_text(categories, encoding="utf-8")
    return catalog.load(tmp_path)


def test_catalog_defaults_reach_resolution(tmp_path: Path) -> None:
    types = load_categories(
        tmp_path,
        "categories:\n"
        "  comments:\n"
        "    description: Comments.\n"
        "    channels: {email: false}\n"
        "    digest: {cadence: daily, hour: 7}\n"
        "  marketing:\n"
        "    description: News.\n"
        "    digest: {cadence: daily}\n",
    )
    comments = types.category("comments")

    assert comments.default_channels == {"email": False}
    assert comments.default_digest == DigestDefault("daily", 7)
    assert types.category("marketing").default_digest == DigestDefault("daily", 9)
    assert resolve(None, None).channel(comments, "email") == Setting(False, "catalog")
    assert resolve(None, None).digest(comments) == Setting(Cadence(CadenceKind.DAILY, 7), "catalog")
    assert types.category("undeclared") == catalog.Category("undeclared", "", False)


BAD_DEFAULTS = {
    "mandatory off by default": (
        "  security:\n    description: S.\n    mandatory: true\n    channels: {email: false}\n",
        "categories.security.channels.email",
        "mandatory category cannot be off",
    ),
    "hour with an hourly cadence": (
        "  news:\n    description: N.\n    digest: {cadence: hourly, hour: 8}\n",
        "categories.news.digest",
        "hour applies only to the daily cadence",
    ),
    "hour out of range": (
        "  news:\n    description: N.\n    digest: {cadence: daily, hour: 24}\n",
        "categories.news.digest.hour",
        "less than or equal to 23",
    ),
    "unknown cadence": (
        "  news:\n    description: N.\n    digest: {cadence: weekly}\n",
        "categories.news.digest.cadence",
        "'instant', 'hourly' or 'daily'",
    ),
    "not a boolean": (
        "  news:\n    description: N.\n    channels: {email: 'no'}\n",
        "categories.news.channels.email",
        "valid boolean",
    ),
}


@pytest.mark.parametrize(
    ("entry", "field", "message"), BAD_DEFAULTS.values(), ids=BAD_DEFAULTS.keys()
)
def test_bad_catalog_defaults_are_problems(
    tmp_path: Path, entry: str, field: str, message: str
) -> None:
    (tmp_path / "comment.yaml").write_text(TYPE, encoding="utf-8")
    categories = "categories:\n  comments:\n    description: Comments.\n" + entry
    (tmp_path / "categories.yaml").write_text(categories, encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.field == field
    assert message in problem.message
