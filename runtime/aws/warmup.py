"""Warm-up pings: make sure the model is loaded here, and optionally in N-1 other environments.

A ping never runs user inference. With `concurrency` N > 1 the receiving environment sends N-1
concurrent synchronous invokes of the same function and qualifier, each asking for a plain
warm-up; Lambda routes a synchronous invoke to an idle environment or starts one, so while every
target is busy (each holds itself busy for `hold_ms` once warm) the invokes land on distinct
environments and N environments end up warm.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict

from runtime.aws.events import (
    MAX_WARMUP_CONCURRENCY,
    WARMUP_KEY,
    WARMUP_VALUE,
    ErrorBody,
    WarmupRequest,
    error_body,
)
from runtime.clock import SYSTEM_CLOCK, Clock
from runtime.errors import ThawError
from runtime.lifecycle.slot import ModelSlot
from runtime.lifecycle.states import SlotState

log = logging.getLogger("thaw.warmup")


class Invoker(Protocol):
    """The part of a boto3 Lambda client the fan-out uses (`lambda.invoke`)."""

    def invoke(self, **kwargs: Any) -> Mapping[str, Any]: ...


class FanOutReport(TypedDict):
    requested: int
    answered: int
    environments: int
    """Distinct environment ids that answered, this environment included."""
    environment_ids: list[str]
    errors: list[str]


class WarmupReport(TypedDict):
    """The answer to a warm-up ping."""

    warm: bool
    cold_start: bool
    """The model was not loaded here when the ping arrived."""
    status: str
    environment_id: str
    load_seconds: float | None
    source: str
    concurrency: int
    error: NotRequired[ErrorBody]
    fan_out: NotRequired[FanOutReport]


@dataclass(frozen=True)
class Target:
    """The function (and version or alias) that fan-out invokes."""

    function_name: str
    qualifier: str | None = None


def fan_out_payload(hold_s: float) -> bytes:
    return json.dumps(
        {WARMUP_KEY: WARMUP_VALUE, "concurrency": 1, "hold_ms": round(hold_s * 1000)}
    ).encode()


def default_invoker() -> Invoker:
    """A boto3 Lambda client sized for the widest fan-out. Made once, on first fan-out."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=MAX_WARMUP_CONCURRENCY,
        connect_timeout=5,
        read_timeout=900,  # a cold target may load its model for up to its own timeout
        retries={"mode": "standard", "max_attempts": 2},
    )
    client: Invoker = boto3.client("lambda", config=config)
    return client


def invoke_one(invoker: Invoker, target: Target, payload: bytes) -> str:
    """One synchronous warm-up invoke; returns the target's environment id or raises."""
    kwargs: dict[str, Any] = {
        "FunctionName": target.function_name,
        "InvocationType": "RequestResponse",
        "Payload": payload,
    }
    if target.qualifier is not None:
        kwargs["Qualifier"] = target.qualifier
    response = invoker.invoke(**kwargs)
    raw: Any = response.get("Payload")
    body = raw.read() if hasattr(raw, "read") else raw
    try:
        answer = json.loads(body or b"null")
    except ValueError:
        answer = None
    if response.get("FunctionError"):
        message = answer.get("errorMessage") if isinstance(answer, dict) else None
        raise RuntimeError(f"function error ({response['FunctionError']}): {message or body!r}")
    if not isinstance(answer, dict) or not isinstance(answer.get("environment_id"), str):
        raise RuntimeError(f"not a warm-up answer: {body!r}"[:300])
    environment_id: str = answer["environment_id"]
    return environment_id


def fan_out(
    invoker: Invoker,
    target: Target,
    count: int,
    *,
    own_id: str,
    timeout_s: float,
    hold_s: float = 0.5,
) -> FanOutReport:
    """Send `count` concurrent warm-up invokes; wait up to `timeout_s` for their answers."""
    payload = fan_out_payload(hold_s)
    pool = ThreadPoolExecutor(max_workers=max(1, count), thread_name_prefix="thaw-fanout")
    futures: list[Future[str]] = [
        pool.submit(invoke_one, invoker, target, payload) for _ in range(count)
    ]
    _, not_done = wait_futures(futures, timeout=max(0.0, timeout_s))
    # Stragglers are not waited for: this invocation must answer before its own deadline.
    pool.shutdown(wait=False, cancel_futures=True)
    ids: list[str] = []
    errors: list[str] = []
    for future in futures:
        if future in not_done:
            continue
        exc = future.exception()
        if exc is None:
            ids.append(future.result())
        else:
            errors.append(f"{type(exc).__name__}: {exc}"[:500])
    if not_done:
        errors.append(f"{len(not_done)} invoke(s) did not answer within {timeout_s:.1f}s")
    return {
        "requested": count,
        "answered": len(ids),
        "environments": len({own_id, *ids}),
        "environment_ids": sorted(set(ids)),
        "errors": errors,
    }


class Warmer:
    """Answers warm-up pings for one execution environment."""

    def __init__(
        self,
        slot: ModelSlot[Any],
        environment_id: str,
        *,
        invoker_factory: Callable[[], Invoker] = default_invoker,
        hold_s: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.slot = slot
        self.environment_id = environment_id
        self.hold_s = hold_s
        self._invoker_factory = invoker_factory
        self._invoker: Invoker | None = None
        self._lock = threading.Lock()
        self._clock = clock

    def invoker(self) -> Invoker:
        with self._lock:
            if self._invoker is None:
                self._invoker = self._invoker_factory()
            return self._invoker

    def close_clients(self) -> None:
        """Drop the Lambda client (and its connection pool): before a SnapStart snapshot, so no
        restored environment inherits INIT's connections or credentials. The next fan-out makes
        a new one."""
        with self._lock:
            invoker, self._invoker = self._invoker, None
        close = getattr(invoker, "close", None)
        if callable(close):
            close()

    def handle(
        self,
        request: WarmupRequest,
        *,
        budget_s: float,
        target: Target | None,
    ) -> WarmupReport:
        """Load (or wait for) the model within `budget_s`, fan out if asked, report."""
        started = self._clock.monotonic()
        cold = not self.slot.ready
        # Fan out while this environment loads: it stays busy meanwhile, so no invoke lands on
        # it, and the whole ping takes as long as the slowest environment, not the sum.
        fanning = self._start_fan_out(request.concurrency - 1, target, budget_s)
        error: ErrorBody | None = None
        try:
            self.slot.get(timeout=max(0.0, budget_s))
        except ThawError as exc:
            error = error_body(exc.code, exc.message, exc.retry_after)
        if request.hold_s > 0:
            left = budget_s - (self._clock.monotonic() - started)
            self._clock.sleep(max(0.0, min(request.hold_s, left)))
        report = self._report(request, cold)
        if error is not None:
            report["error"] = error
        if fanning is not None:
            report["fan_out"] = fanning.result()
        log.info("warm-up answered", extra={k: v for k, v in report.items() if k != "fan_out"})
        return report

    def _start_fan_out(
        self, count: int, target: Target | None, budget_s: float
    ) -> Future[FanOutReport] | None:
        if count <= 0:
            return None
        try:
            if target is None:
                raise LookupError("no invoked function ARN in the context: cannot fan out")
            invoker = self.invoker()
        except Exception as exc:  # no ARN, no region, no credentials: report it, warm up here
            failed: Future[FanOutReport] = Future()
            failed.set_result(
                {
                    "requested": count,
                    "answered": 0,
                    "environments": 1,
                    "environment_ids": [],
                    "errors": [f"{type(exc).__name__}: {exc}"],
                }
            )
            return failed
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thaw-fanout")
        try:
            return pool.submit(
                fan_out,
                invoker,
                target,
                count,
                own_id=self.environment_id,
                timeout_s=budget_s,
                hold_s=self.hold_s,
            )
        finally:
            pool.shutdown(wait=False)

    def _report(self, request: WarmupRequest, cold: bool) -> WarmupReport:
        snap = self.slot.snapshot()
        return {
            "warm": snap.state is SlotState.READY,
            "cold_start": cold,
            "status": snap.status,
            "environment_id": self.environment_id,
            "load_seconds": None if snap.load_seconds is None else round(snap.load_seconds, 3),
            "source": request.source.value,
            "concurrency": request.concurrency,
        }
