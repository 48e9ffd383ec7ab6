"""The Lambda adapter: one execution environment's INIT and the routing of each invocation.

Mangum re-runs an app's lifespan on every invocation (mangum#342), so on Lambda the app's
lifespan is off and this adapter starts the model slot once, at INIT. Warm-up pings are answered
here, before Mangum, which raises on events it cannot match. HTTP events wait for the model within
the invocation's remaining time (less a margin) and then go to the HTTP handler (Mangum), whose
result is kept under Lambda's 6 MB response limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import ThawError
from runtime.lambda_events import (
    MAX_RESPONSE_BYTES,
    EventKind,
    InitType,
    classify,
    error_result,
    http_path,
    parse_function_arn,
    within_payload_limit,
)
from runtime.settings import PreloadPolicy
from runtime.slot import ModelSlot
from runtime.warmup import Target, Warmer

log = logging.getLogger("thaw.lambda")

HttpHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class LambdaContext(Protocol):
    """The parts of the Lambda context object the adapter reads; tests pass plain objects."""

    invoked_function_arn: str

    def get_remaining_time_in_millis(self) -> int: ...


class LambdaAdapter:
    """`adapter(event, context)` is the Lambda handler; `adapter.init(...)` runs once at INIT."""

    def __init__(
        self,
        slot: ModelSlot[Any],
        http: HttpHandler,
        warmer: Warmer,
        *,
        margin_s: float = 1.0,
        max_wait_s: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        no_wait_paths: Collection[str] = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.slot = slot
        self.http = http
        self.warmer = warmer
        self.margin_s = margin_s
        self.max_wait_s = max_wait_s
        self.max_response_bytes = max_response_bytes
        self.no_wait_paths = frozenset(no_wait_paths)
        self._clock = clock

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

    def budget_s(self, context: LambdaContext) -> float:
        """Seconds this invocation may still wait: the remaining time less the safety margin."""
        remaining = context.get_remaining_time_in_millis() / 1000
        budget = max(0.0, remaining - self.margin_s)
        if self.max_wait_s is not None:
            budget = min(budget, self.max_wait_s)
        return budget

    def __call__(self, event: Any, context: LambdaContext) -> Any:
        budget = self.budget_s(context)
        classified = classify(event)
        if classified.kind is EventKind.WARMUP and classified.warmup is not None:
            return self.warmer.handle(classified.warmup, budget_s=budget, target=_target(context))
        if classified.kind is EventKind.UNSUPPORTED:
            log.warning("unsupported event", extra={"reason": classified.reason})
            return error_result(
                "unsupported_event",
                "this function answers HTTP events (function URL, API Gateway, ALB) and warm-up "
                f"pings; this event is neither ({classified.reason})",
            )
        if http_path(event) not in self.no_wait_paths:
            self._wait_for_model(budget)
        return within_payload_limit(self.http(event, context), self.max_response_bytes)

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
