"""HTTP for preferences: a producer's view of a user's, the user's own, a tenant's defaults."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from tidings.auth.dependencies import EndUser, PreferencesReader, PreferencesWriter
from tidings.preferences import schemas
from tidings.preferences.service import PreferencesService
from tidings.users.schemas import Tenant

router = APIRouter(prefix="/v1", tags=["preferences"])

UserIdPath = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
TenantPath = Annotated[Tenant, Path()]
TenantQuery = Annotated[
    Tenant | None, Query(description="apply this tenant's defaults under the user's choices")
]


async def preferences_service(request: Request) -> PreferencesService:
    service: PreferencesService = request.app.state.preferences
    return service


Preferences = Annotated[PreferencesService, Depends(preferences_service)]


@router.get("/users/{user_id}/preferences", response_model=schemas.PreferencesView)
async def get_user_preferences(
    user_id: UserIdPath,
    _key: PreferencesReader,
    preferences: Preferences,
    tenant: TenantQuery = None,
) -> schemas.PreferencesView:
    """A user's choices, and what applies to them (in ``tenant`` when given; scope
    ``preferences:read``)."""
    return await preferences.get("user", user_id, tenant)


@router.put("/users/{user_id}/preferences", response_model=schemas.PreferencesView)
async def put_user_preferences(
    user_id: UserIdPath,
    body: schemas.ChoicesIn,
    _key: PreferencesWriter,
    preferences: Preferences,
    tenant: TenantQuery = None,
) -> schemas.PreferencesView:
    """Replace a user's whole choices document (a user without a profile is fine; scope
    ``preferences:write``)."""
    return await preferences.put("user", user_id, body, tenant)


@router.get("/me/preferences", response_model=schemas.PreferencesView)
async def get_my_preferences(
    user: EndUser, preferences: Preferences, tenant: TenantQuery = None
) -> schemas.PreferencesView:
    """Your choices, and what applies to you (in ``tenant`` when given)."""
    return await preferences.get("user", user, tenant)


@router.put("/me/preferences", response_model=schemas.PreferencesView)
async def put_my_preferences(
    body: schemas.ChoicesIn, user: EndUser, preferences: Preferences, tenant: TenantQuery = None
) -> schemas.PreferencesView:
    """Replace your whole choices document."""
    return await preferences.put("user", user, body, tenant)


@router.get("/tenants/{tenant_id}/preferences", response_model=schemas.PreferencesView)
async def get_tenant_preferences(
    tenant_id: TenantPath, _key: PreferencesReader, preferences: Preferences
) -> schemas.PreferencesView:
    """A tenant's defaults, and what they add up to over the catalog's (scope
    ``preferences:read``)."""
    return await preferences.get("tenant", tenant_id)


@router.put("/tenants/{tenant_id}/preferences", response_model=schemas.PreferencesView)
async def put_tenant_preferences(
    tenant_id: TenantPath,
    body: schemas.ChoicesIn,
    _key: PreferencesWriter,
    preferences: Preferences,
) -> schemas.PreferencesView:
    """Replace a tenant's defaults: they apply under each of its users' own choices (scope
    ``preferences:write``)."""
    return await preferences.put("tenant", tenant_id, body)
