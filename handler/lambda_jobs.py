"""The Lambda side of asynchronous jobs: the worker invocation that runs a stored job.

The invocation that accepted the job recorded it in the S3 store and queued
`{"thaw": "job", "id": ...}` for this function (`runtime.aws.dispatch`); the adapter hands that
event here. The job runs on the event loop Mangum drives (one loop per process, so the runtime's
loop-agnostic waits and the app's requests share it), within the invocation's remaining time.
Its webhooks are delivered before the invocation ends, within what is left of that time: the
loop runs only during an invocation, and Lambda freezes the environment after it (a delivery
left pending would wait for the next invocation, or never run).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI

from handler.routes.generate import job_work
from handler.state import AppState
from runtime.aws.adapter import JobRunner


def job_runner(app: FastAPI) -> JobRunner:
    """`run(job_id, budget_s)` for the adapter: claim, run and record the job."""
    state: AppState = app.state.thaw

    def run(job_id: str, budget_s: float) -> dict[str, Any]:
        def build(request: dict[str, Any]) -> Any:
            return job_work(state, request)

        async def run_and_deliver() -> dict[str, Any]:
            deadline = time.monotonic() + budget_s
            # The app's lifespan (which starts the sender under uvicorn) is off on Lambda: bind
            # the sender to this loop, so events queued from inference threads are delivered.
            state.jobs.webhooks.start()
            report = await state.jobs.run_stored(job_id, build, budget_s=budget_s)
            left = max(0.0, deadline - time.monotonic())
            abandoned = await state.jobs.webhooks.drain(timeout_s=left)
            if abandoned:
                report["webhooks_abandoned"] = abandoned
            return report

        # Mangum set this loop up when it was made and runs every HTTP invocation on it.
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(run_and_deliver())

    return run
