"""Dependencies the routers share: the service, the API key, the restore options form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from fastapi import Depends, Form, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from elir_cli.errors import UsageError
from elir_cli.registry.choices import Ext, TaskName

from .config import MAX_STEPS
from .errors import ApiError, field_of
from .guard import key_matches
from .service import Service

if TYPE_CHECKING:
    from elir_cli.pipeline.files import RestoreSettings

def get_service(request: Request) -> Service:
    return request.app.state.service


_bearer = HTTPBearer(auto_error=False, description="The server's --api-key, when it has one.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's --api-key, when it has one.")


def require_api_key(
    request: Request,
    bearer: Annotated[Optional[HTTPAuthorizationCredentials], Security(_bearer)],
    header: Annotated[Optional[str], Security(_header)],
) -> None:
    """The guard middleware already refused requests without the key; this names the scheme in /docs
    and checks again, so a route is never open by a mistake in the middleware."""
    key = get_service(request).config.api_key
    if key and not key_matches({k.lower(): v for k, v in request.headers.raw}, key):
        raise ApiError(401, "missing or wrong API key")


def restore_settings(
    service: Annotated[Service, Depends(get_service)],
    task: Annotated[Optional[TaskName], Form(description="What to restore (GET /v1/models); default: the server's --task.")] = None,
    fidelity: Annotated[float, Form(ge=0.0, le=1.0, description="0 = faithful coarse estimate, 1 = full flow (most detail).")] = 1.0,
    steps: Annotated[Optional[int], Form(ge=1, le=MAX_STEPS, description="Euler steps (default: the task's).")] = None,
    seed: Annotated[Optional[int], Form(description="Seed for repeatable results.")] = None,
    upscale: Annotated[Optional[int], Form(ge=1, le=16, description="Output scale (default: the task's).")] = None,
    aligned: Annotated[bool, Form(description="The image is an aligned face crop: skip detection.")] = False,
    only_center_face: Annotated[bool, Form(description="Restore only the face nearest the centre.")] = False,
    faces: Annotated[Optional[str], Form(description="Restore only these faces, e.g. 0,2.")] = None,
    max_faces: Annotated[Optional[int], Form(ge=1, description="Restore only the N largest faces.")] = None,
    min_face_size: Annotated[float, Form(ge=0.0, description="Ignore faces whose eyes are closer than this many pixels.")] = 0.0,
    det_threshold: Annotated[Optional[float], Form(ge=0.0, le=1.0, description="Face detection score threshold.")] = None,
    ext: Annotated[Ext, Form(description="Output format; auto keeps the input's where it can hold the result.")] = Ext.auto,
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WebP quality.")] = 95,
) -> "RestoreSettings":
    """The options of ``elir restore`` as form fields, checked by the same rules (RestoreSettings)."""
    from elir_cli.pipeline.files import RestoreSettings, parse_face_indices

    config = service.config
    name = task.value if task is not None else config.task
    if name not in config.tasks:
        raise ApiError(422, f"this server restores only {', '.join(config.tasks)}, not {name}", field="task")
    try:
        return RestoreSettings(
            task=name, weights=config.weights if name == config.task else None, device=config.device,
            precision=config.precision, steps=steps, fidelity=fidelity, seed=seed, upscale=upscale,
            aligned=aligned, only_center_face=only_center_face, face_indices=parse_face_indices(faces),
            max_faces=max_faces, min_face_size=min_face_size, det_threshold=det_threshold, ext=ext.value,
            quality=quality, max_pixels=config.max_pixels)
    except UsageError as exc:
        raise ApiError(422, exc.message.replace("--", ""), field=field_of(exc.message), hint=exc.hint) from None
