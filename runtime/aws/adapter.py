"""The Lambda adapter: one execution environment's INIT and the routing of each invocation.

Mangum re-runs an app's lifespan on every invocation (mangum#342), so on Lambda the app's
lifespan is off and this adapter starts the model slot once, at INIT. Warm-up pings are answered
here, before Mangum, which raises on events it cannot match. HTTP events for the paths whose answer
needs the model (the function names them) wait for it within the invocation's remaining time (less
a margin); every HTTP event then goes to the HTTP handler (Mangum), whose result is kept under
Lambda's 6 MB response limit. thaw's job events (`{"thaw": "job", "id": ...}`, sent by
`runtime.aws.dispatch` when a job is accepted) wait for the model with all the invocation's time
and go to the function's job runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

from runtime.aws.dispatch import SelfInvoker
from runtime.aws.emf import MILLISECONDS, SECONDS, EmfWriter, Metric, server_timing
from runtime.aws.events import (
    MAX_RESPONSE_BYTES,
    EventKind,
    InitType,
    classify,
    error_result,
    http_path,
    parse_function_arn,
    prefers_async,
    within_payload_limit,
)
from runtime.aws.warmup import Target, Warmer
from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import ThawError
from runtime.lifecycle.slot import ModelSlot
from runtime.settings import PreloadPolicy

log = logging.getLogger("thaw.lambda")

MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""What Mangum raises translating an event it matched but cannot read (an app's own exceptions
it catches and answers with a 500)."""

HttpHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
HttpError = Callable[[str | None, ThawError], dict[str, Any]]
"""The HTTP result answering a request for this path (None: unknown) with this error."""
JobRunner = Callable[[str, float], dict[str, Any]]
"""Run the stored job with this id within this many seconds; return a report."""


class LambdaContext(Protocol):
    """The parts of the Lambda context object the adapter reads; tests pass plain objects."""

    invoked_function_arn: str

    def get_remaining_time_in_millis(self) -> int: ...


class LambdaAdapter:
    """`adapter(event, context)` is the Lambda handler; `adapter.init(...)` runs once at INIT.

    `model_paths` are the request paths whose answer needs the model (for text-to-image,
    `/generate`): only those wait for a loading model. Probes, metrics, the schema and unknown
    paths answer at once, whatever the model's state. The function gives the set, so this
    adapter knows nothing of any function's routes. Likewise `http_error` answers the adapter's
    own HTTP errors (a response over Lambda's limit) in the shape the function gives that path;
    without it, in thaw's one shape.
    """

    def __init__(
        self,
        slot: ModelSlot[Any],
        http: HttpHandler,
        warmer: Warmer,
        *,
        model_paths: Collection[str],
        margin_s: float = 1.0,
        max_wait_s: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Clock = SYSTEM_CLOCK,
        metrics: EmfWriter | None = None,
        jobs: JobRunner | None = None,
        dispatcher: SelfInvoker | None = None,
        http_error: HttpError | None = None,
    ) -> None:
        self.slot = slot
        self.http_error = http_error
        self.jobs = jobs
        self.dispatcher = dispatcher
        self.http = http
        self.warmer = warmer
        self.margin_s = margin_s
        self.max_wait_s = max_wait_s
        self.max_response_bytes = max_response_bytes
        self.model_paths = frozenset(model_paths)
        self._clock = clock
        self.metrics = metrics
        self._invocations = 0
        self._load_reported = False
        self._restore_s: float | None = None
        self._restored_loaded = False

    def init(self, init_type: InitType, policy: PreloadPolicy) -> None:
        """Start the model once per execution environment, as the INIT type allows.

        Provisioned concurrency and SnapStart may spend long in INIT and no request waits on
        it, so the model loads synchronously there and a failure fails INIT (Lambda reports it
        and retries the environment). On-demand INIT has about 10 s: the load starts in the
        background and the first invoke waits for it.
        """
        if policy is PreloadPolicy.LAZY:
            log.info("lambda init: lazy, nothing loaded", extra={"init_type": init_type.value})
            return
        if init_type.loads_in_init or policy is PreloadPolicy.EAGER:
            log.info("lambda init: loading the model", extra={"init_type": init_type.value})
            self.slot.get(timeout=None)
            return
        self.slot.start()
        log.info("lambda init: loading in the background", extra={"init_type": init_type.value})

    def restored(self, seconds: float) -> None:
        """This environment was restored from a SnapStart snapshot (runtime.aws.snapstart): its
        first invocation is its cold start, and its metrics report the restore, not INIT's load."""
        self._invocations = 0
        self._load_reported = False
        self._restore_s = seconds
        # A snapshot taken without the model (THAW_PRELOAD=lazy) is followed by a load here,
        # whose time the metrics must still show.
        self._restored_loaded = self.slot.ready

    def budget_s(self, context: LambdaContext) -> float:
        """Seconds this invocation may still wait: the remaining time less the safety margin."""
        remaining = context.get_remaining_time_in_millis() / 1000
        budget = max(0.0, remaining - self.margin_s)
        if self.max_wait_s is not None:
            budget = min(budget, self.max_wait_s)
        return budget

    def __call__(self, event: Any, context: LambdaContext) -> Any:
        started = self._clock.monotonic()
        self._invocations += 1
        first = self._invocations == 1
        budget = self.budget_s(context)
        if self.dispatcher is not None:  # a job accepted now runs on this same function
            self.dispatcher.serving(getattr(context, "invoked_function_arn", None))
        classified = classify(event)
        if classified.kind is EventKind.JOB and classified.job_id is not None:
            return self._run_job(classified.job_id, context)
        if classified.kind is EventKind.WARMUP and classified.warmup is not None:
            reply = self.warmer.handle(classified.warmup, budget_s=budget, target=_target(context))
            self._report_warmup(reply, first, context)
            return reply
        if classified.kind is EventKind.UNSUPPORTED:
            log.warning("unsupported event", extra={"reason": classified.reason})
            return error_result(
                "unsupported_event",
                "this function answers HTTP events (function URL, API Gateway, ALB) and warm-up "
                f"pings; this event is neither ({classified.reason})",
            )
        path = http_path(event)
        waited = 0.0
        if path in self.model_paths and not prefers_async(event):  # a job needs no model yet
            before = self._clock.monotonic()
            self._wait_for_model(budget)
            waited = self._clock.monotonic() - before
        try:
            answer = self.http(event, context)
        except MALFORMED as exc:
            # Mangum's handlers read an HTTP event's fields without checking them; a hand-made
            # event shaped like one but missing its fields must not be a Lambda error whose
            # trace names the function's files.
            log.warning("malformed HTTP event", extra={"error": f"{type(exc).__name__}: {exc}"})
            return error_result(
                "unsupported_event",
                "this event looks like an HTTP event (function URL, API Gateway, ALB, "
                f"Lambda@Edge) but lacks what one carries ({type(exc).__name__}: {exc})",
            )
        result = within_payload_limit(answer, self.max_response_bytes, refuse=self._refuser(path))
        self._report_http(result, path, first, waited, self._clock.monotonic() - started, context)
        return result

    def _refuser(self, path: str | None) -> Callable[[ThawError], Any] | None:
        """How an error of the adapter's own is answered to a request for `path`: in the
        function's shape for that path (`http_error`), or thaw's one shape."""
        render = self.http_error
        if render is None:
            return None
        return lambda error: render(path, error)

    def _run_job(self, job_id: str, context: LambdaContext) -> Any:
        """An asynchronous worker invocation: nobody waits on it, so the model may take all of
        its time (less the margin), and the job the rest."""
        if self.jobs is None:
            return error_result("unsupported_event", "this function runs no asynchronous jobs")
        remaining = max(0.0, context.get_remaining_time_in_millis() / 1000 - self.margin_s)
        started = self._clock.monotonic()
        self._wait_for_model(remaining)
        left = max(0.0, remaining - (self._clock.monotonic() - started))
        report = self.jobs(job_id, left)
        log.info("job invocation done", extra=report)
        return report

    # -- CloudWatch metrics (EMF log lines) -----------------------------------------------------

    def _report_http(
        self,
        result: Any,
        path: str | None,
        first: bool,
        waited_s: float,
        seconds: float,
        context: LambdaContext,
    ) -> None:
        if self.metrics is None:
            return
        self._report_load()
        status = int(result.get("statusCode", 0)) if isinstance(result, dict) else 0
        headers = (result.get("headers") or {}) if isinstance(result, dict) else {}
        timing = server_timing(
            next((v for k, v in headers.items() if k.lower() == "server-timing"), None)
        )
        metrics = [
            Metric("Requests", 1),
            Metric("ServerErrors", int(status >= 500 and status != 503)),
            Metric("Refused", int(status in (429, 503))),
            Metric("ColdStartRequests", int(first)),
            Metric("Latency", round(seconds * 1000, 3), MILLISECONDS),
            Metric("ModelWait", round(waited_s * 1000, 3), MILLISECONDS),
        ]
        for name, key in (("QueueTime", "queue"), ("InferenceTime", "inference")):
            if key in timing:
                metrics.append(Metric(name, timing[key], MILLISECONDS))
        properties = {
            "request_id": getattr(context, "aws_request_id", None),
            "path": path,
            "status": status,
            "cold_start": first,
            "state": self.slot.snapshot().status,
        }
        self.metrics.emit(metrics, properties=properties)

    def _report_warmup(self, reply: Any, first: bool, context: LambdaContext) -> None:
        if self.metrics is None:
            return
        self._report_load()
        warm = bool(reply.get("warm")) if isinstance(reply, dict) else False
        self.metrics.emit(
            [Metric("WarmupPings", 1), Metric("ColdStartWarmups", int(first))],
            properties={
                "request_id": getattr(context, "aws_request_id", None),
                "warm": warm,
                "cold_start": first,
            },
        )

    def _report_load(self) -> None:
        """Once per environment, after the load: its duration and each phase's (for an
        environment restored from a snapshot: the restore's duration)."""
        if self._load_reported or self.metrics is None or not self.slot.ready:
            return
        self._load_reported = True
        if self._restore_s is not None:
            self.metrics.emit(
                [Metric("RestoreTime", round(self._restore_s, 4), SECONDS)],
                properties={"init_type": "snap-start", "restored": True},
            )
            if self._restored_loaded:
                return
        snapshot = self.slot.snapshot()
        metrics = [Metric("LoadTime", round(snapshot.load_seconds or 0.0, 4), SECONDS)]
        for phase in snapshot.phases:
            if phase.get("seconds") is not None:
                name = "Load" + "".join(part.title() for part in str(phase["name"]).split("_"))
                metrics.append(Metric(name, phase["seconds"], SECONDS))
        self.metrics.emit(metrics, properties={"load_attempts": snapshot.load_attempts})

    def _wait_for_model(self, budget: float) -> None:
        """Wait for (or start) the load, but only while the invocation's time allows.

        The app answers afterwards: with the model, or with its clean 503 if it is not ready.
        """
        if self.slot.ready:
            return
        started = self._clock.monotonic()
        try:
            self.slot.get(timeout=budget)
        except ThawError as exc:
            log.info(
                "model not ready within the invocation's budget",
                extra={
                    "budget_s": round(budget, 3),
                    "waited_s": round(self._clock.monotonic() - started, 3),
                    "code": exc.code,
                },
            )


def _target(context: LambdaContext) -> Target | None:
    arn = getattr(context, "invoked_function_arn", None)
    if not arn:
        return None
    try:
        name, qualifier = parse_function_arn(arn)
    except ValueError:
        return None
    return Target(name, qualifier)
