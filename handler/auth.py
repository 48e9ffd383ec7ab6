"""Optional API key (`THAW_API_KEY`) on the generation routes and on `/health`'s detail; probes
stay open."""

from __future__ import annotations

import hmac

from fastapi import Request

from handler.state import AppState
from runtime.errors import Unauthorized


def supplied_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def key_accepted(request: Request) -> bool:
    """True when no key is configured, or the request carries it (constant-time compare)."""
    expected = AppState.of(request).config.server.api_key
    if expected is None:
        return True
    supplied = supplied_key(request)
    return supplied is not None and hmac.compare_digest(supplied.encode(), expected.encode())


async def require_api_key(request: Request) -> None:
    """Refuse with 401 unless the request carries the configured key."""
    if not key_accepted(request):
        raise Unauthorized(
            "missing or wrong API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
        )
