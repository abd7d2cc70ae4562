"""HTTP for profiles and topic subscriptions (producer API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from tidings.auth.dependencies import (
    TopicsReader,
    TopicsWriter,
    UsersEraser,
    UsersReader,
    UsersWriter,
)
from tidings.users import schemas
from tidings.users.service import UsersService

router = APIRouter(prefix="/v1", tags=["users"])

UserIdPath = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
TopicPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,254}$")]


async def users_service(request: Request) -> UsersService:
    service: UsersService = request.app.state.users
    return service


Users = Annotated[UsersService, Depends(users_service)]


@router.put("/users/{user_id}", response_model=schemas.Profile)
async def put_user(
    user_id: UserIdPath, body: schemas.ProfileIn, _key: UsersWriter, users: Users
) -> schemas.Profile:
    """Create or replace a recipient's profile (scope ``users:write``)."""
    return await users.put_profile(user_id, body)


@router.get("/users/{user_id}", response_model=schemas.Profile)
async def get_user(user_id: UserIdPath, _key: UsersReader, users: Users) -> schemas.Profile:
    """A recipient's profile (scope ``users:read``)."""
    return await users.get_profile(user_id)


@router.delete("/users/{user_id}", status_code=204)
async def delete_user(user_id: UserIdPath, _key: UsersEraser, users: Users) -> Response:
    """Erase a recipient: profile, inbox, subscriptions; deliveries are pseudonymised
    (scope ``users:erase``)."""
    await users.erase(user_id)
    return Response(status_code=204)


@router.put("/topics/{topic}/subscribers", response_model=schemas.SubscribersChanged)
async def subscribe(
    topic: TopicPath, body: schemas.SubscribersIn, _key: TopicsWriter, users: Users
) -> schemas.SubscribersChanged:
    """Subscribe users to a topic (idempotent: ``changed`` counts the new ones; scope
    ``topics:write``)."""
    changed = await users.subscribe(topic, body.user_ids)
    return schemas.SubscribersChanged(topic=topic, changed=changed)


@router.delete("/topics/{topic}/subscribers", response_model=schemas.SubscribersChanged)
async def unsubscribe(
    topic: TopicPath, body: schemas.SubscribersIn, _key: TopicsWriter, users: Users
) -> schemas.SubscribersChanged:
    """Unsubscribe users from a topic (``changed`` counts those who were subscribed; scope
    ``topics:write``)."""
    changed = await users.unsubscribe(topic, body.user_ids)
    return schemas.SubscribersChanged(topic=topic, changed=changed)


@router.get("/topics/{topic}/subscribers", response_model=schemas.SubscriberPage)
async def list_subscribers(
    topic: TopicPath,
    _key: TopicsReader,
    users: Users,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.SubscriberPage:
    """A topic's subscribers in user-id order; pass ``next_cursor`` back for the next page
    (scope ``topics:read``)."""
    return await users.subscribers(topic, cursor, limit)
