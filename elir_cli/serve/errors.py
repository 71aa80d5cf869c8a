"""Every error the API answers is JSON: ``{"error": "...", "field": ..., "hint": ...}``."""

from __future__ import annotations

from typing import Any

from elir_cli.errors import (CheckpointError, DownloadError, ElirError, ImageError, ModelNotAvailableError,
                             UsageError)


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


def field_of(exc: ElirError, default: str | None = None) -> str | None:
    """The form field an error is about: its option's form name (``face_indices`` -> ``faces``)."""
    from elir_cli.pipeline.settings import form_name_of

    return form_name_of(exc.option) if exc.option is not None else default


def rendered(exc: ElirError) -> tuple[str, str | None]:
    """The message and hint with options named as form fields."""
    from elir_cli.pipeline.settings import form_name_of

    return exc.render(form_name_of)


def from_elir_error(exc: ElirError, *, retry_after: int) -> ApiError:
    """Map the library's errors to HTTP: the client's input 422, the server's models 503."""
    message, hint = rendered(exc)
    if isinstance(exc, ImageError):
        return ApiError(422, message, field="image", hint=hint)
    if isinstance(exc, UsageError):
        return ApiError(422, message, field=field_of(exc), hint=hint)
    if isinstance(exc, (ModelNotAvailableError, DownloadError, CheckpointError)):
        return ApiError(503, f"the model cannot be loaded: {exc.message}", hint=exc.hint, retry_after=retry_after)
    return ApiError(500, exc.message, hint=exc.hint)
