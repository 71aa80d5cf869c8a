"""Build the FastAPI application: routers, the page, error handlers, the guard."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from elir_cli._version import __version__
from elir_cli.errors import first_line

from .config import ServeConfig
from .errors import ApiError
from .guard import RequestGuard
from .routers import jobs, meta, page, restore
from .routers.page import STATIC
from .service import Service

DESCRIPTION = """Restore photos with ELIR. Every `/v1` route needs the server's API key when it has one
(`Authorization: Bearer KEY` or `X-API-Key: KEY`). Errors are JSON: `{"error": ..., "field": ..., "hint": ...}`."""


def create_app(config: ServeConfig, *, service: Service | None = None,
               log: Callable[[str], None] | None = None) -> FastAPI:
    """The application for ``config``; its lifespan starts and stops the worker and the job store."""
    service = service or Service(config, log=log or (lambda message: None))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="elir-cli", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.include_router(restore.router)
    app.include_router(jobs.router)
    app.include_router(meta.models_router)
    app.include_router(meta.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = loc[0] if loc else None
        message = first.get("msg", "invalid request")
        return JSONResponse({"error": f"{field}: {message}" if field else message, "field": field},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        first = first_line(exc)
        service.log(f"error: {request.url.path}: {type(exc).__name__}: {first}")
        return JSONResponse({"error": f"{type(exc).__name__}: {first}"}, status_code=500)

    app.add_middleware(RequestGuard, max_body=config.max_body_bytes, api_key=config.api_key)
    return app
