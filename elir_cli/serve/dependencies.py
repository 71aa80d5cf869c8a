"""Dependencies the routers share: the service, the API key, the restore options form (derived from the settings)."""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Annotated, Any, Callable, Optional

from fastapi import Depends, Form, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from elir_cli.errors import UsageError
from elir_cli.pipeline.settings import HTTP, RestoreSettings, front_type, specs

from .errors import ApiError, field_of, rendered
from .guard import key_matches
from .service import Service


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


def settings_form(settings_class: type = RestoreSettings) -> Callable[..., RestoreSettings]:
    """A dependency that reads the settings' options shown on the server as form fields.

    Derived from the settings' declarations (type, default, bounds, help) like
    the CLI's options; the server's own limits apply (``http_maximum``), the
    model options are the server's (``elir serve --task`` ...), and a bad value
    answers 422 with the field it is about.
    """
    hints = {f.name: (f, spec) for f, spec in specs(settings_class, HTTP)}
    parameters = [inspect.Parameter("service", inspect.Parameter.KEYWORD_ONLY,
                                    annotation=Annotated[Service, Depends(get_service)])]
    for name, (f, spec) in hints.items():
        kind = front_type(settings_class, name, spec)
        default = f.default
        if name == "task":  # the server's --task by default
            default, kind = None, Optional[kind]
        elif spec.choices is not None and default is not None:
            default = spec.choices(default)
        bounds = {key: value for key, value in (("ge", spec.minimum), ("le", spec.http_maximum or spec.maximum))
                  if value is not None}
        form = Form(description=spec.http_help or spec.help, **bounds)
        parameters.append(inspect.Parameter(spec.form_name or name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Annotated[kind, form], default=default))
    by_form = {spec.form_name or name: name for name, (f, spec) in hints.items()}

    def read_settings(service: Service, **fields: Any) -> RestoreSettings:
        config = service.config
        values = {by_form[key]: value.value if isinstance(value, Enum) else value for key, value in fields.items()}
        name = values.pop("task", None) or config.task
        if name not in config.tasks:
            raise ApiError(422, f"this server restores only {', '.join(config.tasks)}, not {name}", field="task")
        try:
            return settings_class(task=name, weights=config.weights if name == config.task else None,
                                  device=config.device, precision=config.precision, max_pixels=config.max_pixels,
                                  **values)
        except UsageError as exc:
            message, hint = rendered(exc)
            raise ApiError(422, message, field=field_of(exc), hint=hint) from None

    setattr(read_settings, "__signature__", inspect.Signature(parameters, return_annotation=RestoreSettings))
    return read_settings


restore_settings = settings_form()
