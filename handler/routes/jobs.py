"""`/jobs`: asynchronous generation. Submit (`POST /jobs`, an idempotent `PUT /jobs/{id}`, or
`POST /generate` with `Prefer: respond-async`), poll, stream progress as Server-Sent Events,
fetch the image, cancel.

No `from __future__ import annotations` here: FastAPI must see the request model built from the
configured limits as a real class in the route's signature.
"""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from handler.auth import require_api_key
from handler.jobs_view import JobNotReady, job_view
from handler.routes.generate import submit_job, subscription
from handler.schemas import MAX_SEED, GenerateRequestBase
from handler.state import AppState
from runtime.errors import InvalidRequest
from runtime.jobs.store import ID_PATTERN, Job, JobStatus


def build_router(request_model: type[GenerateRequestBase]) -> APIRouter:
    router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])

    @router.post("/jobs", status_code=202)
    async def submit(request: Request, body: request_model) -> Response:  # type: ignore[valid-type]
        """Submit a generation; 202 with the job, `Location` and `Retry-After`."""
        params = body.to_params(AppState.of(request).config.limits)  # type: ignore[attr-defined]
        webhook = await subscription(request, body)
        return await submit_job(request, params, job_id=None, webhook=webhook)

    @router.put("/jobs/{job_id}", status_code=202)
    async def submit_as(request: Request, job_id: str, body: request_model) -> Response:  # type: ignore[valid-type]
        """Submit under an id the client chose: the same body again returns the same job (200);
        another body under that id is a 409. A seed the body omits is drawn from the id and the
        body, so a retry of the same body is the same request."""
        if not ID_PATTERN.fullmatch(job_id):
            raise InvalidRequest(
                f"job id {job_id[:140]!r}: use 1-128 letters, digits and _.:-", field="job_id"
            )
        if body.seed is None:  # type: ignore[attr-defined]
            body = body.model_copy(update={"seed": seed_for(job_id, body)})  # type: ignore[attr-defined]
        params = body.to_params(AppState.of(request).config.limits)  # type: ignore[attr-defined]
        webhook = await subscription(request, body)
        return await submit_job(request, params, job_id=job_id, webhook=webhook)

    # The store may be S3: its reads and writes run in threads, never on the event loop.

    @router.get("/jobs/{job_id}")
    async def status(request: Request, job_id: str) -> dict[str, Any]:
        """The job: status, progress with an ETA, timings, the error, links."""
        return job_view(await asyncio.to_thread(AppState.of(request).jobs.require, job_id))

    @router.get("/jobs/{job_id}/image", response_class=Response)
    async def image(request: Request, job_id: str) -> Response:
        """The PNG of a succeeded job; where results live in S3, a 307 redirect to a
        presigned URL of it (valid five minutes at most), so the image never passes through
        this process nor Lambda's 6 MB response limit."""
        jobs = AppState.of(request).jobs
        url = await asyncio.to_thread(jobs.image_url, job_id)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        png = await asyncio.to_thread(jobs.image, job_id)
        if png is None:
            job = await asyncio.to_thread(jobs.require, job_id)
            retry = None if job.status.final else 1.0
            raise JobNotReady(f"job {job_id} is {job.status.value}: no image", retry_after=retry)
        return Response(png, media_type="image/png")

    @router.get("/jobs/{job_id}/events")
    async def events(request: Request, job_id: str) -> StreamingResponse:
        """Server-Sent Events: the job now, then each change (state, every step) until it is
        final. Closing the stream does not cancel the job."""
        jobs = AppState.of(request).jobs
        await asyncio.to_thread(jobs.require, job_id)  # a 404 before the stream starts

        async def stream() -> AsyncIterator[str]:
            async for job in jobs.events(job_id):
                if job is None:
                    yield ": still there\n\n"
                    continue
                kind = "progress" if job.status is JobStatus.RUNNING and job.step else "status"
                yield f"event: {kind}\ndata: {json.dumps(job_view(job))}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.delete("/jobs/{job_id}")
    async def cancel(request: Request, job_id: str) -> JSONResponse:
        """Cancel: a queued job leaves the queue; a running one stops at its next step."""
        return JSONResponse(job_view(await cancel_job(request, job_id)))

    @router.post("/jobs/{job_id}/cancel")
    async def cancel_post(request: Request, job_id: str) -> JSONResponse:
        """The same as `DELETE /jobs/{id}`."""
        return JSONResponse(job_view(await cancel_job(request, job_id)))

    return router


def seed_for(job_id: str, body: GenerateRequestBase) -> int:
    """The seed of a PUT that gave none: the same for the same id and body (a retry must not
    meet a 409 over a seed the server drew), another for another id."""
    digest = hashlib.sha256(f"{job_id}\0{body.model_dump_json()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


async def cancel_job(request: Request, job_id: str) -> Job:
    """Cancel on the event loop (a queued job's task is canceled there); a job held by another
    process is recorded canceled in the store, from a thread."""
    jobs = AppState.of(request).jobs
    if jobs.holds(job_id):
        return jobs.cancel(job_id)
    return await asyncio.to_thread(jobs.cancel, job_id)
