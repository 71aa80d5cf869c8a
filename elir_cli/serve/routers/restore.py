"""``POST /v1/restore``: one image in, the restored image out (or JSON with base64)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from concurrent.futures import Future
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from elir_cli.errors import ElirError

from ..dependencies import get_service, require_api_key, restore_settings
from ..errors import ApiError, from_elir_error
from ..service import Service
from ..worker import QueueFull, Restored, StageCallback

if TYPE_CHECKING:
    from elir_cli.pipeline.settings import RestoreSettings

router = APIRouter(prefix="/v1", tags=["restore"], dependencies=[Depends(require_api_key)])

READ_CHUNK = 1 << 20
VIDEO_MAGIC = ((4, b"ftyp"), (0, b"\x1aE\xdf\xa3"), (8, b"AVI "))  # MP4/MOV, Matroska/WebM, AVI
ERRORS = {401: {"description": "Missing or wrong API key"},
          413: {"description": "Upload over --max-upload-mb"},
          422: {"description": "Bad option or unreadable image; the JSON names the field"},
          429: {"description": "Queue full; see Retry-After"}}
IMAGE_TYPES = {t: {} for t in ("image/png", "image/jpeg", "image/webp", "image/tiff")}


async def read_upload(image: UploadFile, limit: int) -> bytes:
    """The uploaded bytes (never its file name); empty or over the limit -> 4xx."""
    chunks, total = [], 0
    while chunk := await image.read(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"the image is larger than the server's limit of {limit} bytes", field="image")
        chunks.append(chunk)
    await image.close()
    if not total:
        raise ApiError(422, "the uploaded image is empty", field="image")
    data = b"".join(chunks)
    if any(data[at:at + len(magic)] == magic for at, magic in VIDEO_MAGIC) and not _is_heif_still(data):
        raise ApiError(422, "this looks like a video; the server restores photos (videos come with the video feature)",
                       field="image")
    return data


def _is_heif_still(data: bytes) -> bool:
    """AVIF/HEIF photos are ISO-BMFF files too (``ftyp`` + a still-image brand)."""
    return data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")


def submit(service: Service, settings: "RestoreSettings", data: bytes,
           on_stage: StageCallback | None = None) -> Future:
    try:
        return service.worker.submit(settings, data, on_stage=on_stage)
    except QueueFull:
        raise ApiError(429, "the server is busy: its queue is full", hint="try again after Retry-After seconds",
                       retry_after=retry_after(service)) from None


def retry_after(service: Service) -> int:
    return max(1, math.ceil(service.worker.estimated_wait()))


def result_headers(restored: Restored) -> dict[str, str]:
    t = restored.timings
    return {
        "X-Elir-Faces": str(len(restored.faces)),
        "X-Elir-Face-Boxes": json.dumps(restored.faces, separators=(",", ":")),
        # per face: faithfulness_db, delta_e, fidelity, identity, guard (the JSON answer's face_scores)
        "X-Elir-Face-Scores": json.dumps(restored.face_scores, separators=(",", ":")),
        **({} if restored.faithfulness is None else {
            "X-Elir-Faithfulness": json.dumps(restored.faithfulness, separators=(",", ":"))}),
        "X-Elir-Size": f"{restored.size[0]}x{restored.size[1]}",
        "X-Elir-Seconds": f"{sum(t.values()):.4f}",
        "X-Elir-Warnings": str(len(restored.warnings)),
        "Server-Timing": ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in t.items()),
        "Content-Disposition": f'inline; filename="restored{restored.suffix}"',
    }


def wants_json(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/" not in accept


@router.post("/restore", summary="Restore one image",
             responses={200: {"content": {**IMAGE_TYPES, "application/json": {}},
                              "description": "The restored image (format rules of elir restore), or JSON with "
                                             "base64 for Accept: application/json or ?format=json"},
                        503: {"description": "Timed out, or the model cannot be loaded"}, **ERRORS})
async def restore(
    request: Request,
    image: Annotated[UploadFile, File(description="The photo (PNG, JPEG, WebP, TIFF, GIF, BMP, AVIF...).")],
    settings: Annotated["RestoreSettings", Depends(restore_settings)],
    service: Annotated[Service, Depends(get_service)],
    format: Annotated[Optional[Literal["image", "json"]], Query(description="json: answer JSON with the image in base64.")] = None,
) -> Response:
    """Restore one image with the same options as ``elir restore``; faces and timings come in
    ``X-Elir-*`` and ``Server-Timing`` headers (or in the JSON)."""
    data = await read_upload(image, service.config.max_upload_bytes)
    future = submit(service, settings, data)
    del data
    try:
        restored: Restored = await asyncio.wait_for(asyncio.wrap_future(future), timeout=service.config.timeout)
    except asyncio.TimeoutError:
        future.cancel()
        raise ApiError(503, f"the restoration took longer than the server's limit of {service.config.timeout:g} s",
                       hint="send a smaller image, fewer steps, or use POST /v1/jobs",
                       retry_after=retry_after(service)) from None
    except ElirError as exc:
        raise from_elir_error(exc, retry_after=retry_after(service)) from None
    headers = result_headers(restored)
    if wants_json(request, format):
        headers.pop("Content-Disposition")
        return JSONResponse({**restored.summary(), "image": base64.b64encode(restored.data).decode()},
                            headers=headers)
    return Response(restored.data, media_type=restored.media_type, headers=headers)
