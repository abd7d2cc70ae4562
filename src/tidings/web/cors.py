"""Cross-origin access for the end-user API, so a product's pages can embed the widget."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

END_USER_PREFIX = "/v1/me/"


class EndUserCors:
    """CORS for ``/v1/me/…`` only, from the configured origins; every other path stays
    same-origin. Tokens travel in the ``Authorization`` header or ``?token=``, never in
    cookies, so credentials are not allowed."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(END_USER_PREFIX):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)
