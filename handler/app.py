"""The ASGI app: `handler.app:app`.

Importing this module is the process's start for uvicorn: it reads the configuration once and
binds the process-wide pipeline slot, but imports neither torch nor diffusers, so the server
listens at once. The model loads per `THAW_PRELOAD` (in the background by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from handler import errors, openapi
from handler.config import Config
from handler.jobs_view import job_view
from handler.lifespan import app_lifespan
from handler.middleware import BodyLimit, RequestContext
from handler.pipeline import (
    PIPELINE,
    GenerationParams,
    LoadedPipeline,
    choose_loader,
    release_pipeline,
)
from handler.routes import generate, jobs, metrics, openai_images, playground, probes
from handler.schemas import request_model
from handler.state import AppState
from handler.terms import KnownTerms
from runtime.jobs.runner import Jobs
from runtime.jobs.s3store import S3JobStore, make_client
from runtime.jobs.store import JobStore, LocalJobStore
from runtime.jobs.webhooks import WebhookSender
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.observe.logs import redact_queries
from runtime.observe.phases import PhaseRecorder
from runtime.settings import Settings

# uvicorn logs each request's target, query included, on these loggers: its access log (on by
# default under plain `uvicorn handler.app:app`) and the WebSocket lines of `uvicorn.error`. A
# `GET /generate?prompt=...` would put the prompt there, which only THAW_LOG_PROMPTS may do.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


def build_service(
    config: Config,
    slot: ModelSlot[LoadedPipeline] | None = None,
    known: KnownTerms | None = None,
) -> Service[LoadedPipeline]:
    """Bind the pipeline loader to the slot and wrap it in a service; each load tells `known`
    what its model takes."""
    slot = PIPELINE if slot is None else slot
    loader = choose_loader(config)

    def load(phases: PhaseRecorder) -> LoadedPipeline:
        loaded = loader(config, phases)
        if known is not None and loaded.terms is not None:
            known.terms = loaded.terms
        return loaded

    slot.bind(
        load,
        release=release_pipeline,
        retry=RetryPolicy(**config.runtime.retry_policy_args()),  # type: ignore[arg-type]
    )
    return Service(slot, config.runtime)


def job_store(settings: Settings) -> JobStore:
    """Where jobs live: S3 when THAW_JOBS_URL names a location (shared by every replica and
    by Lambda's invocations), else a local folder (THAW_JOBS_DIR, or one in the cache)."""
    if settings.jobs_url is not None:
        endpoint = settings.s3_endpoint_url
        return S3JobStore.from_url(settings.jobs_url, client_factory=lambda: make_client(endpoint))
    return LocalJobStore(settings.jobs_dir or settings.cache_dir / "jobs")


def build_jobs(
    service: Service[LoadedPipeline],
    settings: Settings,
    *,
    dispatch: Callable[[str], None] | None = None,
) -> Jobs[GenerationParams]:
    return Jobs(
        service,
        job_store(settings),
        ttl_s=settings.job_ttl_s,
        webhooks=WebhookSender(settings.webhooks, view=job_view),
        lease_s=settings.job_lease_s,
        start_within_s=settings.queue_timeout_s,
        dispatch=dispatch,
    )


def create_app(
    config: Config | None = None,
    service: Service[LoadedPipeline] | None = None,
    *,
    lifespan: bool = True,
    dispatch: Callable[[str], None] | None = None,
    known: KnownTerms | None = None,
) -> FastAPI:
    """Build the app. `lifespan=False` is for Mangum, which would re-run it every invocation;
    `dispatch` hands each new job to another invocation (Lambda's asynchronous worker); `known`
    is what the loads of a `service` built elsewhere tell (`build_service`)."""
    config = Config.from_env(os.environ) if config is None else config
    redact_queries(*SERVER_LOGGERS)
    known = KnownTerms() if known is None else known
    service = build_service(config, known=known) if service is None else service
    kwargs: dict[str, Any] = {"lifespan": app_lifespan} if lifespan else {}
    app = FastAPI(
        title="thaw text-to-image",
        version="0.1.0",
        description="A text-to-image service that listens at once and loads its model once.",
        # FastAPI's /docs and /redoc pages load their scripts from a CDN, on the origin where the
        # playground keeps the API key: the playground at / is the UI, /openapi.json the schema.
        docs_url=None,
        redoc_url=None,
        **kwargs,
    )
    model = request_model(config.limits)
    settings = config.runtime
    app.state.thaw = AppState(
        config=config,
        service=service,
        request_model=model,
        jobs=build_jobs(service, settings, dispatch=dispatch),
        known=known,
    )
    app.include_router(probes.router)
    app.include_router(metrics.router)
    app.include_router(playground.router)
    app.include_router(generate.build_router(model))
    app.include_router(jobs.build_router(model))
    app.include_router(openai_images.build_router(model, settings.max_batch))
    errors.install(app)
    openapi.install(app, service.slot.peek)  # the loaded model's request, once it is
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    app.add_middleware(RequestContext, telemetry=service.telemetry)  # outermost: sees every answer
    return app


app = create_app()
