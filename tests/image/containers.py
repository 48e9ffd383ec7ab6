"""Starting thaw's image as the platforms do, and watching it from the outside (also used by
bench/image_start.py)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.image.engine import Engine

TINY_GENERATE = {
    "prompt": "a lighthouse",
    "num_inference_steps": 2,
    "width": 64,
    "height": 64,
    "seed": 7,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One intra-op thread: on a small shared CPU, torch's spinning threads make generations slow.
SMALL_CPU_ENV = {"THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "info"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status_of(url: str, timeout: float = 2) -> int | None:
    """The HTTP status a GET answers, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


def post_json(url: str, body: dict[str, object], timeout: float = 120) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.headers.get("Content-Type", ""), error.read()


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert png.startswith(PNG_MAGIC), png[:16]
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@dataclass
class StartTimeline:
    """When /livez and /readyz first answered 200, in seconds from the start command, and every
    /readyz status seen before."""

    livez_s: float | None = None
    readyz_s: float | None = None
    readyz_seen: list[int | None] = field(default_factory=list)
    livez_readyz_status: int | None = None  # /readyz's status when /livez first answered


def watch_start(
    base_url: str,
    started_at: float,
    *,
    timeout: float = 180,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.01,
) -> StartTimeline:
    """Poll /livez until it answers, then /readyz until 200."""
    timeline = StartTimeline()
    deadline = started_at + timeout
    while time.monotonic() < deadline:
        if timeline.livez_s is None:
            if status_of(f"{base_url}/livez") == 200:
                timeline.livez_s = time.monotonic() - started_at
                timeline.livez_readyz_status = status_of(f"{base_url}/readyz")
                timeline.readyz_seen.append(timeline.livez_readyz_status)
                if timeline.livez_readyz_status == 200:
                    timeline.readyz_s = timeline.livez_s
                    return timeline
        else:
            status = status_of(f"{base_url}/readyz")
            timeline.readyz_seen.append(status)
            if status == 200:
                timeline.readyz_s = time.monotonic() - started_at
                return timeline
        if not alive():
            raise RuntimeError("the server exited before it was ready")
        time.sleep(interval)
    raise TimeoutError(f"not ready within {timeout}s: {timeline}")


@dataclass
class Container:
    """One detached container of the image, named so that it can be stopped and removed."""

    engine: Engine
    image: str
    env: dict[str, str]
    options: Sequence[str] = ()
    command: Sequence[str] = ()  # after the image: the CMD, or what an `--entrypoint` takes
    name: str = field(default_factory=lambda: f"thaw-test-{uuid.uuid4().hex[:10]}")
    started_at: float = 0.0

    def start(self) -> Container:
        args = ["run", "--detach", "--name", self.name, *self.options]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        self.started_at = time.monotonic()
        self.engine.run(*args, self.image, *self.command, timeout=120)
        return self

    def inspect(self, template: str) -> str:
        return self.engine.run("inspect", "--format", template, self.name).stdout.strip()

    @property
    def running(self) -> bool:
        result = self.engine.run(
            "inspect", "--format", "{{.State.Running}}", self.name, check=False
        )
        return result.stdout.strip() == "true"

    def logs(self) -> str:
        result = self.engine.run("logs", self.name, check=False)
        return (result.stdout or "") + (result.stderr or "")

    def host_pid(self) -> int:
        return int(self.inspect("{{.State.Pid}}"))

    def stop(self, grace_s: int = 30) -> tuple[int, float]:
        """SIGTERM, then SIGKILL after the grace period (as `docker stop`); exit code, seconds."""
        began = time.monotonic()
        self.engine.run("stop", "--time", str(grace_s), self.name, timeout=grace_s + 60)
        took = time.monotonic() - began
        return int(self.inspect("{{.State.ExitCode}}")), took

    def diff(self) -> list[str]:
        """Paths the container changed in its own writable layer (`A`dded, `C`hanged, `D`eleted)."""
        out = self.engine.run("diff", self.name).stdout
        return [line for line in out.splitlines() if line.strip()]

    def baseline_diff(self) -> list[str]:
        """What the engine itself changes in a container that runs nothing (the mount points of
        /etc/hosts, /etc/resolv.conf and the like), started with the same options."""
        name = f"{self.name}-baseline"
        try:
            self.engine.run(
                "run", "--name", name, *self.options, "--entrypoint", "/bin/true", self.image,
                timeout=120,
            )  # fmt: skip
            out = self.engine.run("diff", name).stdout
        finally:
            self.engine.remove_container(name)
        return [line for line in out.splitlines() if line.strip()]

    def remove(self) -> None:
        self.engine.remove_container(self.name)


def http_env(port: int) -> dict[str, str]:
    """A container on the host's network serving on loopback only."""
    return {**SMALL_CPU_ENV, "THAW_HOST": "127.0.0.1", "THAW_PORT": str(port)}


def uid_of(pid: int) -> int:
    """The real uid of a host process (the container's main process, seen from the host)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise LookupError(pid)
