"""The Lambda entry point: `handler.lambda_function.handler(event, context)`.

Importing this module is Lambda's INIT for the execution environment: it reads the configuration
once, builds the app with its lifespan off (Mangum would run a lifespan around every invocation,
mangum#342) and starts the model slot as `AWS_LAMBDA_INITIALIZATION_TYPE` allows: synchronously
for provisioned concurrency and SnapStart, in the background on demand. Neither torch nor diffusers
is imported here; the slot's loader thread imports them. Under SnapStart the hooks of
runtime.aws.snapstart are registered too: the snapshot holds the loaded model, and each restored
environment gets its own id, random state (here and in the model's worker) and clocks.
"""

from __future__ import annotations

import os

from handler.early import start_worker_early, startup_collector

# First thing in INIT: the model worker starts importing torch while this process imports Mangum
# and the app (handler/early.py); the slot's load below takes it. The imports run with the
# garbage collector paused, as in `python -m handler` (runtime/collector.py).
with startup_collector(os.environ):
    start_worker_early(os.environ)

    import dataclasses
    import uuid

    from mangum import Mangum

    from handler.app import build_service, create_app
    from handler.config import Config
    from handler.errors import http_result
    from handler.lambda_jobs import job_runner
    from handler.pipeline import LoadedPipeline
    from handler.snapstart import PipelineProcess
    from handler.terms import KnownTerms
    from runtime.aws.adapter import LambdaAdapter
    from runtime.aws.dispatch import SelfInvoker
    from runtime.aws.emf import EmfWriter
    from runtime.aws.events import InitType
    from runtime.aws.snapstart import SnapStartHooks
    from runtime.aws.warmup import Warmer
    from runtime.lifecycle.service import Service
    from runtime.observe.logs import configure_logging

# The paths whose answer needs the model: on Lambda only these wait for a loading model (within the
# invocation's time); probes, /metrics, the schema and unknown paths answer at once.
MODEL_PATHS = ("/generate", "/v1/images/generations")

# One id per execution environment, reported by warm-up pings to count distinct environments.
ENVIRONMENT_ID = uuid.uuid4().hex[:12]


def build_lambda_service(config: Config, known: KnownTerms) -> Service[LoadedPipeline]:
    """The service, bound to the process-wide slot, as the adapter drives it.

    The adapter waits for the model within the invocation's remaining time before the app sees
    the request, so the app itself must not wait again past Lambda's deadline: its warm wait is
    zero and a model still loading is its clean 503."""
    settings = dataclasses.replace(config.runtime, warm_wait_s=0.0)
    return build_service(dataclasses.replace(config, runtime=settings), known=known)


def build_adapter(
    config: Config, service: Service[LoadedPipeline], known: KnownTerms
) -> LambdaAdapter:
    """The app behind Mangum, inside the adapter that owns INIT, warm-ups and deadlines. With
    jobs in S3 (THAW_JOBS_URL), a job is accepted at once and runs in an asynchronous
    invocation of this same function (handler.lambda_jobs)."""
    settings = config.runtime
    dispatcher = SelfInvoker() if settings.jobs_url is not None else None
    app = create_app(
        config,
        service,
        lifespan=False,
        dispatch=dispatcher.dispatch if dispatcher else None,
        known=known,
    )
    return LambdaAdapter(
        service.slot,
        Mangum(app, lifespan="off"),
        Warmer(service.slot, ENVIRONMENT_ID, hold_s=settings.warmup_hold_s),
        margin_s=settings.lambda_margin_s,
        max_wait_s=settings.warm_wait_s,
        max_response_bytes=settings.lambda_max_response_bytes,
        model_paths=MODEL_PATHS,
        metrics=EmfWriter(namespace=settings.metrics_namespace) if settings.emf else None,
        jobs=job_runner(app) if dispatcher else None,
        dispatcher=dispatcher,
        http_error=http_result,  # OpenAI's error shape under /v1/, as the app answers there
    )


CONFIG = Config.from_env(os.environ)
configure_logging(CONFIG.runtime.log_level, CONFIG.runtime.log_format)
INIT_TYPE = InitType.parse(os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"))
KNOWN = KnownTerms()
SERVICE = build_lambda_service(CONFIG, KNOWN)
handler = build_adapter(CONFIG, SERVICE, KNOWN)
handler.init(INIT_TYPE, CONFIG.runtime.preload)
# Under SnapStart the snapshot is taken after this import ends: awslambdaric runs these hooks
# before it, and after each restore.
SNAPSTART = SnapStartHooks(handler, SERVICE, PipelineProcess())
if INIT_TYPE is InitType.SNAP_START:
    SNAPSTART.register()
