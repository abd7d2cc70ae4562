"""Nothing is fetched when a catalog loads or an email renders: no fonts, no stylesheets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tidings import catalog


class _Recorder(BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = b"p { color: red; }"
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """A stylesheet server on loopback that records every request it gets."""
    requests: list[str] = []
    handler = type("Handler", (_Recorder,), {"paths": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


TYPE = """\
key: thing.happened
category: things
description: Something happened.
schema: {{type: object}}
example: {{what: it}}
channels:
  email:
    subject: Hi
    {body}
"""


def load(tmp_path: Path, body: str) -> catalog.NotificationType:
    (tmp_path / "thing.yaml").write_text(TYPE.format(body=body), encoding="utf-8")
    notification_type = catalog.load(tmp_path).get("thing.happened")
    assert notification_type is not None
    return notification_type


def test_mjml_web_fonts_are_neither_fetched_nor_linked(
    tmp_path: Path, web: tuple[str, list[str]]
) -> None:
    url, requests = web
    mjml = (
        f'<mjml><mj-head><mj-font name="Brand" href="{url}/font.css" /></mj-head>'
        '<mj-body><mj-section><mj-column><mj-text font-family="Brand, Arial">{{ data.what }}'
        "</mj-text></mj-column></mj-section></mj-body></mjml>"
    )

    email = load(tmp_path, f"mjml: '{mjml}'").render_email({"data": {"what": "x"}}, None)

    assert requests == []
    assert url not in email.html
    assert "<link" not in email.html
    assert "@import" not in email.html
    assert "font-family:Brand, Arial" in email.html  # the font stack stays


def test_mjml_default_fonts_are_not_linked(tmp_path: Path) -> None:
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>{{ data.what }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )

    html = load(tmp_path, f"mjml: '{mjml}'").render_email({"data": {"what": "x"}}, None).html

    assert "fonts.googleapis" not in html
    assert "<link" not in html


def test_remote_stylesheets_in_html_are_neither_fetched_nor_kept(
    tmp_path: Path, web: tuple[str, list[str]]
) -> None:
    url, requests = web
    html = (
        f'<html><head><link rel="stylesheet" href="{url}/style.css">'
        f"<style>@import url({url}/import.css); p {{ color: blue; }}</style></head>"
        "<body><p>{{ data.what }}</p></body></html>"
    )

    email = load(tmp_path, f"html: '{html}'").render_email({"data": {"what": "x"}}, None)

    assert requests == []
    assert url not in email.html
    assert '<p style="color: blue;">x</p>' in email.html


def test_mj_include_fetches_nothing(tmp_path: Path, web: tuple[str, list[str]]) -> None:
    url, requests = web
    mjml = f'<mjml><mj-body><mj-include path="{url}/part.mjml" /></mj-body></mjml>'
    (tmp_path / "thing.yaml").write_text(TYPE.format(body=f"mjml: '{mjml}'"), encoding="utf-8")

    [problem] = catalog.check(tmp_path)

    assert problem.field == "channels.email.mjml"
    assert "invalid MJML" in problem.message
    assert requests == []
