"""The API describes itself: a valid OpenAPI document that says how each operation is
authenticated, and reference pages that work without any other host.

Generated clients and Swagger UI's Authorize button read the ``security`` of each
operation; a page that loads its scripts from a CDN is blank on a machine without one.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
from openapi_spec_validator import validate

from tests.integration.test_authorization_matrix import TABLE, Row

PRODUCER_KINDS = {"producer", "scoped", "capability", "operator", "owned_by_key"}


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operation(document: dict[str, Any], row: Row) -> dict[str, Any]:
    """The operation of a matrix row (``{name:path}`` is ``{name}`` in OpenAPI)."""
    path = re.sub(r"\{(\w+):\w+\}", r"{\1}", row.route)
    operation: dict[str, Any] = document["paths"][path][row.method.lower()]
    return operation


def _needs_user_token(row: Row) -> bool:
    return row.owner != 403


async def test_the_document_is_valid_openapi(client: httpx.AsyncClient) -> None:
    validate(await _document(client))


async def test_the_document_declares_a_bearer_scheme_for_keys_and_for_user_tokens(
    client: httpx.AsyncClient,
) -> None:
    schemes = (await _document(client))["components"]["securitySchemes"]
    for name in ("producerKey", "userToken"):
        assert schemes[name]["type"] == "http", schemes
        assert schemes[name]["scheme"].lower() == "bearer", schemes
        assert schemes[name]["description"], schemes
    # EventSource cannot send headers: the live stream takes the token in the query.
    assert schemes["userTokenQuery"] == {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": schemes["userTokenQuery"]["description"],
    }


async def test_every_authenticated_operation_declares_what_it_needs(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    wrong = []
    for row in TABLE:
        security = _operation(document, row).get("security")
        if _needs_user_token(row):
            expected = [{"userToken": []}, {"userTokenQuery": []}]
        elif row.scope is not None:
            expected = [{"producerKey": [row.scope]}]
        elif row.producer_in == 403 and row.admin != 403:
            expected = [{"producerKey": ["admin"]}]
        else:
            expected = [{"producerKey": []}]
        if security != expected:
            wrong.append(f"{row.method} {row.route}: {security}, expected {expected}")
    assert not wrong, "\n".join(wrong)


async def test_no_operation_asks_for_an_authorization_header_parameter(
    client: httpx.AsyncClient,
) -> None:
    """The credential is the security scheme's: a header parameter beside it would be
    ignored by Swagger UI and fuzzed as a plain string by clients."""
    document = await _document(client)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            given = {(p["in"], p["name"].lower()) for p in operation.get("parameters", [])}
            assert not given & {("header", "authorization"), ("query", "token")}, (method, path)


async def test_public_operations_declare_no_security(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    authenticated = {
        (row.method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", row.route)) for row in TABLE
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if (method, path) not in authenticated:
                assert "security" not in operation, (method, path)


class _Assets(HTMLParser):
    """Every URL a page loads: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _loaded_urls(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    # URLs a script builds in the page itself (Swagger UI's bundle URL, the document's).
    parser.urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
    return parser.urls


async def test_the_reference_page_loads_everything_from_tidings(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    html = response.text
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE), html
    urls = _loaded_urls(html)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme, url
        assert not parts.netloc, url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url


async def test_no_reference_page_loads_from_a_cdn(client: httpx.AsyncClient) -> None:
    """ReDoc's script fetches its maker's logo from a CDN whatever it is given: no /redoc."""
    assert (await client.get("/redoc")).status_code == 404
