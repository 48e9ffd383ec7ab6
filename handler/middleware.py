"""Pure ASGI middleware: the body size limit (413) and each request's id, log line and metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handler.errors import error_response
from runtime.observe.telemetry import Telemetry

log = logging.getLogger("thaw.http")


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing passes it through to
    the registered handler (it turns other read errors into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds {max_bytes} bytes")


class BodyLimit:
    """Reject bodies over `max_bytes`: at once when Content-Length says so, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # In the shape the path calls for: OpenAI's under /v1/, thaw's elsewhere.
        response = error_response(scope, _TooLarge(self.max_bytes))
        await response(scope, receive, send)


class RequestContext:
    """Give every request an id, count its outcome and log one JSON line for it.

    The id is the Lambda request id when Mangum passes the Lambda context, else a well-formed
    `X-Request-Id` from the client, else a fresh one; it is echoed in `X-Request-Id`. Routes
    are labelled by their template (unmatched paths as "other"), so a fuzzer cannot blow up the
    metrics' cardinality. Prompts are never logged here.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("ascii")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "other"
            method = scope.get("method", "GET")
            self.telemetry.observe_request(method, route, status, seconds)
            level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
            log.log(
                level,
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "seconds": round(seconds, 4),
                },
            )


QUIET_ROUTES = frozenset({"/livez", "/readyz", "/health", "/metrics"})
# Matched with `fullmatch`: `$` would also match before a trailing newline, letting "id\n" through
# into the echoed header and the logs.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(scope: Scope) -> str:
    context = scope.get("aws.context")
    aws_id = getattr(context, "aws_request_id", None)
    if isinstance(aws_id, str) and _SAFE_ID.fullmatch(aws_id):
        return str(aws_id)
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            supplied = str(value.decode("latin-1"))
            if _SAFE_ID.fullmatch(supplied):
                return supplied
            break
    return uuid.uuid4().hex
