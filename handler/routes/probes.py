"""Probes: liveness, readiness and the full health report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from handler.auth import key_accepted
from handler.state import AppState

router = APIRouter(tags=["probes"])


@router.get("/livez")
@router.head("/livez", include_in_schema=False)  # uptime checkers and load balancers
async def livez(request: Request) -> JSONResponse:
    """200 while the process can serve HTTP, whatever the model's state, unless the model has
    failed to load for longer than `THAW_UNHEALTHY_AFTER_S`: then 503, so the platform
    restarts the container."""
    reason = AppState.of(request).service.unhealthy()
    if reason is None:
        return JSONResponse({"status": "alive"})
    return JSONResponse({"status": "unhealthy", "reason": reason}, status_code=503)


@router.get("/readyz")
@router.head("/readyz", include_in_schema=False)  # uptime checkers and load balancers
async def readyz(request: Request) -> JSONResponse:
    """200 when a request would be served now; 503 with the state otherwise."""
    state = AppState.of(request)
    status = state.service.slot.snapshot().status
    if state.service.accepting:
        return JSONResponse({"ready": True, "status": status})
    return JSONResponse(
        {"ready": False, "status": status}, status_code=503, headers={"Retry-After": "1"}
    )


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """State, load phases and seconds, attempts, last error, in-flight, queued, uptime, device.

    Open to all, like every probe; with `THAW_API_KEY` set, a caller without the key gets only
    the state and its numbers (`handler.state.PUBLIC_HEALTH`), not the model's path, the error
    text or the phases' detail.
    """
    return AppState.of(request).health(detailed=key_accepted(request))
