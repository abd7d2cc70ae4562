"""HTTP for operators: reload the catalog of the process that answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from tidings.auth.dependencies import Operator
from tidings.catalog.problems import CatalogInvalid, CatalogProblem
from tidings.catalog.reload import CatalogReloader, refused
from tidings.kit import errors

router = APIRouter(prefix="/v1", tags=["operations"])
log = logging.getLogger("tidings.catalog.reload")


class CatalogRefused(errors.Invalid):
    """The catalog folder has problems: nothing was reloaded."""

    code = "catalog_invalid"


class ReloadOut(BaseModel):
    """What the reload changed."""

    types: int = Field(description="Notification types in the catalog now.")
    added: list[str] = Field(description="Types that were not in the previous catalog.")
    removed: list[str] = Field(description="Types of the previous catalog that are gone.")
    breaking: list[str] = Field(
        description="Changes that refuse events producers of the previous catalog send "
        "(applied all the same, as a restart would: see 'tidings catalog check --against')."
    )


@router.post(
    "/catalog/reload",
    response_model=ReloadOut,
    responses={422: {"description": "The catalog has problems; the running one is kept"}},
)
async def reload_catalog(_key: Operator, request: Request) -> ReloadOut:
    """Read the catalog folder again and serve it from the next request, in this process
    only (operators only). A catalog with problems is refused with each of them, as
    ``tidings catalog check`` lists them, and the running one stays."""
    reloader: CatalogReloader = request.app.state.runtime.reloader
    try:
        done = await reloader.reload_async()
    except CatalogInvalid as exc:
        # The same one line as a reload on a file change or SIGHUP logs.
        log.error("%s", refused(reloader.folder, exc.problems))
        raise CatalogRefused(
            refused(reloader.folder, exc.problems),
            field="catalog",
            problems=[_problem(problem) for problem in exc.problems],
        ) from None
    return ReloadOut(
        types=done.types,
        added=list(done.added),
        removed=list(done.removed),
        breaking=list(done.breaking),
    )


def _problem(problem: CatalogProblem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "field": problem.field,
        "line": problem.line,
        "message": problem.message,
    }
