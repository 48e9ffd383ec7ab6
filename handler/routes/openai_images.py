"""The OpenAI-compatible Images API: `POST /v1/images/generations`, `GET /v1/models`, and the
images handed out as URLs (`GET /v1/images/results/{id}`).

A generation takes the same path as `/generate` (admission, warm-up wait, batching, deadlines,
cancel on disconnect); `n` images are one pipeline call. Every failure on these routes is
answered in OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`, thaw's
`retry_after` beside them) with the status code thaw uses everywhere, so the openai client
raises its matching exception: a bad parameter is a 422 (UnprocessableEntityError; OpenAI
itself answers 400), a full queue a 429 (RateLimitError), warming up or draining a 503, each
with `Retry-After`, which the client's own retry honours; `x-should-retry` tells it not to
retry what would fail again. `handler.errors` chooses that shape for every answer under `/v1/`
(the body limit's 413, an unknown path's 404 and a wrong method's 405 included).

No `from __future__ import annotations` here: FastAPI must see the request model built from the
configured limits as a real class in the route's signature.
"""

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from handler.auth import require_api_key
from handler.image_results import ImageResults
from handler.jobs_view import JobsUnavailable
from handler.openai_schemas import (
    ErrorBody,
    ImageData,
    ImagesRequestBase,
    ImagesResponse,
    Model,
    ModelList,
    ResponseFormat,
    error_body,
    images_request_model,
)
from handler.pipeline import GeneratedImage, GenerationParams, LoadedPipeline, batch_key
from handler.routes.generate import budgeted, job_request, run_watched, start_request
from handler.schemas import GenerateRequestBase
from handler.state import AppState
from runtime.jobs.store import LocalJobStore
from runtime.lifecycle.service import Served

log = logging.getLogger("thaw.openai")

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "Missing or wrong API key.",
        422: "A parameter out of bounds; `error.param` names it.",
        429: "The queue is full: try again after `Retry-After` seconds.",
        503: "Warming up, or shutting down: try again after `Retry-After` seconds.",
    }.items()
}


def error_json(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, param), status)


def model_id(model_ref: str) -> str:
    """The id `/v1/models` lists: a Hugging Face id as it is; a folder or an `s3://` prefix by
    its last part (a path on the server tells a client nothing it can use)."""
    ref = model_ref.rstrip("/")
    if "://" in ref or ref.startswith(("/", ".", "~")):
        return ref.rsplit("/", 1)[-1] or ref
    return ref


def image_results(state: AppState) -> ImageResults:
    """Where images handed out as URLs are kept. On Lambda a local store would keep them in one
    execution environment, which later requests may never reach."""
    if state.config.runtime.on_lambda and isinstance(state.jobs.store, LocalJobStore):
        raise JobsUnavailable(
            "response_format=url needs a shared jobs store on Lambda: ask for b64_json"
        )
    return ImageResults(state.jobs, ttl_s=state.config.runtime.job_ttl_s)


def in_one_call(
    generate: Callable[[LoadedPipeline, list[GenerationParams]], list[GeneratedImage]],
) -> Callable[[LoadedPipeline, list[tuple[GenerationParams, ...]]], list[list[GeneratedImage]]]:
    """The batch function for requests of several images: each request's images in one call."""

    def run(
        model: LoadedPipeline, requests: list[tuple[GenerationParams, ...]]
    ) -> list[list[GeneratedImage]]:
        return [generate(model, list(images)) for images in requests]

    return run


async def generate_images(request: Request, body: ImagesRequestBase) -> JSONResponse:
    state = AppState.of(request)
    params = body.to_params(state.request_model, state.config.limits)
    results = image_results(state) if body.response_format is ResponseFormat.URL else None
    first = params[0]
    request_id = start_request(request, first.prompt)
    generate = budgeted(state, first)
    images: list[GeneratedImage]
    served: Served[Any]
    if len(params) == 1:  # may share a call with other requests, /generate's included
        served = await run_watched(
            request, first, batch=generate, key=batch_key(first), request_id=request_id
        )
        images, batch_size = [served.value], served.batch_size
    else:  # never shares: THAW_MAX_BATCH bounds the images in one call
        served = await run_watched(
            request, tuple(params), batch=in_one_call(generate), key=None, request_id=request_id
        )
        images = served.value
        batch_size = len(images)
    if results is None:
        data = [
            ImageData(b64_json=base64.b64encode(image.png).decode("ascii"), seed=image.seed)
            for image in images
        ]
    else:
        data = await asyncio.to_thread(handed_out, request, results, params, images)
    answer = ImagesResponse(
        created=int(time.time()), data=data, size=f"{images[0].width}x{images[0].height}"
    )
    timing = {
        "queue": served.queue_s,
        "inference": images[0].inference_s,
        "encode": sum(image.encode_s for image in images),
    }
    headers = {
        "X-Batch-Size": str(batch_size),
        "Server-Timing": ", ".join(f"{k};dur={s * 1000:.1f}" for k, s in timing.items()),
    }
    return JSONResponse(answer.model_dump(exclude_none=True), headers=headers)


def handed_out(
    request: Request,
    results: ImageResults,
    params: list[GenerationParams],
    images: list[GeneratedImage],
) -> list[ImageData]:
    """Keep each image and give its URL: the store's own, else one served here."""
    data = []
    for item, image in zip(params, images, strict=True):
        result_id = results.keep(image, job_request(item))
        url = results.presigned_url(result_id) or str(
            request.url_for("openai_image_result", result_id=result_id)
        )
        data.append(ImageData(url=url, seed=image.seed))
    return data


def build_router(request_model: type[GenerateRequestBase], max_images: int) -> APIRouter:
    """The OpenAI-compatible routes, with `/generate`'s bounds and at most `max_images` images
    a request."""
    images_model = images_request_model(request_model, max_images)
    router = APIRouter(prefix="/v1", tags=["openai"])
    keyed = [Depends(require_api_key)]
    created = int(time.time())

    @router.post(
        "/images/generations", dependencies=keyed, response_model=ImagesResponse, responses=ERRORS
    )
    async def images_generations(request: Request, body: images_model) -> JSONResponse:  # type: ignore[valid-type]
        """Create images from a prompt, as OpenAI's Images API does (`openai` clients work with
        `base_url` set to this server's `/v1`)."""
        return await generate_images(request, body)

    @router.get("/models", dependencies=keyed, response_model=ModelList, responses=ERRORS)
    async def models(request: Request) -> ModelList:
        """The model this server serves (one)."""
        ref = AppState.of(request).config.model_ref
        return ModelList(data=[Model(id=model_id(ref), created=created)])

    @router.get("/models/{model:path}", dependencies=keyed, response_model=Model, responses=ERRORS)
    async def model(request: Request, model: str) -> Response:
        """The model, if it is the one this server serves."""
        served = model_id(AppState.of(request).config.model_ref)
        if model != served:
            return error_json(
                404,
                "model_not_found",
                f"no model {model!r}: this server serves {served!r}",
                "model",
            )
        return JSONResponse(Model(id=served, created=created).model_dump())

    @router.get(
        "/images/results/{result_id}",
        name="openai_image_result",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}},
    )
    async def image_result(request: Request, result_id: str) -> Response:
        """An image handed out as a URL (no key needed: the id is the capability), for an hour
        after it was made."""
        results = ImageResults(AppState.of(request).jobs)
        png = await asyncio.to_thread(results.image, result_id)
        if png is None:
            return error_json(404, "not_found", f"no image {result_id[:64]!r} (or it expired)")
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    return router
