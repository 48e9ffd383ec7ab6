"""The app's ASGI lifespan under uvicorn: the service's, inside the webhooks', with the sweep of
expired jobs alongside.

On the way out the order matters: the service drains first (accepted jobs finish or are cut off
at the drain deadline, and each final state queues its `completed` webhook), then the webhooks
still pending get `THAW_WEBHOOK_DRAIN_S` before the process exits. So a stop can take the drain
timeout plus the webhook drain: size the platform's grace period for both. (Lambda runs no
lifespan: Mangum would re-run it around every invocation.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.state import AppState
    from runtime.jobs.runner import Jobs

log = logging.getLogger("thaw.jobs")

SWEEP_S = 300.0
"""The longest time between two sweeps of expired jobs (half the TTL when that is shorter)."""


@asynccontextmanager
async def app_lifespan(app: Any) -> AsyncIterator[None]:
    state: AppState = app.state.thaw
    async with (
        state.jobs.webhooks.running(),
        state.service.lifespan(app),
        sweeping(state.jobs),
    ):
        yield


@asynccontextmanager
async def sweeping(jobs: Jobs[Any]) -> AsyncIterator[None]:
    """Delete expired jobs and their images while the server runs, whether anyone reads them
    again or not (a read of an expired job deletes it too). A store shared by replicas (S3)
    is left to the bucket's lifecycle rule."""
    if not jobs.store.exclusive:
        yield
        return
    every = max(1.0, min(SWEEP_S, jobs.ttl_s / 2))
    task = asyncio.ensure_future(_recover_then_sweep(jobs, every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _recover_then_sweep(jobs: Jobs[Any], every: float) -> None:
    # In the background: reading every record left by an earlier process must not delay the
    # server's listening (a volume may hold a day's jobs). A job read before it is recovered is
    # settled by the read itself once its lease has lapsed.
    try:
        await asyncio.to_thread(jobs.recover)
    except Exception as exc:
        log.warning("jobs not recovered", extra={"error": repr(exc)[:300]})
    while True:
        await asyncio.sleep(every)
        try:
            gone = await asyncio.to_thread(jobs.sweep)
        except Exception as exc:  # the next sweep tries again
            log.warning("jobs not swept", extra={"error": repr(exc)[:300]})
            continue
        if gone:
            log.info("expired jobs deleted", extra={"count": gone})
