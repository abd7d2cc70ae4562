"""The preferences APIs: user choices over tenant defaults over the catalog's, on both engines."""

from __future__ import annotations

import asyncio
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CATALOG
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings

Headers = Callable[[str], dict[str, str]]

CHOICES: dict[str, Any] = {
    "channels": {"email": False},
    "categories": {
        "comments": {"channels": {"in_app": True, "email": True}, "digest": {"cadence": "hourly"}},
        "mentions": {"digest": {"cadence": "daily", "hour": 8}},
    },
    "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
}


def effective(body: dict[str, Any], category: str, channel: str) -> tuple[bool, str]:
    setting = body["effective"]["categories"][category]["channels"][channel]
    return setting["enabled"], setting["source"]


def digest(body: dict[str, Any], category: str) -> tuple[str, int | None, str]:
    setting = body["effective"]["categories"][category]["digest"]
    return setting["cadence"], setting["hour"], setting["source"]


async def test_a_user_puts_and_gets_their_choices(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    put = await client.put("/v1/users/u-ann/preferences", json=CHOICES, headers=producer)

    assert put.status_code == 200, put.text
    body = put.json()
    assert body["owner"] == {"kind": "user", "id": "u-ann"}
    assert body["choices"] == CHOICES
    assert body["effective"]["tenant"] is None
    assert set(body["effective"]["categories"]) == {
        "billing",
        "comments",
        "invitations",
        "mentions",
        "security",
    }
    assert body["effective"]["categories"]["comments"] == {
        "mandatory": False,
        "channels": {
            "in_app": {"enabled": True, "source": "user"},
            "email": {"enabled": True, "source": "user"},
        },
        "digest": {"cadence": "hourly", "hour": None, "source": "user"},
    }
    assert effective(body, "mentions", "email") == (False, "user")  # the global opt-out
    assert digest(body, "mentions") == ("daily", 8, "user")
    assert effective(body, "security", "email") == (True, "mandatory")
    assert body["effective"]["categories"]["security"]["mandatory"] is True
    assert body["effective"]["quiet_hours"] == {
        "start": "22:00",
        "end": "07:00",
        "timezone": "Europe/Paris",
        "source": "user",
    }
    got = await client.get("/v1/users/u-ann/preferences", headers=producer)
    assert got.status_code == 200
    assert got.json() == body
    again = await client.put("/v1/users/u-ann/preferences", json=CHOICES, headers=producer)
    assert again.json() == body


async def test_put_replaces_the_whole_document(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    await client.put("/v1/users/u-ann/preferences", json=CHOICES, headers=producer)

    smaller = {"categories": {"comments": {"channels": {"email": False}}}}
    body = (await client.put("/v1/users/u-ann/preferences", json=smaller, headers=producer)).json()

    assert body["choices"] == smaller
    assert effective(body, "mentions", "email") == (True, "default")
    assert body["effective"]["quiet_hours"] is None
    cleared = await client.put("/v1/users/u-ann/preferences", json={}, headers=producer)
    assert cleared.json()["choices"] == {}


async def test_the_document_comes_back_normalised(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    sent = {
        "channels": {},
        "categories": {
            "comments": {"channels": {"email": None}, "digest": {"cadence": "daily"}},
            "mentions": {},
        },
        "quiet_hours": {"start": "23:30", "end": "06:00", "timezone": None},
    }

    body = (await client.put("/v1/users/u-ann/preferences", json=sent, headers=producer)).json()

    assert body["choices"] == {
        "categories": {"comments": {"digest": {"cadence": "daily", "hour": 9}}},
        "quiet_hours": {"start": "23:30", "end": "06:00"},
    }
    assert body["effective"]["quiet_hours"]["timezone"] is None


async def test_a_user_without_preferences_gets_the_defaults(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    body = (await client.get("/v1/users/u-nobody/preferences", headers=producer)).json()

    assert body["choices"] == {}
    assert effective(body, "comments", "email") == (True, "default")
    assert effective(body, "invitations", "email") == (False, "catalog")
    assert effective(body, "invitations", "in_app") == (True, "default")
    assert digest(body, "comments") == ("instant", None, "default")
    assert body["effective"]["quiet_hours"] is None


async def test_tenant_defaults_sit_under_the_users_choices_and_over_the_catalogs(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    tenant_choices = {
        "channels": {"email": False},
        "categories": {
            "invitations": {"channels": {"email": True}},
            "comments": {"digest": {"cadence": "daily", "hour": 18}},
        },
        "quiet_hours": {"start": "20:00", "end": "08:00"},
    }
    tenant = await client.put("/v1/tenants/acme/preferences", json=tenant_choices, headers=producer)
    assert tenant.status_code == 200, tenant.text
    assert tenant.json()["owner"] == {"kind": "tenant", "id": "acme"}
    assert tenant.json()["effective"]["tenant"] == "acme"
    assert effective(tenant.json(), "invitations", "email") == (True, "tenant")
    assert effective(tenant.json(), "comments", "in_app") == (True, "default")
    user_choices = {"categories": {"mentions": {"channels": {"email": True}}}}
    await client.put("/v1/users/u-ann/preferences", json=user_choices, headers=producer)

    body = (await client.get("/v1/users/u-ann/preferences?tenant=acme", headers=producer)).json()

    assert body["effective"]["tenant"] == "acme"
    assert body["choices"] == user_choices
    assert effective(body, "mentions", "email") == (True, "user")
    assert effective(body, "comments", "email") == (False, "tenant")
    assert effective(body, "invitations", "email") == (True, "tenant")  # over the catalog
    assert effective(body, "security", "email") == (True, "mandatory")
    assert digest(body, "comments") == ("daily", 18, "tenant")
    assert body["effective"]["quiet_hours"]["source"] == "tenant"

    alone = (await client.get("/v1/users/u-ann/preferences", headers=producer)).json()
    assert effective(alone, "comments", "email") == (True, "default")
    assert effective(alone, "invitations", "email") == (False, "catalog")
    assert alone["effective"]["quiet_hours"] is None

    other = (await client.get("/v1/users/u-ann/preferences?tenant=globex", headers=producer)).json()
    assert other["effective"]["tenant"] == "globex"
    assert effective(other, "comments", "email") == (True, "default")


async def test_an_end_user_reads_and_sets_their_own(
    client: httpx.AsyncClient, producer: dict[str, str], user_headers: Headers
) -> None:
    await client.put(
        "/v1/tenants/acme/preferences",
        json={"categories": {"comments": {"digest": {"cadence": "hourly"}}}},
        headers=producer,
    )
    mine = {"categories": {"comments": {"channels": {"email": False}}}}

    put = await client.put("/v1/me/preferences", json=mine, headers=user_headers("u-bob"))

    assert put.status_code == 200, put.text
    assert put.json()["owner"] == {"kind": "user", "id": "u-bob"}
    assert put.json()["choices"] == mine
    got = await client.get("/v1/me/preferences?tenant=acme", headers=user_headers("u-bob"))
    assert effective(got.json(), "comments", "email") == (False, "user")
    assert digest(got.json(), "comments") == ("hourly", None, "tenant")
    seen_by_producer = await client.get("/v1/users/u-bob/preferences?tenant=acme", headers=producer)
    assert seen_by_producer.json() == got.json()
    other = await client.get("/v1/me/preferences", headers=user_headers("u-ann"))
    assert other.json()["choices"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/u-ann/preferences",
        "/v1/tenants/acme/preferences",
        "/v1/users/u-ann/preferences?tenant=acme",
    ],
)
async def test_a_mandatory_category_cannot_be_turned_off(
    client: httpx.AsyncClient, producer: dict[str, str], path: str
) -> None:
    before = (await client.get(path, headers=producer)).json()
    body = {
        "channels": {"email": False},
        "categories": {"security": {"channels": {"in_app": True, "email": False}}},
    }

    response = await client.put(path, json=body, headers=producer)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "mandatory_category"
    assert error["field"] == "categories.security.channels.email"
    assert "cannot be turned off" in error["message"]
    assert (await client.get(path, headers=producer)).json() == before


async def test_a_global_opt_out_does_not_reach_mandatory_categories(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    body = {"channels": {"email": False, "in_app": False}}

    response = await client.put("/v1/users/u-ann/preferences", json=body, headers=producer)

    assert response.status_code == 200
    assert effective(response.json(), "billing", "email") == (True, "mandatory")
    assert effective(response.json(), "billing", "in_app") == (True, "mandatory")
    assert effective(response.json(), "comments", "in_app") == (False, "user")


def quiet(**fields: Any) -> dict[str, Any]:
    return {"quiet_hours": {"start": "22:00", "end": "07:00", **fields}}


def comments_digest(**fields: Any) -> dict[str, Any]:
    return {"categories": {"comments": {"digest": fields}}}


# id: (body, error code, field)
INVALID: dict[str, tuple[Any, str, str]] = {
    "unknown category": ({"categories": {"coments": {}}}, "unknown_category", "categories.coments"),
    "unknown channel": ({"channels": {"sms": True}}, "invalid", "channels.sms"),
    "unknown channel in a category": (
        {"categories": {"comments": {"channels": {"sms": False}}}},
        "invalid",
        "categories.comments.channels.sms",
    ),
    "switch not a boolean": ({"channels": {"email": "no"}}, "invalid", "channels.email"),
    "unknown field": ({"digest": {"cadence": "daily"}}, "invalid", "digest"),
    "invalid timezone": (quiet(timezone="Mars/Olympus_Mons"), "invalid", "quiet_hours.timezone"),
    "empty window": (quiet(end="22:00"), "invalid", "quiet_hours.end"),
    "time without leading zero": (quiet(start="7:00"), "invalid", "quiet_hours.start"),
    "time past midnight": (quiet(end="24:00"), "invalid", "quiet_hours.end"),
    "time with seconds": (quiet(end="07:00:00"), "invalid", "quiet_hours.end"),
    "time as a number": (quiet(start=22), "invalid", "quiet_hours.start"),
    "quiet hours without an end": (
        {"quiet_hours": {"start": "22:00"}},
        "invalid",
        "quiet_hours.end",
    ),
    "hour over 23": (
        comments_digest(cadence="daily", hour=24),
        "invalid",
        "categories.comments.digest.hour",
    ),
    "negative hour": (
        comments_digest(cadence="daily", hour=-1),
        "invalid",
        "categories.comments.digest.hour",
    ),
    "hour as a string": (
        comments_digest(cadence="daily", hour="8"),
        "invalid",
        "categories.comments.digest.hour",
    ),
    "hour with an hourly cadence": (
        comments_digest(cadence="hourly", hour=8),
        "invalid",
        "categories.comments.digest.hour",
    ),
    "unknown cadence": (
        comments_digest(cadence="weekly"),
        "invalid",
        "categories.comments.digest.cadence",
    ),
    "not an object": ([], "invalid", "body"),
}


@pytest.mark.parametrize(("body", "code", "field"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_choices_are_rejected_with_their_field(
    client: httpx.AsyncClient, producer: dict[str, str], body: Any, code: str, field: str
) -> None:
    await client.put("/v1/users/u-ann/preferences", json=CHOICES, headers=producer)

    response = await client.put("/v1/users/u-ann/preferences", json=body, headers=producer)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]
    got = await client.get("/v1/users/u-ann/preferences", headers=producer)
    assert got.json()["choices"] == CHOICES


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/users/u-ann/preferences?tenant=no%20spaces", "tenant"),
        ("/v1/me/preferences?tenant=", "tenant"),
        ("/v1/tenants/-acme/preferences", "tenant_id"),
    ],
)
async def test_a_malformed_tenant_is_rejected(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    user_headers: Headers,
    path: str,
    field: str,
) -> None:
    headers = user_headers("u-ann") if path.startswith("/v1/me") else producer

    response = await client.get(path, headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users/u-ann/preferences"),
        ("PUT", "/v1/users/u-ann/preferences"),
        ("GET", "/v1/me/preferences"),
        ("PUT", "/v1/me/preferences"),
        ("GET", "/v1/tenants/acme/preferences"),
        ("PUT", "/v1/tenants/acme/preferences"),
    ],
)
async def test_every_endpoint_needs_credentials(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_keys_and_user_tokens_are_not_interchangeable(
    client: httpx.AsyncClient, producer: dict[str, str], user_headers: Headers
) -> None:
    as_user = await client.get("/v1/users/u-bob/preferences", headers=user_headers("u-bob"))
    tenant_as_user = await client.put(
        "/v1/tenants/acme/preferences", json={}, headers=user_headers("u-bob")
    )
    me_as_producer = await client.get("/v1/me/preferences", headers=producer)

    assert [as_user.status_code, tenant_as_user.status_code, me_as_producer.status_code] == [
        403,
        403,
        403,
    ]


async def test_unsubscribing_turns_the_categorys_email_off(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await client.put(
        "/v1/users/u-bob/preferences",
        json={"categories": {"comments": {"digest": {"cadence": "hourly"}}}},
        headers=producer,
    )
    url = runtime.composer.unsubscribe_for("u-bob", "comments", "bob@example.com").url

    done = await client.post(urllib.parse.urlsplit(url).path)

    assert done.status_code == 200
    body = (await client.get("/v1/users/u-bob/preferences", headers=producer)).json()
    assert body["choices"] == {
        "categories": {"comments": {"channels": {"email": False}, "digest": {"cadence": "hourly"}}}
    }
    assert effective(body, "comments", "email") == (False, "user")
    assert effective(body, "comments", "in_app") == (True, "default")
    assert effective(body, "mentions", "email") == (True, "default")


async def test_a_switch_on_every_category_is_the_global_one(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await runtime.preferences.set_channel("u-bob", "*", "email", enabled=False, source="test")

    body = (await client.get("/v1/users/u-bob/preferences", headers=producer)).json()

    assert body["choices"] == {"channels": {"email": False}}
    assert effective(body, "comments", "email") == (False, "user")
    assert effective(body, "security", "email") == (True, "mandatory")


async def test_concurrent_switches_all_land(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    categories = [f"category-{i}" for i in range(20)]

    await asyncio.gather(
        *(
            runtime.preferences.set_channel("u-bob", name, "email", enabled=False, source="test")
            for name in categories
        )
    )

    body = (await client.get("/v1/users/u-bob/preferences", headers=producer)).json()
    assert body["choices"] == {
        "categories": {name: {"channels": {"email": False}} for name in sorted(categories)}
    }


async def test_planning_reads_every_users_and_tenants_choices(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await client.put(
        "/v1/tenants/acme/preferences", json={"channels": {"email": False}}, headers=producer
    )
    await client.put(
        "/v1/users/u-ann/preferences",
        json={"categories": {"comments": {"channels": {"email": True}}}},
        headers=producer,
    )
    comments = runtime.catalog.category("comments")
    users = ["u-ann", "u-bob", *(f"u-{i}" for i in range(1500))]

    async with runtime.db.reader() as conn:
        planning = await runtime.preferences.for_planning(conn, users, ["acme", "globex"])

    assert planning.of("u-ann", "acme").channel(comments, "email").source == "user"
    assert planning.of("u-bob", "acme").channel(comments, "email").value is False
    assert planning.of("u-bob", "globex").channel(comments, "email").source == "default"
    assert planning.of("u-bob", "acme") is planning.of("u-bob", "acme")


async def test_without_declared_categories_any_well_formed_name_is_accepted(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    types = tmp_path / "catalog"
    shutil.copytree(CATALOG, types, ignore=shutil.ignore_patterns("categories.yaml"))
    app = create_app(runtime=build_runtime(make_settings(database_url=database_url, catalog=types)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tidings.test"
        ) as client,
    ):
        _key, secret = await app.state.runtime.auth.create_key("tests", ["*", "preferences:write"])
        headers = {"Authorization": f"Bearer {secret}"}
        path = "/v1/users/u-ann/preferences"

        accepted = await client.put(
            path, json={"categories": {"news": {"channels": {"email": False}}}}, headers=headers
        )
        malformed = await client.put(path, json={"categories": {"News!": {}}}, headers=headers)

    assert accepted.status_code == 200, accepted.text
    assert set(accepted.json()["effective"]["categories"]) == {
        "comments",
        "invitations",
        "mentions",
        "security",
    }
    assert effective(accepted.json(), "security", "email") == (True, "default")
    assert malformed.status_code == 422
    assert (malformed.json()["error"]["code"], malformed.json()["error"]["field"]) == (
        "invalid",
        "categories.News!",
    )
