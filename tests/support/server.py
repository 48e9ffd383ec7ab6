"""A real `python -m handler` (uvicorn) subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """Start, probe and stop one server. The log goes to a file the test can read."""

    def __init__(
        self, env: dict[str, str], *, module: str = "handler", args: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "THAW_HOST": "127.0.0.1",
            "THAW_PORT": str(self.port),
            # The same address for plain `python -m uvicorn APP` (its CLI reads UVICORN_*).
            "UVICORN_HOST": "127.0.0.1",
            "UVICORN_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            # One intra-op thread: several servers and the test client share this machine's cores.
            "THAW_TORCH_THREADS": "1",
            **env,
        }
        self.module = module
        self.args = list(args)
        self.log_path = Path(tempfile.mkstemp(prefix="thaw-server-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> ServerProcess:
        self.spawned_at = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def wait_live(self, timeout: float = 30) -> float:
        """Poll /livez until it answers; return seconds since spawn."""
        return self._wait("/livez", timeout)

    def wait_ready(self, timeout: float = 120) -> float:
        return self._wait("/readyz", timeout)

    def _wait(self, path: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            try:
                if self.client.get(path, timeout=2).status_code == 200:
                    return time.monotonic() - self.spawned_at
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        # A server left running would load the machine for every later test.
        self.stop()
        raise TimeoutError(f"{path} did not answer 200 within {timeout}s:\n{self.log[-3000:]}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        self.client.close()
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
