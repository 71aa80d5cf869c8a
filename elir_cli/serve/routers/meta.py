"""``GET /v1/models`` (what ``elir models list --json`` says) and ``GET /healthz``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from elir_cli._version import __version__

from ..dependencies import get_service, require_api_key
from ..service import Service

router = APIRouter(tags=["server"])
models_router = APIRouter(prefix="/v1", tags=["server"], dependencies=[Depends(require_api_key)])


@models_router.get("/models", summary="The tasks and their weights")
def models(service: Annotated[Service, Depends(get_service)]) -> list[dict[str, Any]]:
    """The same list as ``elir models list --json``, with ``served`` true for the tasks this server restores."""
    from elir_cli.registry.inventory import task_status_json
    from elir_cli.registry.tasks import task_names

    served = service.config.tasks
    return [{**task_status_json(name), "served": name in served} for name in task_names()]


@router.get("/healthz", summary="Liveness and load")
def healthz(service: Annotated[Service, Depends(get_service)]) -> dict[str, Any]:
    """Open without the API key: it tells only the load and what the page needs to know."""
    c = service.config
    return {"status": "ok", "version": __version__, "task": c.task, "tasks": list(c.tasks),
            "api_key_required": bool(c.api_key), "queue": service.worker.waiting, "queue_size": c.queue,
            "busy": service.worker.busy, "loaded": service.worker.loaded,
            "max_upload_bytes": c.max_upload_bytes, "max_pixels": c.max_pixels}
