"""Every error the API answers is JSON: ``{"error": "...", "field": ..., "hint": ...}``."""

from __future__ import annotations

import re
from typing import Any

from elir_cli.errors import (CheckpointError, DownloadError, ElirError, ImageError, ModelNotAvailableError,
                             UsageError)

FLAG = re.compile(r"--([a-z][a-z-]*)")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, hint: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.hint, self.retry_after = status, message, field, hint, retry_after

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            data["field"] = self.field
        if self.hint is not None:
            data["hint"] = self.hint
        return data

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def field_of(message: str, default: str | None = None) -> str | None:
    """The form field a CLI-style message names (``--det-threshold must ...`` -> ``det_threshold``)."""
    match = FLAG.search(message)
    return match.group(1).replace("-", "_") if match else default


def from_elir_error(exc: ElirError, *, retry_after: int) -> ApiError:
    """Map the library's errors to HTTP: the client's input 422, the server's models 503."""
    if isinstance(exc, ImageError):
        return ApiError(422, exc.message, field="image", hint=exc.hint)
    if isinstance(exc, UsageError):
        return ApiError(422, exc.message.replace("--", ""), field=field_of(exc.message), hint=exc.hint)
    if isinstance(exc, (ModelNotAvailableError, DownloadError, CheckpointError)):
        return ApiError(503, f"the model cannot be loaded: {exc.message}", hint=exc.hint, retry_after=retry_after)
    return ApiError(500, exc.message, hint=exc.hint)
