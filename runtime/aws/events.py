"""Lambda events and results as plain data: what kind an event is, and the answers thaw builds.

Pure functions only. The HTTP event shapes follow the rules Mangum (0.22) uses to pick its handler,
so an event classified `HTTP` here is one Mangum can translate; everything else must be answered
before Mangum, which raises `RuntimeError` on an event it cannot match (an EventBridge schedule,
for one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, NotRequired, TypedDict

from runtime.errors import PayloadTooLarge

# Lambda's limit on a synchronous invocation's buffered response payload.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024

# thaw's own warm-up payload: `{"thaw": "warmup", "concurrency": N}`.
WARMUP_KEY = "thaw"
WARMUP_VALUE = "warmup"
# thaw's asynchronous job payload: `{"thaw": "job", "id": "<job id>"}`, sent by the invocation
# that accepted the job to an asynchronous (`InvocationType=Event`) invocation of the function.
JOB_VALUE = "job"
MAX_WARMUP_CONCURRENCY = 100
MAX_HOLD_S = 10.0


class EventKind(Enum):
    """What an invocation asks for."""

    HTTP = "http"
    """A function URL, API Gateway (REST or HTTP API), ALB or Lambda@Edge request: for Mangum."""

    WARMUP = "warmup"
    """A keep-warm ping: load the model if needed and report; never run user inference."""

    JOB = "job"
    """thaw's own asynchronous invocation: run the stored job it names."""

    UNSUPPORTED = "unsupported"
    """Anything else (an S3 notification, a bare `{}`): answered with a clear error result."""


class InitType(Enum):
    """`AWS_LAMBDA_INITIALIZATION_TYPE`: how this execution environment was started."""

    ON_DEMAND = "on-demand"
    """INIT has about 10 s; an invoke is usually waiting, so the load runs in the background."""

    PROVISIONED = "provisioned-concurrency"
    """INIT may run much longer and no request waits on it: load synchronously in INIT."""

    SNAP_START = "snap-start"
    """INIT ends in a snapshot: load in INIT so the snapshot holds the model."""

    @classmethod
    def parse(cls, value: str | None) -> InitType:
        """Unknown or missing values (local runs, emulators) count as on-demand."""
        for member in cls:
            if member.value == (value or "").strip().lower():
                return member
        return cls.ON_DEMAND

    @property
    def loads_in_init(self) -> bool:
        return self is not InitType.ON_DEMAND


class WarmupSource(Enum):
    """Which convention a warm-up ping follows."""

    SCHEDULE = "aws.events"
    PLUGIN = "serverless-plugin-warmup"
    THAW = "thaw"


@dataclass(frozen=True)
class WarmupRequest:
    """A recognised warm-up ping. `concurrency` environments should end up warm (this one too)."""

    source: WarmupSource
    concurrency: int = 1
    hold_s: float = 0.0
    """Stay busy this long once warm, so sibling fan-out invokes land on other environments."""


@dataclass(frozen=True)
class Classified:
    kind: EventKind
    warmup: WarmupRequest | None = None
    job_id: str | None = None
    """For `JOB`: the job to run."""
    reason: str | None = None
    """For `UNSUPPORTED`: what the event looked like."""


class ThawWarmupEvent(TypedDict):
    thaw: Literal["warmup"]
    concurrency: NotRequired[int]
    hold_ms: NotRequired[int]


class ThawJobEvent(TypedDict):
    thaw: Literal["job"]
    id: str


def job_event(job_id: str) -> ThawJobEvent:
    """The payload of the asynchronous invocation that runs a job (well under the 256 KB an
    asynchronous invocation may carry: the request itself stays in the job store)."""
    return {"thaw": "job", "id": job_id}


# An EventBridge (CloudWatch Events) scheduled rule's event; "detail-type" is no identifier.
ScheduledEvent = TypedDict(
    "ScheduledEvent",
    {"source": Literal["aws.events"], "detail-type": str, "resources": list[str], "time": str},
    total=False,
)


class HttpResult(TypedDict):
    """The result shape every HTTP event source accepts (function URL, API Gateway, ALB)."""

    statusCode: int
    headers: dict[str, str]
    body: str
    isBase64Encoded: bool


class ErrorBody(TypedDict):
    code: str
    message: str
    retry_after: int | None


class ErrorResult(TypedDict):
    """The one error shape, returned as-is for events that are not HTTP."""

    error: ErrorBody


def classify(event: Any) -> Classified:
    """Say what an invocation's event is. Warm-ups are checked first: they are never HTTP."""
    if not isinstance(event, Mapping):
        return Classified(EventKind.UNSUPPORTED, reason=f"event is a {type(event).__name__}")
    warmup = _warmup(event)
    if warmup is not None:
        return Classified(EventKind.WARMUP, warmup=warmup)
    if event.get(WARMUP_KEY) == JOB_VALUE:
        job_id = event.get("id")
        if isinstance(job_id, str) and job_id:
            return Classified(EventKind.JOB, job_id=job_id)
        return Classified(EventKind.UNSUPPORTED, reason="a thaw job event without an id")
    if is_http(event):
        return Classified(EventKind.HTTP)
    keys = ", ".join(sorted(str(key) for key in event)[:8]) or "none"
    return Classified(EventKind.UNSUPPORTED, reason=f"event keys: {keys}")


def is_http(event: Mapping[str, Any]) -> bool:
    """Mangum's handler-selection rules, in its order: ALB, HTTP API/URL, REST API, Lambda@Edge."""
    context = event.get("requestContext")
    if isinstance(context, Mapping) and (
        "elb" in context or "version" in event or "resource" in event
    ):
        return True
    records = event.get("Records")
    return (
        isinstance(records, list)
        and len(records) > 0
        and isinstance(records[0], Mapping)
        and "cf" in records[0]
    )


def _warmup(event: Mapping[str, Any]) -> WarmupRequest | None:
    if event.get(WARMUP_KEY) == WARMUP_VALUE:
        return WarmupRequest(
            WarmupSource.THAW,
            _concurrency(event.get("concurrency", 1)),
            _hold_seconds(event.get("hold_ms", 0)),
        )
    source = event.get("source")
    if source == WarmupSource.SCHEDULE.value and event.get("detail-type") == "Scheduled Event":
        return WarmupRequest(WarmupSource.SCHEDULE)
    if source == WarmupSource.PLUGIN.value:
        return WarmupRequest(WarmupSource.PLUGIN)
    return None


def _concurrency(value: Any) -> int:
    """A usable fan-out width from whatever the payload carried: 1..MAX_WARMUP_CONCURRENCY."""
    if isinstance(value, bool):
        return 1
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 1
    return max(1, min(number, MAX_WARMUP_CONCURRENCY))


def _hold_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return max(0.0, min(float(value) / 1000, MAX_HOLD_S))


def error_body(code: str, message: str, retry_after: float | None = None) -> ErrorBody:
    seconds = None if retry_after is None else max(1, math.ceil(retry_after))
    return {"code": code, "message": message, "retry_after": seconds}


def error_result(code: str, message: str, retry_after: float | None = None) -> ErrorResult:
    return {"error": error_body(code, message, retry_after)}


def http_error(
    status: int, code: str, message: str, retry_after: float | None = None
) -> HttpResult:
    """An HTTP error answer in the one JSON error shape, with `Retry-After` when it applies."""
    body = error_body(code, message, retry_after)
    headers = {"content-type": "application/json"}
    if body["retry_after"] is not None:
        headers["retry-after"] = str(body["retry_after"])
    return {
        "statusCode": status,
        "headers": headers,
        "body": json.dumps({"error": body}),
        "isBase64Encoded": False,
    }


def payload_size(result: Any) -> int:
    """Bytes the runtime would post for `result` (it serialises the result as JSON)."""
    return len(json.dumps(result, separators=(",", ":")).encode("utf-8"))


def within_payload_limit(
    result: dict[str, Any],
    limit_bytes: int = MAX_RESPONSE_BYTES,
    *,
    refuse: Callable[[PayloadTooLarge], Any] | None = None,
) -> Any:
    """`result` unchanged when it fits Lambda's buffered response limit, else a 413 error:
    `refuse`'s answer to a `PayloadTooLarge` (the function's own error shape), or by default
    the one JSON error shape.

    Past the limit Lambda would fail the invocation with a bare error the client cannot act on.
    """
    size = payload_size(result)
    if size <= limit_bytes:
        return result
    error = PayloadTooLarge(
        f"the response would be {size} bytes encoded, over the {limit_bytes}-byte Lambda "
        "response limit; ask for a smaller image",
        limit_bytes=limit_bytes,
    )
    if refuse is not None:
        return refuse(error)
    return http_error(413, error.code, error.message)


def parse_function_arn(arn: str) -> tuple[str, str | None]:
    """`arn:aws:lambda:region:account:function:name[:qualifier]` → (name, qualifier)."""
    parts = arn.split(":")
    if len(parts) < 7 or parts[5] != "function":
        raise ValueError(f"not a Lambda function ARN: {arn!r}")
    qualifier = parts[7] if len(parts) > 7 and parts[7] else None
    return parts[6], qualifier


def prefers_async(event: Mapping[str, Any]) -> bool:
    """The HTTP event asks `Prefer: respond-async` (RFC 7240): it will be answered 202 with a
    job, so it needs no model now. Header names are case-insensitive in every event source."""
    values: list[str] = []
    for source in ("headers", "multiValueHeaders"):
        headers = event.get(source)
        if not isinstance(headers, Mapping):
            continue
        for name, value in headers.items():
            if str(name).lower() == "prefer":
                values.extend(value if isinstance(value, list) else [value])
    prefer = ",".join(str(value) for value in values).lower()
    return any(part.strip().split(";")[0] == "respond-async" for part in prefer.split(","))


def http_path(event: Mapping[str, Any]) -> str | None:
    """The request path of an HTTP event, whichever source sent it."""
    raw = event.get("rawPath")
    if isinstance(raw, str):
        return raw
    path = event.get("path")
    if isinstance(path, str):
        return path
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        request = records[0].get("cf", {}).get("request", {})
        uri = request.get("uri") if isinstance(request, Mapping) else None
        return uri if isinstance(uri, str) else None
    return None
