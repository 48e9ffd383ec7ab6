"""Hand a job to an asynchronous invocation of this same function (and alias).

The invocation that accepts a job answers 202 at once; the generation runs in another
invocation, started with `InvocationType=Event`: Lambda queues the event, answers 202 itself,
retries the invocation if it fails, and may deliver it more than once (the worker's claim is a
conditional write, so a second delivery runs nothing). The target is the function and qualifier
of the invocation being served (its `invoked_function_arn`): a job accepted on the `live` alias
runs on `live`, with its provisioned concurrency and its code version.

The Lambda client is made on first use, from the standard AWS settings: boto3 reads
`AWS_ENDPOINT_URL_LAMBDA`, so tests point it at a loopback emulator.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from runtime.aws.events import job_event, parse_function_arn
from runtime.aws.warmup import Invoker, Target

log = logging.getLogger("thaw.dispatch")


class DispatchError(RuntimeError):
    """Lambda did not accept the asynchronous invocation."""


def default_client() -> Invoker:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=10,  # an Event invoke is answered as soon as Lambda has queued it
        retries={"mode": "standard", "max_attempts": 3},
    )
    client: Invoker = boto3.client("lambda", config=config)
    return client


class SelfInvoker:
    """`dispatch(job_id)` queues `{"thaw": "job", "id": job_id}` for the function being served.

    The adapter calls `serving(arn)` at the start of every invocation (an execution environment
    serves one invocation at a time, so the target is the current invocation's)."""

    def __init__(self, client_factory: Callable[[], Invoker] = default_client) -> None:
        self._client_factory = client_factory
        self._client: Invoker | None = None
        self._lock = threading.Lock()
        self.target: Target | None = None

    def serving(self, invoked_function_arn: str | None) -> None:
        try:
            name, qualifier = parse_function_arn(invoked_function_arn or "")
        except ValueError:
            self.target = None
            return
        self.target = Target(name, qualifier)

    def client(self) -> Invoker:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def close_clients(self) -> None:
        """Drop the client: before a SnapStart snapshot, so no restored environment inherits
        INIT's connections or credentials."""
        with self._lock:
            client, self._client = self._client, None
        close = getattr(client, "close", None)
        if callable(close):
            close()

    def dispatch(self, job_id: str) -> None:
        target = self.target
        if target is None:
            raise DispatchError("no invoked function ARN in this invocation: cannot dispatch")
        kwargs: dict[str, Any] = {
            "FunctionName": target.function_name,
            "InvocationType": "Event",
            "Payload": json.dumps(job_event(job_id)).encode(),
        }
        if target.qualifier is not None:
            kwargs["Qualifier"] = target.qualifier
        response = self.client().invoke(**kwargs)
        status = response.get("StatusCode")
        if status != 202:
            raise DispatchError(f"Lambda answered {status} to an asynchronous invoke")
        log.info(
            "job dispatched to an asynchronous invocation",
            extra={
                "job_id": job_id,
                "function": target.function_name,
                "qualifier": target.qualifier,
            },
        )
