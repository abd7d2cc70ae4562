"""FastAPI dependencies: who is calling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from tidings.auth import keys
from tidings.auth.keys import ApiKey
from tidings.auth.rate_limit import Limiter
from tidings.auth.service import AuthService
from tidings.kit import errors

# The security schemes the OpenAPI document declares, so that Swagger UI's Authorize
# button and generated clients send the credential. They only describe: the dependencies
# below read the raw credential themselves (auto_error=False), so a missing or malformed
# one still gets Tidings' own 401 and 403 bodies.
PRODUCER_KEY = HTTPBearer(
    scheme_name="producerKey",
    description="A producer's API key (tidings keys create). The scopes an operation lists "
    "are the capability scopes the key needs; a key with 'admin' holds them all.",
    auto_error=False,
)
USER_TOKEN = HTTPBearer(
    scheme_name="userToken",
    description="An end user's token (tidings token USER, or your backend's): opens /v1/me.",
    auto_error=False,
)
USER_TOKEN_QUERY = APIKeyQuery(
    name="token",
    scheme_name="userTokenQuery",
    description="The same user token in the query, for EventSource, which cannot send headers.",
    auto_error=False,
)
Declared = HTTPAuthorizationCredentials | None
"""What a bearer scheme's dependency gives; unused, since the header is read raw."""


# Dependencies are coroutines: FastAPI would run plain functions in a thread pool, which
# costs more than the work they do.
async def auth_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def rate_limits(request: Request) -> Limiter:
    limits: Limiter = request.app.state.rate_limits
    return limits


async def producer(
    request: Request,
    service: Annotated[AuthService, Depends(auth_service)],
    limits: Annotated[Limiter, Depends(rate_limits)],
    _scheme: Annotated[Declared, Depends(PRODUCER_KEY)],
) -> ApiKey:
    """The API key of a producer's request (401 without a valid one, 403 for a user
    token, 429 over its rate)."""
    return await producer_key(request, service, limits)


async def producer_key(
    request: Request, service: AuthService | None = None, limits: Limiter | None = None
) -> ApiKey:
    """What ``producer`` gives, for a route that does not go through FastAPI's
    dependencies; the services default to the application's."""
    if service is None:
        service = request.app.state.auth
    if limits is None:
        limits = request.app.state.rate_limits
    authorization = request.headers.get("authorization")
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
    request: Request,
    service: Annotated[AuthService, Depends(auth_service)],
    limits: Annotated[Limiter, Depends(rate_limits)],
    _scheme: Annotated[Declared, Depends(USER_TOKEN)],
    token: Annotated[str | None, Depends(USER_TOKEN_QUERY)],
) -> str:
    """The user id behind a user token (401 without a valid one, 403 for an API key,
    429 over its rate)."""
    authorization = request.headers.get("authorization")
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


async def operator(
    key: Annotated[ApiKey, Security(producer, scopes=[keys.OPERATOR_SCOPE])],
) -> ApiKey:
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

    # A default, not an annotation: an annotation naming the local ``capability`` could
    # not be resolved later, since this module postpones annotations.
    async def holder(key: ApiKey = Security(producer, scopes=[capability])) -> ApiKey:
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
