"""FastAPI dependencies: who is calling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from tidings.auth import keys
from tidings.auth.keys import ApiKey
from tidings.auth.rate_limit import Limiter
from tidings.auth.service import AuthService
from tidings.kit import errors


# Dependencies are coroutines: FastAPI would run plain functions in a thread pool, which
# costs more than the work they do.
async def auth_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def rate_limits(request: Request) -> Limiter:
    limits: Limiter = request.app.state.rate_limits
    return limits


async def producer(
    service: Annotated[AuthService, Depends(auth_service)],
    limits: Annotated[Limiter, Depends(rate_limits)],
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The API key of a producer's request (401 without a valid one, 403 for a user
    token, 429 over its rate)."""
    try:
        key = await service.authenticate_key(authorization)
    except errors.Unauthenticated:
        if _is_user_token(service, authorization):
            raise errors.Forbidden(
                "This needs a producer's API key; a user token opens only /v1/me.",
                field="authorization",
            ) from None
        raise
    await limits.acquire(f"key:{key.id}")
    return key


async def end_user(
    service: Annotated[AuthService, Depends(auth_service)],
    limits: Annotated[Limiter, Depends(rate_limits)],
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(description="User token, for EventSource")] = None,
) -> str:
    """The user id behind a user token (401 without a valid one, 403 for an API key,
    429 over its rate)."""
    try:
        user_id = service.authenticate_user(authorization, token)
    except errors.Unauthenticated:
        if not token and await _is_api_key(service, authorization):
            raise errors.Forbidden(
                "This needs an end user's token; an API key does not open /v1/me.",
                field="authorization",
            ) from None
        raise
    await limits.acquire(f"user:{user_id}")
    return user_id


def _is_user_token(service: AuthService, authorization: str | None) -> bool:
    try:
        service.authenticate_user(authorization, None)
    except errors.Unauthenticated:
        return False
    return True


async def _is_api_key(service: AuthService, authorization: str | None) -> bool:
    try:
        await service.authenticate_key(authorization)
    except errors.Unauthenticated:
        return False
    return True


async def operator(key: Annotated[ApiKey, Depends(producer)]) -> ApiKey:
    """An operator's API key, one with the ``admin`` scope (401 without a key, 403 with
    another)."""
    if not key.is_operator:
        raise errors.Forbidden(
            "This needs an operator's key: one created with the 'admin' scope "
            "(tidings keys create --name ops --scope admin).",
            field="authorization",
        )
    return key


def requires(capability: str) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency: a producer's key that holds ``capability`` (or ``admin``); 401
    without a key, 403 naming the scope to ask for with another."""
    assert capability in keys.CAPABILITIES, capability

    async def holder(key: Annotated[ApiKey, Depends(producer)]) -> ApiKey:
        if not key.has(capability):
            raise errors.Forbidden(
                f"This needs the {capability!r} scope ({keys.CAPABILITIES[capability]}); "
                f"the key {key.name!r} has {', '.join(key.scopes)}. An operator creates a key "
                f"with it: tidings keys create --name <name> --scope {capability}.",
                field="authorization",
                scope=capability,
            )
        return key

    return holder


Producer = Annotated[ApiKey, Depends(producer)]
Operator = Annotated[ApiKey, Depends(operator)]
EndUser = Annotated[str, Depends(end_user)]
UsersReader = Annotated[ApiKey, Depends(requires(keys.USERS_READ))]
UsersWriter = Annotated[ApiKey, Depends(requires(keys.USERS_WRITE))]
UsersEraser = Annotated[ApiKey, Depends(requires(keys.USERS_ERASE))]
TopicsReader = Annotated[ApiKey, Depends(requires(keys.TOPICS_READ))]
TopicsWriter = Annotated[ApiKey, Depends(requires(keys.TOPICS_WRITE))]
PreferencesReader = Annotated[ApiKey, Depends(requires(keys.PREFERENCES_READ))]
PreferencesWriter = Annotated[ApiKey, Depends(requires(keys.PREFERENCES_WRITE))]
MailboxReader = Annotated[ApiKey, Depends(requires(keys.DEV_MAILBOX))]
