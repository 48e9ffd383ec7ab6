"""Where the server and its model worker would share one CPU, the server listens first.

`python -m handler` starts its model worker before importing its web stack, so on two or more
CPUs the two import side by side. On one CPU (a Lambda function under 1,769 MB, a pod with
`limits.cpu: 1`) they would take turns on it, and the server would listen later without the
model being ready any sooner: there the worker starts once the server listens
(`THAW_WORKER_START=auto`, handler/early.py). Observed from the outside: a real server
whose CPU affinity is one CPU, its log, and a model that still loads once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ROOT, ServerProcess

STARTED = "model worker started"


class PinnedServer(ServerProcess):
    """`python -m handler` allowed to run on the given CPUs only (as `taskset` would)."""

    def __init__(self, env: dict[str, str], cpus: set[int] | None) -> None:
        super().__init__(env)
        self.cpus = cpus

    def start(self) -> PinnedServer:
        cpus = self.cpus
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if cpus is None else (lambda: os.sched_setaffinity(0, cpus)),
            )
        return self


def worker_starts(log: str) -> list[bool]:
    """`started_early` of each "model worker started" record."""
    found = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == STARTED:
            found.append(bool(record.get("started_early")))
    return found


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[PinnedServer]:
    env, cpus = request.param
    server = PinnedServer({"THAW_LOG_FORMAT": "json", **env}, cpus).start()
    try:
        server.wait_live(60)
        server.wait_ready(180)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "started",
    [
        pytest.param(({}, {0}), id="auto-on-one-cpu"),
        pytest.param(({"THAW_WORKER_START": "after_listen"}, None), id="after-listen"),
    ],
    indirect=True,
)
def test_the_worker_starts_once_the_server_listens_not_first_thing(
    started: PinnedServer,
) -> None:
    assert worker_starts(started.log) == [False], started.log[-3000:]
    health = started.get("/health").json()
    assert health["status"] == "ready"
    assert health["load_attempts"] == 1
    # Not even from the lifespan, before the socket accepts: its spawn would share the one CPU
    # with the server's last steps before listening.
    assert worker_spawned_at(health) >= health["cold_start"]["listening_after_s"], health


def worker_spawned_at(health: dict[str, Any]) -> float:
    """When the model worker was spawned, in `/health`'s seconds from the app's creation."""
    phase = next(p for p in health["phases"] if p["name"] == "worker_start")
    return float(health["load_started_s"] + phase["start_s"])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("started", [pytest.param(({}, None), id="auto-on-two")], indirect=True)
def test_with_two_cpus_the_worker_starts_first_thing(started: PinnedServer) -> None:
    assert worker_starts(started.log) == [True], started.log[-3000:]
    health = started.get("/health").json()
    assert health["load_attempts"] == 1
    assert worker_spawned_at(health) < 0 < health["cold_start"]["listening_after_s"], health
