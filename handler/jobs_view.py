"""How a job looks over HTTP: its record with progress, an ETA and links."""

from __future__ import annotations

import time
from typing import Any

from runtime.errors import ThawError
from runtime.jobs.store import Job, JobStatus


class JobsUnavailable(ThawError):
    """This deployment cannot run asynchronous jobs (yet)."""

    code = "not_implemented"


class JobNotReady(ThawError):
    """The job has no image (yet, or it ended without one)."""

    code = "not_ready"


def job_view(job: Job, *, now: float | None = None) -> dict[str, Any]:
    """The job as `GET /jobs/{id}` answers it."""
    now = time.time() if now is None else now
    record = job.to_json()
    for internal in (
        "request_hash",
        "owner",
        "lease_until",
    ):  # who holds it is no client's business
        record.pop(internal, None)
    webhook = record["request"].get("webhook")
    if isinstance(webhook, str) and "?" in webhook:
        # A receiver's token often rides in the query: anyone who can read the job (a guessable
        # PUT id, no THAW_API_KEY) must not learn it; the logs leave it out for the same reason.
        record["request"] = {**record["request"], "webhook": webhook.split("?", 1)[0] + "?…"}
    steps, step = job.steps, job.step
    progress: dict[str, Any] = {
        "step": step,
        "steps": steps,
        "fraction": None,
        "eta_s": None,
        "at": job.step_at,  # when that step ended (Unix time), where the model ran
    }
    if steps:
        progress["fraction"] = round(step / steps, 4)
        if job.step_seconds is not None and job.status is JobStatus.RUNNING:
            progress["eta_s"] = round(job.step_seconds * (steps - step), 2)
    for name in ("step", "steps", "step_seconds", "step_at"):
        record.pop(name)
    record["progress"] = progress
    links = {"self": f"/jobs/{job.id}", "events": f"/jobs/{job.id}/events"}
    if job.status is JobStatus.SUCCEEDED:
        links["image"] = f"/jobs/{job.id}/image"
    record["links"] = links
    return record
