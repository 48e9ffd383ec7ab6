"""`/generate`: text in, PNG (or JSON with base64 PNG) out.

No `from __future__ import annotations` here: FastAPI must see the request model built from the
configured limits as a real class in the route's signature, not as a string it cannot resolve.
"""

import asyncio
import base64
import logging
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from handler.auth import require_api_key
from handler.jobs_view import JobsUnavailable, job_view
from handler.pipeline import (
    GeneratedImage,
    GenerationParams,
    LoadedPipeline,
    batch_key,
    generate_batch,
)
from handler.schemas import GenerateRequestBase, check_pixel_budget
from handler.state import AppState
from handler.terms import refuse_on_every_model
from runtime.errors import InvalidRequest
from runtime.jobs.destinations import WebhookRefused
from runtime.jobs.runner import JobWork
from runtime.jobs.webhooks import Subscription
from runtime.lifecycle.service import Served
from runtime.work import Control

log = logging.getLogger("thaw.generate")

P = TypeVar("P")
R = TypeVar("R")

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {}, "application/json": {}},
        "description": "The PNG, or JSON with the base64 PNG for `Accept: application/json`.",
    }
}


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept


def server_timing(served: Served[GeneratedImage]) -> str:
    image = served.value
    parts = {
        "queue": served.queue_s,
        "inference": image.inference_s,
        "encode": image.encode_s,
    }
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in parts.items())


def render(request: Request, served: Served[GeneratedImage], request_id: str) -> Response:
    image = served.value
    headers = {
        "X-Seed": str(image.seed),
        "X-Batch-Size": str(served.batch_size),
        "Server-Timing": server_timing(served),
    }
    if wants_json(request):
        body = {
            "image": base64.b64encode(image.png).decode("ascii"),
            "seed": image.seed,
            "request_id": request_id,
            "width": image.width,
            "height": image.height,
            "timings": {
                "queue_s": round(served.queue_s, 4),
                "inference_s": round(image.inference_s, 4),
                "encode_s": round(image.encode_s, 4),
                "batch_size": served.batch_size,
            },
        }
        return JSONResponse(body, headers=headers)
    return Response(image.png, media_type="image/png", headers=headers)


async def serve(
    request: Request, params: GenerationParams, *, webhook: Subscription | None = None
) -> Response:
    state = AppState.of(request)
    request_id = start_request(request, params.prompt)
    if prefers_async(request):
        return await submit_job(request, params, job_id=None, webhook=webhook)
    if webhook is not None:
        raise WebhookRefused(
            "a webhook needs an asynchronous job: send `Prefer: respond-async`, or POST /jobs"
        )
    served = await run_watched(
        request, params, batch=budgeted(state, params), key=batch_key(params), request_id=request_id
    )
    return render(request, served, request_id)


def start_request(request: Request, prompt: str) -> str:
    """The request's id; the prompt is logged under it when THAW_LOG_PROMPTS says so."""
    state = AppState.of(request)
    request_id = getattr(request.state, "request_id", None) or state.service.new_request_id()
    if state.config.pipeline.log_prompts:
        log.info("prompt", extra={"request_id": request_id, "prompt": prompt})
    return request_id


async def run_watched(
    request: Request,
    item: P,
    *,
    batch: Callable[[LoadedPipeline, list[P]], list[R]],
    key: Hashable | None,
    request_id: str,
) -> Served[R]:
    """Run `item` on the service (admission, warm-up wait, batching, deadlines), canceled when
    the client goes away."""
    control = Control()
    running = asyncio.ensure_future(
        AppState.of(request).service.run_item(
            item, batch=batch, key=key, request_id=request_id, control=control
        )
    )
    watching = asyncio.ensure_future(_cancel_on_disconnect(request, control))
    try:
        return await running
    finally:
        watching.cancel()


def budgeted(
    state: AppState, params: GenerationParams
) -> Callable[[LoadedPipeline, list[GenerationParams]], list[GeneratedImage]]:
    """The batch function for this request: the pixel budget checked (before queueing when the
    model's default size is known, and again against the model that runs it), then generate.
    `generate_batch` fits each request to the model that runs it (its defaults, what it takes).
    A request the model refuses is refused before queueing once a load has said what the model
    takes (it may have been unloaded since); before any load, what no model serves is."""
    limits = state.config.limits
    loaded = state.service.slot.peek()
    if loaded is not None:
        check_pixel_budget(params, loaded.default_size, limits)
        loaded.fit(params)
    elif (terms := state.known.terms) is not None:  # released since: the same model's terms
        check_pixel_budget(params, terms.default_size, limits)
        terms.fit(params)
    else:
        refuse_on_every_model(params)

    def generate_within_budget(
        model: LoadedPipeline, batch: list[GenerationParams]
    ) -> list[GeneratedImage]:
        # The model may have loaded (or been replaced) while this request waited: check the
        # budget against the one that runs it. A batch shares one size (`batch_key`), so the
        # check refuses all of it or none.
        for item in batch:
            check_pixel_budget(item, model.default_size, limits)
        return generate_batch(model, batch)

    return generate_within_budget


def prefers_async(request: Request) -> bool:
    """`Prefer: respond-async` (RFC 7240): answer 202 with a job instead of waiting."""
    prefer = ",".join(request.headers.getlist("prefer")).lower()
    return any(part.strip().split(";")[0] == "respond-async" for part in prefer.split(","))


async def subscription(request: Request, body: GenerateRequestBase) -> Subscription | None:
    """The webhook `body` asks for, checked: a 422 when thaw will not call that URL."""
    state = AppState.of(request)
    if body.webhook is not None and state.config.runtime.on_lambda and state.jobs.dispatch is None:
        raise JobsUnavailable(
            "webhooks on Lambda need asynchronous jobs: set THAW_JOBS_URL=s3://bucket/prefix"
        )
    events = None if body.webhook_events is None else [e.value for e in body.webhook_events]
    return await state.jobs.webhooks.subscribe(body.webhook, events)


async def submit_job(
    request: Request,
    params: GenerationParams,
    *,
    job_id: str | None,
    webhook: Subscription | None = None,
) -> Response:
    """Accept `params` as a job: 202 with the job, `Location` and `Retry-After` (200 with the
    existing job when an idempotent PUT repeats itself)."""
    state = AppState.of(request)
    if state.config.runtime.on_lambda and state.jobs.dispatch is None:
        # Each invocation's environment may be gone before the next poll: jobs need S3 there.
        raise JobsUnavailable(
            "asynchronous jobs on Lambda need a shared store: set THAW_JOBS_URL=s3://bucket/prefix"
        )
    job, created = await state.jobs.asubmit(
        params,
        {**job_request(params), **(webhook.as_request() if webhook else {})},
        batch=budgeted(state, params),
        key=batch_key(params),
        encode=encode_image,
        job_id=job_id,
    )
    headers = {"Location": f"/jobs/{job.id}", "Retry-After": "1"}
    return JSONResponse(job_view(job), status_code=202 if created else 200, headers=headers)


def job_request(params: GenerationParams) -> dict[str, Any]:
    return {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance,
        "width": params.width,
        "height": params.height,
        "seed": params.seed,
        "true_cfg_scale": params.true_cfg_scale,
        "max_sequence_length": params.max_sequence_length,
    }


def job_work(state: AppState, request: dict[str, Any]) -> JobWork:
    """What running a stored job takes, rebuilt from its record (`job_request`'s inverse): the
    side of `submit_job` that a Lambda worker invocation runs."""
    try:
        body = state.request_model.model_validate(request)
    except ValidationError as exc:
        raise InvalidRequest(f"the stored request is not valid here: {exc.errors()[:1]}") from exc
    params = body.to_params(state.config.limits)
    return JobWork(params, budgeted(state, params), batch_key(params), encode_image)


def encode_image(images: GeneratedImage) -> tuple[bytes, dict[str, Any]]:
    return images.png, {"seed": images.seed, "width": images.width, "height": images.height}


async def _cancel_on_disconnect(request: Request, control: Control) -> None:
    """Cancel the generation when the client goes away: it stops at its next step instead of
    computing an image nobody will read. The body is read by now, so the next ASGI message is
    the disconnect (under uvicorn; under Mangum none comes: a Lambda invocation has no
    client to lose)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            request_id = getattr(request.state, "request_id", None)
            log.info("client gone: generation canceled", extra={"request_id": request_id})
            control.cancel()
            return


def build_router(request_model: type[GenerateRequestBase]) -> APIRouter:
    """The routes for one configured request model (its bounds come from the settings)."""
    router = APIRouter(tags=["generate"], dependencies=[Depends(require_api_key)])

    @router.post("/generate", responses=PNG_RESPONSE, response_class=Response)
    async def generate_post(request: Request, body: request_model) -> Response:  # type: ignore[valid-type]
        """Generate an image from a JSON request."""
        params = body.to_params(AppState.of(request).config.limits)  # type: ignore[attr-defined]
        return await serve(request, params, webhook=await subscription(request, body))

    @router.get("/generate", responses=PNG_RESPONSE, response_class=Response)
    async def generate_get(request: Request, prompt: str) -> Response:
        """Generate from query parameters, for a quick try in a browser."""
        try:
            body = request_model.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise RequestValidationError(
                [{**err, "loc": ("query", *err["loc"])} for err in exc.errors()]
            ) from None
        params = body.to_params(AppState.of(request).config.limits)
        return await serve(request, params, webhook=await subscription(request, body))

    return router
