"""AWS's own Lambda Runtime Interface Emulator, installed from PyPI, and a runner for it.

The `aws-sam-cli` wheel ships the emulator AWS's base images use for local testing
(`samcli/local/rapid/aws-lambda-rie-x86_64`, `-arm64`). The whole CLI and its dependencies are
not needed: `install()` downloads the pinned wheel alone with pip (`pip download --no-deps`),
checks its SHA-256, and extracts only this machine's binary into `build/rie/` (git-ignored).
`python -m tests.support.rie` does the same from a Makefile or CI and prints the binary's path.

The emulator serves `POST /2015-03-31/functions/function/invocations` and runs INIT on the first
invoke. It does not freeze the environment between invokes and has no INIT types or SnapStart:
thaw's own emulator (`tests/support/lambda_emulator.py`) covers those.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAM_CLI_VERSION = "1.170.0"
WHEEL = f"aws_sam_cli-{SAM_CLI_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "24ebaf5ecba38dc1758089968cb89ab61e124b84e92a344fc7a2771a47f4d0bf"
INSTALL_DIR = ROOT / "build" / "rie"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class RieUnavailable(RuntimeError):
    """The emulator could not be installed (no PyPI, unknown machine)."""


def binary_name(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    if machine not in ARCHES:
        raise RieUnavailable(f"no aws-lambda-rie build for {machine!r}")
    return f"aws-lambda-rie-{ARCHES[machine]}"


def installed_path() -> Path:
    return INSTALL_DIR / SAM_CLI_VERSION / binary_name()


def install(*, timeout_s: float = 300) -> Path:
    """The emulator binary, downloaded and extracted on first use; idempotent."""
    target = installed_path()
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="thaw-rie-") as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"aws-sam-cli=={SAM_CLI_VERSION}",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            scratch,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        wheel = Path(scratch) / WHEEL
        if done.returncode != 0 or not wheel.exists():
            raise RieUnavailable(f"pip could not download {WHEEL}: {done.stderr[-2000:]}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RieUnavailable(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as archive, partial.open("wb") as out:
            shutil.copyfileobj(archive.open(f"samcli/local/rapid/{binary_name()}"), out)
        partial.chmod(0o755)
        partial.replace(target)  # atomic: a concurrent installer sees all or nothing
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RieEnvironment:
    """`aws-lambda-rie ... python -m awslambdaric <handler>` on loopback ports: one environment.

    One invoke at a time, as on Lambda: AWS's emulator panics on a second invoke that arrives
    while one runs (`ReserveFailed: AlreadyReserved`, then a nil pointer dereference:
    aws-lambda-runtime-interface-emulator#97) and every later invoke finds nothing listening, so
    `invoke_raw` waits for the one in flight. `cpus` pins the emulator and everything it starts
    to those CPUs, as a Lambda environment with less memory has fewer vCPUs."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        handler: str = "handler.lambda_function.handler",
        cpus: set[int] | None = None,
    ):
        self.binary = install()
        self._one_at_a_time = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{INVOKE_PATH}"
        self.log_path = Path(tempfile.mkstemp(prefix="thaw-rie-", suffix=".log")[1])
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "THAW_"))},
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance metadata lookups on a dev box
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        argv = [
            str(self.binary),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{free_port()}",
            sys.executable,
            "-m",
            "awslambdaric",
            handler,
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one group: the emulator, the runtime, the worker
                preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
            )
        self._wait_listening(30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aws-lambda-rie exited:\n{self.log[-3000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"aws-lambda-rie did not listen within {timeout_s}s")

    def invoke_raw(self, payload: Any, *, timeout_s: float = 180) -> tuple[int, bytes]:
        """POST the event to the invocations URL: the HTTP status and the raw body."""
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), method="POST")
        with self._one_at_a_time:
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

    def invoke(self, payload: Any, *, timeout_s: float = 180) -> Any:
        status, body = self.invoke_raw(payload, timeout_s=timeout_s)
        if status != 200:
            raise RuntimeError(f"invocations answered {status}: {body[:2000]!r}")
        return json.loads(body)

    def close(self) -> None:
        """Stop the emulator and everything it started (its whole process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def __enter__(self) -> RieEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    print(install())
