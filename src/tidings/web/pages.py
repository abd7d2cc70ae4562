"""HTTP for the browser: the widget's script, and the demo page with its small API."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings.web.demo import Demo

if TYPE_CHECKING:
    from tidings.app import Runtime

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


DemoDep = Annotated[Demo, Depends(_demo)]


@demo_router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/demo", status_code=307)


@demo_router.get("/demo")
async def demo_page() -> HTMLResponse:
    """A page to fire example events as example users and watch the inbox and mailbox."""
    content, _etag = _asset("demo.html")
    return HTMLResponse(content, headers={"Cache-Control": "no-cache"})


@demo_router.get("/demo/api/setup")
async def demo_setup(demo: DemoDep) -> dict[str, Any]:
    """The example users and the types the demo can fire."""
    return demo.setup()


@demo_router.post("/demo/api/session", response_model=SessionOut)
async def demo_session(body: SessionIn, demo: DemoDep) -> SessionOut:
    """A user token for one example user, for the widget on the demo page."""
    return SessionOut(user=body.user, token=demo.token(body.user))


@demo_router.post("/demo/api/fire", status_code=202, response_model=FiredOut)
async def demo_fire(body: FireIn, demo: DemoDep) -> FiredOut:
    """Publish a type's example event from one example user to another."""
    return FiredOut(event_id=await demo.fire(body.type, to=body.to, actor=body.actor))


@demo_router.get("/demo/api/events/{event_id}")
async def demo_outcome(event_id: str, demo: DemoDep) -> dict[str, Any]:
    """What became of a fired event: each delivery's channel, state and reason."""
    return {"deliveries": await demo.outcome(event_id)}


@demo_router.get("/demo/api/mailbox")
async def demo_mailbox(
    demo: DemoDep, user: str, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, Any]:
    """The newest emails the mail catcher holds for one example user."""
    return {"messages": await demo.mailbox(user, limit)}
