"""HTTP for producers' status webhooks: ``/v1/webhooks``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from tidings.auth.dependencies import Producer
from tidings.webhooks import schemas
from tidings.webhooks.service import WebhooksService

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EndpointId = Annotated[str, Path(min_length=1, max_length=64)]


async def webhooks_service(request: Request) -> WebhooksService:
    found: WebhooksService = request.app.state.webhooks
    return found


Service = Annotated[WebhooksService, Depends(webhooks_service)]


def _message(row: dict[str, Any]) -> schemas.Message:
    return schemas.Message.model_validate(
        {**row, "log": [schemas.AttemptOut.model_validate(a) for a in row["attempts_log"]]}
    )


@router.post("", status_code=201, response_model=schemas.EndpointWithSecret)
async def create_endpoint(
    body: schemas.EndpointIn, key: Producer, service: Service
) -> schemas.EndpointWithSecret:
    """Register an endpoint to hear of this key's deliveries' state changes. The answer
    holds the signing secret: it is not shown again (rotate it to get a new one)."""
    row = await service.create(
        key,
        url=body.url,
        description=body.description,
        types=body.types,
        states=None if body.states is None else [state.value for state in body.states],
    )
    return schemas.EndpointWithSecret.model_validate(row)


@router.get("", response_model=schemas.EndpointPage)
async def list_endpoints(
    key: Producer,
    service: Service,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> schemas.EndpointPage:
    """This key's endpoints (an operator's key: everyone's), oldest first."""
    rows, next_cursor = await service.page(key, cursor, limit)
    return schemas.EndpointPage(
        items=[schemas.Endpoint.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/{endpoint_id}", response_model=schemas.Endpoint)
async def get_endpoint(
    endpoint_id: EndpointId, key: Producer, service: Service
) -> schemas.Endpoint:
    """One endpoint, with whether it is enabled and, if not, since when and why."""
    return schemas.Endpoint.model_validate(await service.get(key, endpoint_id))


@router.patch("/{endpoint_id}", response_model=schemas.Endpoint)
async def update_endpoint(
    endpoint_id: EndpointId, body: schemas.EndpointChange, key: Producer, service: Service
) -> schemas.Endpoint:
    """Change an endpoint's URL, description or filters, or turn it off or on again."""
    changes = body.model_dump(include=body.model_fields_set, mode="json")
    return schemas.Endpoint.model_validate(await service.update(key, endpoint_id, changes))


@router.delete("/{endpoint_id}", status_code=204, response_class=Response)
async def delete_endpoint(endpoint_id: EndpointId, key: Producer, service: Service) -> Response:
    """Remove an endpoint and its log."""
    await service.delete(key, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=schemas.EndpointWithSecret)
async def rotate_secret(
    endpoint_id: EndpointId,
    key: Producer,
    service: Service,
    body: schemas.Rotation | None = None,
) -> schemas.EndpointWithSecret:
    """A new signing secret. For ``grace_seconds`` (a day unless the body says) the old
    one signs too: every message carries both signatures, so a receiver still checking
    the old secret accepts it while the new one is deployed."""
    rotation = body or schemas.Rotation()
    row = await service.rotate_secret(key, endpoint_id, grace_seconds=rotation.grace_seconds)
    return schemas.EndpointWithSecret.model_validate(row)


@router.get("/{endpoint_id}/messages", response_model=schemas.MessagePage)
async def endpoint_messages(
    endpoint_id: EndpointId,
    key: Producer,
    service: Service,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> schemas.MessagePage:
    """The endpoint's delivery log: messages newest first, each with every attempt."""
    rows, next_cursor = await service.messages(key, endpoint_id, cursor, limit)
    return schemas.MessagePage(items=[_message(row) for row in rows], next_cursor=next_cursor)


@router.post("/{endpoint_id}/test", status_code=202, response_model=schemas.Message)
async def send_test(endpoint_id: EndpointId, key: Producer, service: Service) -> schemas.Message:
    """Queue a ``webhook.test`` message to the endpoint; follow it in the log."""
    return _message(await service.send_test(key, endpoint_id))
