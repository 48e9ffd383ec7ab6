"""The Lambda side of asynchronous jobs: the worker invocation that runs a stored job.

The invocation that accepted the job recorded it in the S3 store and queued
`{"thaw": "job", "id": ...}` for this function (`runtime.aws.dispatch`); the adapter hands that
event here. The job runs on the event loop Mangum drives (one loop per process, so the runtime's
loop-agnostic waits and the app's requests share it), within the invocation's remaining time.
"""

from __future__ import annotations

import asyncio
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

        # Mangum set this loop up when it was made and runs every HTTP invocation on it.
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(state.jobs.run_stored(job_id, build, budget_s=budget_s))

    return run
