"""Every error, in the shape its path calls for.

This is the one place that maps a failure (thaw's runtime errors, which carry their data; a
request that fails validation; the HTTP layer's own 400, 404, 405 and 413; a bug) to a status
code, a `code` word and a message, and the one place that writes it out:

- under `/v1/` (the OpenAI-compatible API) in OpenAI's shape,
  `{"error": {"message", "type", "param", "code", "retry_after"}}`, so an OpenAI client raises
  its matching exception, with `x-should-retry` telling it whether retrying can help;
- everywhere else in thaw's, `{"error": {"code", "message", "retry_after", "details"?}}`.

Both carry the same status code, `code` word and `Retry-After`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope

from handler import openai_schemas
from handler.jobs_view import JobNotReady, JobsUnavailable
from handler.terms import SizeRefused
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

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
"""The `code` word of the HTTP layer's own refusals (no route, wrong method, a body too big)."""

OPENAI_PREFIX = "/v1"
"""Paths under it answer in OpenAI's error shape."""

PARAM_OF_FIELD = {"width": "size", "height": "size"}
"""thaw's field names that OpenAI's request spells otherwise."""


def status_for(exc: errors.ThawError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 503


@dataclass(frozen=True)
class Problem:
    """A failure, as either shape tells it."""

    status: int
    code: str
    message: str
    retry_after: float | None = None
    fields: tuple[tuple[str | None, str], ...] = ()
    """Each field at fault (None: the request as a whole) and what is wrong with it."""
    headers: Mapping[str, str] = field(default_factory=dict)
    cause: Exception | None = None

    @property
    def retry_after_s(self) -> int | None:
        """`Retry-After` in whole seconds, at least 1."""
        return None if self.retry_after is None else max(1, math.ceil(self.retry_after))


def problem_of(exc: Exception) -> Problem:
    """The one mapping of a failure to its status code, `code` word, message and fields."""
    if isinstance(exc, errors.ThawError):
        fields: tuple[tuple[str | None, str], ...] = ()
        if isinstance(exc, errors.InvalidRequest):
            fields = ((exc.field, exc.message),)
        headers = {}
        if isinstance(exc, errors.Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="thaw"'
        return Problem(
            status_for(exc), exc.code, exc.message, exc.retry_after, fields, headers, exc
        )
    if isinstance(exc, RequestValidationError):
        described = tuple(_described(problem) for problem in exc.errors())
        message = "; ".join(f"{name}: {text}" for name, text in described) or "invalid request"
        return Problem(422, "invalid_request", message, fields=described, cause=exc)
    if (
        isinstance(exc, HTTPException)
        and exc.status_code == 400
        and isinstance(exc.__cause__, ValueError)
    ):
        # FastAPI's answer to a JSON body its parser refused other than by a JSONDecodeError
        # (bytes that are not UTF-8, an integer past Python's 4,300-digit limit): the body is at
        # fault, as with any other body that is not JSON.
        reason = str(exc.__cause__).split(";")[0]
        text = f"not valid JSON ({reason})"
        return Problem(422, "invalid_request", f"body: {text}", fields=(("body", text),), cause=exc)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code = HTTP_CODES.get(status, "http_error")
        # Kept: a 405's `Allow`, say.
        return Problem(status, code, str(exc.detail), headers=dict(exc.headers or {}), cause=exc)
    return Problem(500, "internal_error", "internal error", cause=exc)


def _described(problem: Any) -> tuple[str, str]:
    if problem.get("type") == "json_invalid":
        # FastAPI puts the character offset where a field goes: the body as a whole is at fault.
        offset = (problem.get("loc") or ("body", "?"))[-1]
        reason = (problem.get("ctx") or {}).get("error", "JSON decode error")
        return "body", f"not valid JSON ({reason} at character {offset})"
    where = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query")]
    return ".".join(where) or "body", openai_schemas.plain(str(problem.get("msg", "invalid")))


def thaw_shape(problem: Problem) -> tuple[dict[str, Any], dict[str, str]]:
    """thaw's body and headers: `details` lists the fields at fault."""
    seconds = problem.retry_after_s
    body: dict[str, Any] = {
        "code": problem.code,
        "message": problem.message,
        "retry_after": seconds,
    }
    if problem.fields:
        body["details"] = [
            {"field": name or "body", "message": text} for name, text in problem.fields
        ]
    headers = dict(problem.headers)
    if seconds is not None:
        headers["Retry-After"] = str(seconds)
    return {"error": body}, headers


def openai_shape(problem: Problem) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's body and headers: `param` is the first field at fault, in OpenAI's terms."""
    message, param = problem.message, None
    if problem.fields and problem.fields[0][0] is not None:
        first = problem.fields[0][0]
        # thaw's own checks name thaw's fields; the request's validation names OpenAI's already.
        mapped = not isinstance(problem.cause, RequestValidationError)
        param = PARAM_OF_FIELD.get(first, first) if mapped else first
    if isinstance(
        problem.cause, SizeRefused
    ):  # the loaded model's own bounds, met after the edge's
        param, message = "size", f"size: {message}"
    seconds = problem.retry_after_s
    headers = dict(problem.headers)
    if seconds is not None:
        headers["Retry-After"] = str(seconds)
        headers["x-should-retry"] = "true"
    elif problem.status == 409 or problem.status >= 500:
        # The openai client retries these by default: thaw says when a retry can succeed.
        headers["x-should-retry"] = "false"
    return openai_schemas.error_body(problem.status, problem.code, message, param, seconds), headers


def openai_path(scope: Scope) -> bool:
    """The request is one for the OpenAI-compatible API: its path (past any root path) is
    `/v1` or under it."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def problem_response(scope: Scope, problem: Problem) -> JSONResponse:
    """`problem` in the shape the request's path calls for."""
    body, headers = (openai_shape if openai_path(scope) else thaw_shape)(problem)
    return JSONResponse(body, problem.status, headers=headers)


def error_response(scope: Scope, exc: Exception) -> JSONResponse:
    """`exc` answered in the shape the request's path calls for."""
    return problem_response(scope, problem_of(exc))


def http_result(path: str | None, exc: Exception) -> dict[str, Any]:
    """`exc` answering a request for `path` as a Lambda HTTP result (function URL, API Gateway,
    ALB), in the shape that path calls for: the Lambda adapter's own errors."""
    response = error_response({"type": "http", "path": path or "", "root_path": ""}, exc)
    return {
        "statusCode": response.status_code,
        "headers": dict(response.headers),
        "body": bytes(response.body).decode("utf-8"),
        "isBase64Encoded": False,
    }


def install(app: FastAPI) -> None:
    """Register the handlers that answer every failure in its path's error shape."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request.scope, exc)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(request.scope, exc)

    app.add_exception_handler(errors.ThawError, on_error)
    app.add_exception_handler(RequestValidationError, on_error)
    app.add_exception_handler(HTTPException, on_error)
    app.add_exception_handler(Exception, on_unexpected)
