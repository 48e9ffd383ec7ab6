"""Helpers shared by the benchmarks: spawn processes, poll endpoints, summarise samples."""

from __future__ import annotations

import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_status(url: str, started: float, timeout: float = 120.0, interval: float = 0.005) -> float:
    """Seconds from `started` until GET `url` answers 200, polling every `interval`.

    A bare socket and a hand-written request, not an HTTP client: polling every 5 ms with httpx
    took 20% of a core here (urllib 11%), and on two cores that came out of the share of
    whichever server had more than one busy process (thaw and its model worker), not of the bare
    app it is compared with. Connection attempts are refused until the server listens.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    ).encode()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=1.0) as sock:
                sock.sendall(request)
                status_line = sock.makefile("rb").readline()
            if status_line.split(b" ", 2)[1:2] == [b"200"]:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(url)


class LatencyProbe:
    """Polls a URL from a thread and records each answer's latency in seconds. A probe that
    fails (no answer, a timeout, a status other than 200) is recorded too, as `FAILED`
    (infinite latency), so it shows in the percentiles and the maximum instead of vanishing."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append(time.perf_counter() - started if ok else FAILED)
                time.sleep(self.interval)

    @property
    def failed(self) -> int:
        return failed(self.samples)


FAILED = math.inf
"""A failed or timed-out probe's latency in `LatencyProbe.samples`."""


def failed(samples: Sequence[float]) -> int:
    """How many probes in `samples` failed."""
    return sum(1 for sample in samples if sample == FAILED)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def python() -> str:
    return sys.executable


def compile_bytecode() -> None:
    """Write the project's bytecode before anything is timed, as the image does at build time.

    With PYTHONDONTWRITEBYTECODE set (as on this machine) a module edited since its last
    compile is compiled again at every spawn: 20-40 ms more per start of thaw on one CPU,
    which the bare app, with nothing of ours to compile, never pays."""
    subprocess.run(
        [python(), "-m", "compileall", "-q", "handler", "runtime", "bench", "infra/scripts"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )


def write_result(name: str, lines: Sequence[str]) -> None:
    """Write a benchmark's report to bench/results/`name` and show it."""
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(text, encoding="utf-8")
    print(text)
