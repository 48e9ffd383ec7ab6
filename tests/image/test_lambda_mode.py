"""The image as Lambda runs it: its own entry point, with AWS_LAMBDA_RUNTIME_API pointing at
thaw's Runtime API emulator on the host (tests/support/lambda_emulator.py), a read-only root and a
tmpfs /tmp. The environment is frozen between events as Lambda freezes it: here with the
container engine's cgroup freezer (`pause`), since the emulator's SIGSTOP would stop only the
engine's client.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.image.engine import Engine
from tests.image.containers import SMALL_CPU_ENV, png_size
from tests.support.lambda_emulator import Invocation, RuntimeApiEmulator

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
# What the emulator sets for the runtime, passed on into the container by name.
LAMBDA_VARIABLES = (
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_TASK_ROOT",
    "_HANDLER",
    "TZ",
)


class ContainerEnvironment(RuntimeApiEmulator):
    """One execution environment that is a container of the image."""

    def __init__(self, engine: Engine, image: str) -> None:
        super().__init__()
        self.engine = engine
        self.image = image
        self.name = f"thaw-lambda-{uuid.uuid4().hex[:10]}"
        self.stopping = False

    def start_container(self, env: dict[str, str]) -> ContainerEnvironment:
        # The image's code lives in /app; Lambda's own task root is /var/task.
        env = {**env, "LAMBDA_TASK_ROOT": "/app"}
        argv = [
            *self.engine.argv("run", "--rm", "--name", self.name, "--network", "host"),
            *("--read-only", "--tmpfs", "/tmp:rw,size=512m,mode=1777"),
        ]
        for name in (*LAMBDA_VARIABLES, *env):
            argv += ["--env", name]
        argv.append(self.image)  # no command: the image's CMD names the handler
        self.start({**dict(self.engine.env), **env}, argv=argv)
        return self

    def freeze(self) -> None:
        if self.stopping:  # a paused container would not take the signal
            return
        with self._freeze_lock:
            running = self.proc is not None and self.proc.poll() is None
            if running and not self.frozen and self._pause("pause"):
                self.frozen = True
                self.freezes += 1

    def thaw(self) -> None:
        with self._freeze_lock:
            if self.frozen:
                self._pause("unpause")
                self.frozen = False

    def _pause(self, verb: str) -> bool:
        return self.engine.run(verb, self.name, check=False, timeout=60).returncode == 0

    def stop(self, grace_s: int = 30) -> tuple[int | None, float]:
        """`docker stop` of the environment: SIGTERM, SIGKILL after the grace period."""
        # No more freezing (the runtime's next /next would pause it again), then thaw: taking the
        # lock that /next holds while it freezes orders the two. The runtime then waits in /next
        # for an event, as it does on Lambda when the environment is shut down.
        with self._cond:
            self.stopping = True
        self.thaw()
        began = time.monotonic()
        self.engine.run("stop", "--time", str(grace_s), self.name, check=False, timeout=90)
        assert self.proc is not None
        code = self.proc.wait(30)  # the engine's client exits as the container did
        return code, time.monotonic() - began


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def health(environment: RuntimeApiEmulator) -> dict[str, Any]:
    answer = environment.invoke(event("function_url_health.json"), timeout_ms=10_000)
    assert answer.outcome == "response", answer.body
    report: dict[str, Any] = json.loads(answer.result["body"])
    return report


@pytest.fixture(scope="module")
def environment(engine: Engine, image: str) -> Iterator[tuple[ContainerEnvironment, Invocation]]:
    environment = ContainerEnvironment(engine, image)
    # The first event waits before INIT begins, as a cold start's does.
    first = environment.submit(event("function_url_generate.json"), timeout_ms=180_000)
    environment.start_container({**SMALL_CPU_ENV, "THAW_PRELOAD": "background"})
    try:
        first.wait(240)
        yield environment, first
    except BaseException:
        print(environment.log)
        raise
    finally:
        engine.remove_container(environment.name)
        environment.close()


def test_init_then_a_function_url_generate_answers_a_png(
    environment: tuple[ContainerEnvironment, Invocation],
) -> None:
    emulator, first = environment
    assert emulator.init_done.is_set()
    assert emulator.init_error is None
    assert first.outcome == "response", first.body
    result = first.result
    assert result["statusCode"] == 200, result
    assert result["isBase64Encoded"] is True
    assert png_size(base64.b64decode(result["body"]))[0] > 0
    assert first.answered_before_deadline


def test_a_warmup_ping_answers_warm_and_the_model_loaded_once(
    environment: tuple[ContainerEnvironment, Invocation],
) -> None:
    emulator, _ = environment
    answer = emulator.invoke({"thaw": "warmup"}, timeout_ms=30_000)
    assert answer.outcome == "response", answer.body
    assert answer.result["warm"] is True
    assert answer.result["status"] == "ready"
    report = health(emulator)
    assert report["load_attempts"] == 1
    assert report["loads_completed"] == 1
    assert emulator.log.count('"model load started"') == 1
    # Frozen between events, as Lambda does.
    assert emulator.freezes >= 3


def test_docker_stop_ends_the_runtime_at_once(
    environment: tuple[ContainerEnvironment, Invocation],
) -> None:
    emulator, _ = environment
    code, took = emulator.stop(grace_s=30)
    # Terminated by the SIGTERM that was passed on (128 + 15), not killed after the grace
    # period (137): the entry script is PID 1's signal handler for awslambdaric.
    assert code == 143, emulator.log[-3000:]
    assert took < 30
