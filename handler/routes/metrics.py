"""`/metrics`: Prometheus exposition for container platforms."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from handler.state import AppState
from runtime.lifecycle.states import STATUSES
from runtime.observe import prometheus

router = APIRouter(tags=["probes"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Requests by status, queue and inference latency, queue depth, state, load phases."""
    service = AppState.of(request).service
    # The first scrape imports prometheus-client: keep that (and rendering) off the loop.
    health, telemetry = service.health(), service.telemetry.snapshot()
    payload = await asyncio.to_thread(prometheus.render, health, telemetry, STATUSES)
    return Response(payload, media_type=prometheus.CONTENT_TYPE)
