"""thaw's error hierarchy. Each error carries the data its HTTP or Lambda answer needs.

The edges (FastAPI exception handlers, the Lambda entry point) map these to status codes in one
place; nothing in `runtime/` knows about status codes.
"""

from __future__ import annotations


class ThawError(Exception):
    """Base of every error thaw reports to a client.

    `code` is a stable machine-readable word; `retry_after` (seconds) is set when trying again
    later can succeed.
    """

    code = "error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidRequest(ThawError, ValueError):
    """The client sent something outside the accepted bounds."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(ThawError):
    """The request lacks the API key this deployment requires."""

    code = "unauthorized"


class PayloadTooLarge(ThawError):
    """A request or response body exceeds its size limit."""

    code = "payload_too_large"

    def __init__(self, message: str, *, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


class WarmingUp(ThawError):
    """The model is still loading and the caller's wait budget ran out."""

    code = "warming_up"


class LoadFailed(ThawError):
    """The model could not be loaded; `reason` says why, `retry_after` when a retry may start."""

    code = "load_failed"

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"model failed to load: {reason}", retry_after=retry_after)
        self.reason = reason


class Overloaded(ThawError):
    """The admission queue is full."""

    code = "overloaded"


class QueueTimeout(ThawError):
    """A request waited in the admission queue past its deadline without starting."""

    code = "queue_timeout"


class Draining(ThawError):
    """The process is stopping and accepts no new work."""

    code = "draining"


class DeadlineExceeded(ThawError, TimeoutError):
    """Work ran past its deadline. The work itself may still finish in its thread."""

    code = "deadline_exceeded"


class InferenceFailed(ThawError):
    """The model raised while serving one request; the model itself stays loaded. A retry of
    the same request would fail again: no `retry_after`."""

    code = "inference_failed"


class ModelLost(ThawError):
    """The loaded model went away under the work (its worker process died); a fresh one is
    loading. `started` says whether this work had begun on the lost model: work that had not
    may run again on the fresh one."""

    code = "model_lost"

    def __init__(self, message: str, *, started: bool, retry_after: float | None = 1) -> None:
        super().__init__(message, retry_after=retry_after)
        self.started = started


class OutOfMemory(ThawError):
    """The device ran out of memory serving one request; the model stays loaded and a retry,
    later or smaller, may succeed."""

    code = "out_of_memory"


class Canceled(ThawError):
    """The client gave up (a disconnect, a job's cancel) and the work stopped at a step."""

    code = "canceled"
