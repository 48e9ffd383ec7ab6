"""A Lambda Runtime API emulator that drives the real `awslambdaric` client in a subprocess.

It serves the documented runtime protocol on a loopback port (`/2018-06-01/runtime/invocation/
next`, `/invocation/{id}/response`, `/invocation/{id}/error`, `/init/error`) and, like Lambda,
freezes the execution environment whenever it has nothing to do: SIGSTOP when INIT ends with no
event waiting and after each response, SIGCONT before handing out the next event. Threads in the
process (a background model load) are suspended while frozen, as on Lambda.

Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`) is served too, for the
function's calls to itself: a synchronous invoke (warm-up fan-out) runs in `invoke_target` and
answers with its result; `X-Amz-Invocation-Type: Event` (a job's worker) is queued there and
answered 202 at once, as Lambda's asynchronous invocation is. An environment may target itself.

SnapStart (`init_type="snap-start"`): the runtime's `GET /restore/next` ends INIT and is the
"snapshot": the whole process group is frozen there until `restore()` thaws it and answers, as a
restored microVM resumes inside that call; a failing after-restore hook is reported to
`POST /restore/error`. A real snapshot can be restored many times; this one resumes once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support import procs

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/2018-06-01/runtime"
INVOKE_PREFIX = "/2015-03-31/functions/"
FUNCTION_NAME = "thaw-test"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}:live"


@dataclass
class Invocation:
    """One event handed to the runtime, and what the runtime answered."""

    event: Any
    timeout_ms: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline_ms: int | None = None
    handed_out_at: float | None = None
    answered_at: float | None = None
    outcome: str | None = None  # "response" or "error"
    body: bytes = b""
    error_type: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> Invocation:
        if not self.done.wait(timeout):
            raise TimeoutError(f"no answer to invocation {self.request_id} within {timeout}s")
        return self

    @property
    def result(self) -> Any:
        return json.loads(self.body)

    @property
    def answered_before_deadline(self) -> bool:
        assert self.deadline_ms is not None
        assert self.answered_at is not None
        return self.answered_at * 1000 <= self.deadline_ms


class RuntimeApiEmulator:
    """One execution environment: the Runtime API server and the runtime process behind it."""

    def __init__(self, *, invoke_target: RuntimeApiEmulator | None = None) -> None:
        """`invoke_target`: the environment that Lambda's Invoke API on this emulator reaches
        (`AWS_ENDPOINT_URL_LAMBDA` in the runtime), so a fan-out lands on another process."""
        self.invoke_target = invoke_target
        self.invoke_requests: list[tuple[str, dict[str, list[str]]]] = []
        self.invoke_kinds: list[str] = []
        self._cond = threading.Condition()
        self._queue: deque[Invocation] = deque()
        self._invocations: dict[str, Invocation] = {}
        self._closing = False
        self._freeze_lock = threading.Lock()
        self.frozen = False
        self.freezes = 0
        self.init_done = threading.Event()
        self.init_done_at: float | None = None
        self.init_error: dict[str, Any] | None = None
        self.init_error_type: str | None = None
        self.init_failed = threading.Event()
        self.snapshot_taken = threading.Event()
        self.snapshot_taken_at: float | None = None
        self.restored_at: float | None = None
        self._restore = threading.Event()
        self.restore_error: dict[str, Any] | None = None
        self.restore_error_type: str | None = None
        self.restore_failed = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.log_path = Path(tempfile.mkstemp(prefix="thaw-lambda-", suffix=".log")[1])
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- the runtime process -------------------------------------------------------------------

    def start(
        self,
        env: dict[str, str],
        *,
        init_type: str = "on-demand",
        handler: str = "handler.lambda_function.handler",
        argv: list[str] | None = None,
    ) -> RuntimeApiEmulator:
        """Spawn `python -m awslambdaric <handler>` (or `argv`) against this emulator: INIT."""
        environ = {
            **os.environ,
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
            "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"2024/03/12/[1]{uuid.uuid4().hex}",
            "AWS_REGION": "us-east-1",
            # Lambda's Invoke API, for the warm-up fan-out, is served here too.
            "AWS_ENDPOINT_URL_LAMBDA": f"http://{self.address}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LAMBDA_TASK_ROOT": str(ROOT),
            "_HANDLER": handler,
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.spawned_at = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv or [sys.executable, "-m", "awslambdaric", handler],
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the environment to freeze
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def process_state(self, pid: int | None = None) -> str:
        """The kernel's one-letter state of the runtime process, or of `pid` ("T" while
        frozen, "X" once gone)."""
        assert self.proc is not None
        return procs.state(pid or self.proc.pid)

    def environment_pids(self) -> list[int]:
        """The runtime process and every process it started (its process group)."""
        assert self.proc is not None
        return procs.group_pids(self.proc.pid)

    def freeze(self) -> None:
        """Stop the whole environment, as Lambda does: the runtime and any process it started
        (thaw's model worker) stop together."""
        with self._freeze_lock:
            if self.proc is not None and self.proc.poll() is None and not self.frozen:
                os.killpg(self.proc.pid, signal.SIGSTOP)
                self.frozen = True
                self.freezes += 1
                # Signals are delivered asynchronously: the freeze is done when the kernel says so.
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and any(
                    self.process_state(pid) not in ("T", "Z", "X")
                    for pid in self.environment_pids()
                ):
                    time.sleep(0.001)

    def thaw(self) -> None:
        with self._freeze_lock:
            if self.proc is not None and self.frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGCONT)
                self.frozen = False

    def close(self) -> int | None:
        """Shut the environment down (SIGTERM, then SIGKILL) and stop the server."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        code = None
        if self.proc is not None:
            self.thaw()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            code = self.proc.returncode
            # Lambda ends the whole environment: nothing the runtime started outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.server.shutdown()
        self.server.server_close()
        return code

    # -- invoking --------------------------------------------------------------------------------

    def submit(self, event: Any, *, timeout_ms: int = 120_000) -> Invocation:
        """Queue an event; the runtime gets it on its next `/next` (thawed if frozen)."""
        invocation = Invocation(event, timeout_ms)
        with self._cond:
            self._invocations[invocation.request_id] = invocation
            self._queue.append(invocation)
            self._cond.notify_all()
        self.thaw()
        return invocation

    def invoke(self, event: Any, *, timeout_ms: int = 120_000) -> Invocation:
        """Queue an event and wait for its answer (a little past its deadline at most)."""
        invocation = self.submit(event, timeout_ms=timeout_ms)
        return invocation.wait(timeout_ms / 1000 + 30)

    def wait_init(self, timeout: float = 120) -> float:
        """Wait until INIT ends (the first `/next`); return seconds since spawn."""
        deadline = time.monotonic() + timeout
        while not self.init_done.wait(0.05):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"INIT did not end within {timeout}s:\n{self.log[-3000:]}")
        assert self.init_done_at is not None
        return self.init_done_at - self.spawned_at

    def wait_snapshot(self, timeout: float = 120) -> float:
        """Wait until INIT ends in `restore/next` (the snapshot); return seconds since spawn."""
        deadline = time.monotonic() + timeout
        while not self.snapshot_taken.wait(0.05):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot within {timeout}s:\n{self.log[-3000:]}")
        assert self.snapshot_taken_at is not None
        return self.snapshot_taken_at - self.spawned_at

    def restore(self) -> None:
        """Resume the snapshotted environment: `restore/next` answers and the after-restore
        hooks run; invokes follow."""
        if not self.snapshot_taken.is_set():
            raise RuntimeError("no snapshot to restore: INIT has not reached restore/next")
        self.restored_at = time.monotonic()
        self._restore.set()

    # -- the Runtime API -------------------------------------------------------------------------

    def _restore_next(self) -> bool:
        """The runtime is ready for its snapshot: take it (freeze), then wait for `restore()`."""
        self.snapshot_taken_at = time.monotonic()
        self.freeze()
        self.snapshot_taken.set()
        while not self._restore.wait(0.5):
            with self._cond:
                if self._closing:
                    return False
        self.thaw()
        return True

    def _restore_error(self, body: bytes, error_type: str | None) -> None:
        self.restore_error = json.loads(body or b"{}")
        self.restore_error_type = error_type
        self.restore_failed.set()

    def _next(self) -> Invocation | None:
        with self._cond:
            if not self._queue:
                self.freeze()  # nothing to do: Lambda freezes the environment
            if not self.init_done.is_set():
                self.init_done_at = time.monotonic()
                self.init_done.set()
            while not self._queue and not self._closing:
                self._cond.wait(0.5)
            if self._closing:
                return None
            invocation = self._queue.popleft()
        self.thaw()
        invocation.handed_out_at = time.monotonic()
        invocation.deadline_ms = int(time.time() * 1000) + invocation.timeout_ms
        return invocation

    def _answer(self, request_id: str, outcome: str, body: bytes, error_type: str | None) -> bool:
        with self._cond:
            invocation = self._invocations.get(request_id)
        if invocation is None or invocation.done.is_set():
            return False
        invocation.answered_at = time.time()  # before the freeze, which may take a moment
        # The response is out: Lambda freezes the environment until the next event, unless one
        # is waiting (queued during this invocation: the function's own asynchronous invoke).
        # Under the lock: a `submit` queues, then thaws, so it either sees this freeze or is seen.
        with self._cond:
            if not self._queue:
                self.freeze()
        invocation.outcome = outcome
        invocation.body = body
        invocation.error_type = error_type
        invocation.done.set()
        return True

    def _init_error(self, body: bytes, error_type: str | None) -> None:
        self.init_error = json.loads(body or b"{}")
        self.init_error_type = error_type
        self.init_failed.set()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads the runtime's own log."""

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, body: bytes = b"{}", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == f"{PREFIX}/restore/next":
                    if emulator._restore_next():
                        self._send(200, b"{}")
                    return
                if self.path != f"{PREFIX}/invocation/next":
                    self._send(404, b'{"errorMessage":"unknown path"}')
                    return
                invocation = emulator._next()
                if invocation is None:
                    return  # shutting down: the runtime is being stopped, answer nothing
                self._send(
                    200,
                    json.dumps(invocation.event).encode(),
                    Lambda_Runtime_Aws_Request_Id=invocation.request_id,
                    Lambda_Runtime_Deadline_Ms=str(invocation.deadline_ms),
                    Lambda_Runtime_Invoked_Function_Arn=FUNCTION_ARN,
                    Lambda_Runtime_Trace_Id=f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
                )

            def do_POST(self) -> None:
                body = self._body()
                if self.path.startswith(INVOKE_PREFIX):
                    self._invoke(body)
                    return
                error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                if self.path == f"{PREFIX}/init/error":
                    emulator._init_error(body, error_type)
                    self._send(202, b'{"status":"OK"}')
                    return
                if self.path == f"{PREFIX}/restore/error":
                    emulator._restore_error(body, error_type)
                    self._send(202, b'{"status":"OK"}')
                    return
                parts = self.path.removeprefix(f"{PREFIX}/invocation/").split("/")
                if len(parts) == 2 and parts[1] in ("response", "error"):
                    outcome = parts[1]
                    if emulator._answer(parts[0], outcome, body, error_type):
                        self._send(202, b'{"status":"OK"}')
                    else:
                        self._send(400, b'{"errorMessage":"unknown or answered request id"}')
                    return
                self._send(404, b'{"errorMessage":"unknown path"}')

            def _invoke(self, body: bytes) -> None:
                """Lambda's Invoke API: run the event in the target environment and answer with
                its result, or (`Event`) queue it there and answer 202 at once."""
                url = urlsplit(self.path)
                name = url.path.removeprefix(INVOKE_PREFIX).split("/")[0]
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                emulator.invoke_requests.append((name, parse_qs(url.query)))
                emulator.invoke_kinds.append(kind)
                target = emulator.invoke_target
                if target is None or name != FUNCTION_NAME:
                    message = f'{{"Message":"Function not found: {name}"}}'
                    self._send(404, message.encode(), x_amzn_ErrorType="ResourceNotFoundException")
                    return
                if kind == "Event":
                    target.submit(json.loads(body or b"{}"), timeout_ms=180_000)
                    self._send(202, b"")
                    return
                answer = target.invoke(json.loads(body or b"{}"), timeout_ms=180_000)
                headers = {"X_Amz_Executed_Version": "1"}
                if answer.outcome == "error":
                    headers["X_Amz_Function_Error"] = "Unhandled"
                self._send(200, answer.body, **headers)

        return Handler
