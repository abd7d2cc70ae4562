"""HTTP for the browser: the widget's script, and the demo page with its small API."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings.kit import errors
from tidings.web.demo import Demo

if TYPE_CHECKING:
    from tidings.app.runtime import Runtime

WIDGET_PATH = "/widget/tidings-inbox.js"

widget_router = APIRouter(include_in_schema=False)
demo_router = APIRouter(include_in_schema=False)


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """A file shipped in ``tidings/web/static`` and its ETag; read once per process."""
    content = (resources.files("tidings.web") / "static" / name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


@widget_router.get(WIDGET_PATH)
async def widget_script(request: Request) -> Response:
    """The ``<tidings-inbox>`` web component: one file, no dependencies, cacheable."""
    content, etag = _asset("tidings-inbox.js")
    headers = {
        "ETag": etag,
        # Revalidated hourly, so an upgrade reaches pages within the hour.
        "Cache-Control": "public, max-age=3600",
        # Any page may load the script (also as a module); the API decides who may call it.
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="text/javascript; charset=utf-8", headers=headers)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str


class SessionOut(BaseModel):
    user: str
    token: str


class FireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    to: str = Field(description="the example user whose inbox gets it")
    actor: str = Field(description="the example user it comes from")


class FiredOut(BaseModel):
    event_id: str


async def _demo(request: Request) -> Demo:
    runtime: Runtime = request.app.state.runtime
    return Demo(
        runtime.catalog, runtime.events, runtime.auth, runtime.delivery, runtime.mail_catcher
    )


def is_loopback(request: Request) -> bool:
    """Whether the request comes from this machine (127.0.0.0/8 or ::1), as the server
    sees the client: behind a proxy, the address the proxy forwards when it is trusted."""
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _remote_allowed(request: Request) -> None:
    """The demo's pages and tokens only for this machine, unless ``TIDINGS_DEMO_REMOTE``."""
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.demo_remote and not is_loopback(request):
        raise errors.Forbidden(
            "The demo is served only to this machine (loopback): it hands out tokens for "
            "its example users. Open it on the machine running Tidings, or set "
            "TIDINGS_DEMO_REMOTE=true to serve it to others.",
            field="client",
        )


async def _local_only(request: Request) -> None:
    """The mail the catcher holds (password resets, unsubscribe links) for this machine
    only, whatever the settings."""
    if not is_loopback(request):
        raise errors.Forbidden(
            "The demo's mailbox is shown only on the machine running Tidings (loopback).",
            field="client",
        )


DemoDep = Annotated[Demo, Depends(_demo)]
Served = [Depends(_remote_allowed)]


@demo_router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/demo", status_code=307)


@demo_router.get("/demo")
async def demo_page(request: Request) -> HTMLResponse:
    """A page to fire example events as example users and watch the inbox and mailbox."""
    try:
        await _remote_allowed(request)
    except errors.Forbidden as exc:
        return HTMLResponse(_refusal(exc.message), status_code=403)
    content, _etag = _asset("demo.html")
    return HTMLResponse(content, headers={"Cache-Control": "no-cache"})


def _refusal(message: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Tidings demo</title>"
        f"<h1>Tidings demo</h1><p>{message}</p></html>"
    )


@demo_router.get("/demo/api/setup", dependencies=Served)
async def demo_setup(request: Request, demo: DemoDep) -> dict[str, Any]:
    """The example users and the types the demo can fire."""
    return demo.setup() | {"local": is_loopback(request)}


@demo_router.post("/demo/api/session", response_model=SessionOut, dependencies=Served)
async def demo_session(body: SessionIn, demo: DemoDep) -> SessionOut:
    """A user token for one example user, for the widget on the demo page."""
    return SessionOut(user=body.user, token=demo.token(body.user))


@demo_router.post("/demo/api/fire", status_code=202, response_model=FiredOut, dependencies=Served)
async def demo_fire(body: FireIn, demo: DemoDep) -> FiredOut:
    """Publish a type's example event from one example user to another."""
    return FiredOut(event_id=await demo.fire(body.type, to=body.to, actor=body.actor))


@demo_router.get("/demo/api/events/{event_id}", dependencies=Served)
async def demo_outcome(event_id: str, demo: DemoDep) -> dict[str, Any]:
    """What became of a fired event: each delivery's channel, state and reason."""
    return {"deliveries": await demo.outcome(event_id)}


@demo_router.get("/demo/api/mailbox", dependencies=[Depends(_local_only)])
async def demo_mailbox(
    demo: DemoDep, user: str, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, Any]:
    """The newest emails the mail catcher holds for one example user (loopback only)."""
    return {"messages": await demo.mailbox(user, limit)}
