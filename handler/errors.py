"""Every error, one JSON shape: `{"error": {"code", "message", "retry_after"}}`.

Runtime errors carry their data; this is the one place that maps them to HTTP status codes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from handler.jobs_view import JobNotReady, JobsUnavailable
from runtime import errors
from runtime.jobs.runner import JobConflict, JobNotFound

log = logging.getLogger("thaw.http")

STATUS: dict[type[errors.ThawError], int] = {
    errors.InvalidRequest: 422,
    errors.Unauthorized: 401,
    errors.PayloadTooLarge: 413,
    errors.Overloaded: 429,
    errors.WarmingUp: 503,
    errors.LoadFailed: 503,
    errors.QueueTimeout: 503,
    errors.Draining: 503,
    errors.ModelLost: 503,
    errors.OutOfMemory: 503,
    errors.InferenceFailed: 500,
    errors.Canceled: 409,
    JobConflict: 409,
    JobNotFound: 404,
    JobsUnavailable: 501,
    JobNotReady: 409,
    errors.DeadlineExceeded: 504,
}


def status_for(exc: errors.ThawError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 503


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "retry_after": None}
    headers: dict[str, str] = {}
    if retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        body["retry_after"] = seconds
        headers["Retry-After"] = str(seconds)
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def thaw_error_response(exc: errors.ThawError) -> JSONResponse:
    # A refusal found past the request model (the loaded model's own terms) names its field as
    # the request model's 422s do; one about the whole request names the body.
    details = None
    if isinstance(exc, errors.InvalidRequest):
        details = [{"field": exc.field or "body", "message": exc.message}]
    response = error_response(
        status_for(exc), exc.code, exc.message, retry_after=exc.retry_after, details=details
    )
    if isinstance(exc, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="thaw"'
    return response


def _describe_validation(errs: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errs:
        location = [str(part) for part in err.get("loc", ()) if part not in ("body", "query")]
        field = ".".join(location) or "body"
        details.append({"field": field, "message": err.get("msg", "invalid")})
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return message, details


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    async def on_thaw_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.ThawError)
        return thaw_error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, details = _describe_validation(list(exc.errors()))
        return error_response(422, "invalid_request", message, details=details)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(errors.ThawError, on_thaw_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
