"""FastAPI dependencies: who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from tidings.auth.keys import ApiKey
from tidings.auth.service import AuthService
from tidings.kit import errors


# Dependencies are coroutines: FastAPI would run plain functions in a thread pool, which
# costs more than the work they do.
async def auth_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def producer(
    service: Annotated[AuthService, Depends(auth_service)],
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The API key of a producer's request (401 without a valid one)."""
    return await service.authenticate_key(authorization)


async def end_user(
    service: Annotated[AuthService, Depends(auth_service)],
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="User token, for EventSource")] = None,
) -> str:
    """The user id behind a user token (401 without a valid one)."""
    return service.authenticate_user(authorization, token)


async def operator(key: Annotated[ApiKey, Depends(producer)]) -> ApiKey:
    """An operator's API key, one with the ``admin`` scope (401 without a key, 403 with
    another)."""
    if not key.is_operator:
        raise errors.Forbidden(
            "This needs an operator's key: one created with the 'admin' scope "
            "(tidings keys create --name ops --types admin).",
            field="authorization",
        )
    return key


Producer = Annotated[ApiKey, Depends(producer)]
Operator = Annotated[ApiKey, Depends(operator)]
EndUser = Annotated[str, Depends(end_user)]
