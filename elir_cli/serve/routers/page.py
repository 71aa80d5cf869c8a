"""The web page at ``/``: static files shipped in the package (``serve/static``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": (
                            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                            "script-src 'self'; connect-src 'self'")})
