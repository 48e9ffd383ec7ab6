"""The app's ASGI lifespan under uvicorn: the service's, inside the webhooks'.

On the way out the order matters: the service drains first (accepted jobs finish or are cut off
at the drain deadline, and each final state queues its `completed` webhook), then the webhooks
still pending get `THAW_WEBHOOK_DRAIN_S` before the process exits. So a stop can take the drain
timeout plus the webhook drain: size the platform's grace period for both. (Lambda runs no
lifespan: Mangum would re-run it around every invocation.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.state import AppState


@asynccontextmanager
async def app_lifespan(app: Any) -> AsyncIterator[None]:
    state: AppState = app.state.thaw
    async with state.jobs.webhooks.running(), state.service.lifespan(app):
        yield
