"""``/v1/jobs``: restore in the background; poll the status, fetch the result, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from ..dependencies import get_service, require_api_key, restore_settings
from ..errors import ApiError
from ..jobs import DONE, FAILED, Job, JobLimit
from ..service import Service
from .restore import ERRORS, IMAGE_TYPES, read_upload, retry_after, submit

if TYPE_CHECKING:
    from elir_cli.pipeline.settings import RestoreSettings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])
NOT_FOUND = {404: {"description": "No such job (never made, deleted, or expired)"}}


def _job(service: Service, job_id: str) -> Job:
    assert service.jobs is not None
    job = service.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id} (never made, deleted, or its result expired)")
    return job


@router.post("", status_code=202, summary="Start a restoration job", responses=ERRORS)
async def create_job(
    image: Annotated[UploadFile, File(description="The photo. (Videos come with the video feature.)")],
    settings: Annotated["RestoreSettings", Depends(restore_settings)],
    service: Annotated[Service, Depends(get_service)],
) -> JSONResponse:
    """Queue an image (the same options as ``POST /v1/restore``) and answer at once with the job's id;
    poll ``GET /v1/jobs/{id}``. Results expire ``--job-ttl`` seconds after they finish."""
    assert service.jobs is not None
    data = await read_upload(image, service.config.max_upload_bytes)
    try:
        job = service.jobs.create()
    except JobLimit:
        raise ApiError(429, "the server holds too many jobs", hint="fetch or delete finished jobs, or wait",
                       retry_after=retry_after(service)) from None
    jobs = service.jobs
    try:
        future = submit(service, settings, data, on_stage=lambda name, progress: jobs.stage(job, name, progress))
    except ApiError:
        jobs.delete(job.id)
        raise
    jobs.attach(job, future)
    return JSONResponse(job.to_json(jobs.ttl), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/{job_id}", summary="A job's status and progress", responses=NOT_FOUND)
def job_status(job_id: str, service: Annotated[Service, Depends(get_service)]) -> JSONResponse:
    """``status`` is queued, running, done, failed or cancelled; ``progress`` goes from 0 to 1."""
    assert service.jobs is not None
    return JSONResponse(_job(service, job_id).to_json(service.jobs.ttl))


@router.get("/{job_id}/result", summary="A finished job's image",
            responses={200: {"content": IMAGE_TYPES}, 409: {"description": "Not finished, or failed"}, **NOT_FOUND})
def job_result(job_id: str, service: Annotated[Service, Depends(get_service)]) -> FileResponse:
    job = _job(service, job_id)
    if job.status == FAILED:
        raise ApiError(409, f"the job failed: {job.error}", hint=job.hint)
    if job.status != DONE or job.path is None:
        raise ApiError(409, f"the job is {job.status}, not done", hint="poll GET /v1/jobs/{id} until it is done",
                       retry_after=1)
    assert job.result is not None
    return FileResponse(job.path, media_type=job.media_type, filename=f"restored{job.suffix}",
                        headers={"X-Elir-Faces": str(job.result["faces"])})


@router.delete("/{job_id}", summary="Cancel a job and delete its result", responses=NOT_FOUND)
def delete_job(job_id: str, service: Annotated[Service, Depends(get_service)]) -> JSONResponse:
    assert service.jobs is not None
    if not service.jobs.delete(job_id):
        raise ApiError(404, f"no job {job_id}")
    return JSONResponse({"id": job_id, "status": "deleted"})
