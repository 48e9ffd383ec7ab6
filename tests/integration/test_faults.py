"""Honest under faults, from the outside: a real server, a real worker process, real signals.

Each test stands for what a platform or a user needs: a dead worker is noticed and replaced with
no request arriving; a failed load retries by itself; a crash costs only the request it was
running; a client cannot bypass the queue with its own request id; a worker never outlives its
server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from tests.support.procs import child_pids, running
from tests.support.server import ServerProcess

FAULTY = "tests.support.faulty_loader:load"
SLOW = {"prompt": "__slow__", "num_inference_steps": 1, "width": 64, "height": 64, "seed": 1}
QUICK = {"prompt": "a lighthouse", "num_inference_steps": 1, "width": 64, "height": 64, "seed": 2}


def workers(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    return [pid for pid in child_pids(server.proc.pid) if running(pid)]


def the_worker(server: ServerProcess) -> int:
    (pid,) = workers(server)
    return pid


def until(check: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def post_all(server: ServerProcess, bodies: list[dict[str, object]], **kwargs: object) -> list:
    """POST each body from its own thread at once; the responses in order."""
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answers[index] = client.post("/generate", json=bodies[index], **kwargs)  # type: ignore[arg-type]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(answer is not None for answer in answers), "a request was never answered"
    return answers


def start(tiny_model: Path, **env: str) -> ServerProcess:
    server = ServerProcess({"THAW_MODEL": str(tiny_model), **env}).start()
    server.wait_ready()
    return server


def test_a_shared_request_id_does_not_bypass_the_queue(tiny_model: Path) -> None:
    server = start(
        tiny_model,
        THAW_LOADER=FAULTY,
        THAW_TEST_SLOW_S="1.5",
        THAW_MAX_CONCURRENCY="1",
        THAW_QUEUE_SIZE="1",
    )
    try:
        answers = post_all(server, [SLOW] * 6, headers={"X-Request-Id": "same-id"})
        codes = sorted(answer.status_code for answer in answers)
        assert codes.count(200) <= 2, codes  # one running, one queued
        assert codes.count(429) >= 4, codes
        assert all(answer.headers["x-request-id"] == "same-id" for answer in answers)
        assert server.get("/health").json()["served"] == codes.count(200)
    finally:
        server.stop()


def test_a_killed_idle_worker_is_noticed_at_once_and_replaced_with_no_request(
    tiny_model: Path,
) -> None:
    server = start(tiny_model)
    try:
        dead = the_worker(server)
        os.kill(dead, signal.SIGKILL)
        # Noticed at once: not ready (or already ready on a new worker), with the reason.
        assert until(
            lambda: (
                server.get("/health").json()["status"] != "ready"
                or workers(server) not in ([], [dead])
            ),
            timeout=2,
        ), "a dead worker was still reported ready"
        assert "signal 9" in (server.get("/health").json()["last_error"] or "")
        # Healed with no request: readiness comes back by itself, on a fresh worker.
        assert until(lambda: server.get("/readyz").status_code == 200, timeout=90, every=0.2)
        assert the_worker(server) != dead
        health = server.get("/health").json()
        assert health["loads_completed"] == 2
        assert health["served"] == 0
    finally:
        server.stop()


def test_a_failed_load_retries_in_the_background_until_it_loads(
    tiny_model: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "mounted"
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.flaky_loader:load",
            "THAW_TEST_READY_FILE": str(marker),
            "THAW_LOAD_ATTEMPTS": "1",
            "THAW_LOAD_COOLDOWN_S": "0.5",
        }
    ).start()
    try:
        server.wait_live()
        assert until(lambda: server.get("/health").json()["status"] == "failed", timeout=60)
        marker.touch()  # the volume is mounted: no request arrives, the pod must heal itself
        assert until(lambda: server.get("/readyz").status_code == 200, timeout=90, every=0.2)
        assert server.get("/health").json()["load_attempts"] >= 2
    finally:
        server.stop()


def test_a_model_failed_for_too_long_fails_liveness_so_the_platform_restarts_it(
    tiny_model: Path,
) -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.flaky_loader:load",
            "THAW_LOAD_ATTEMPTS": "1",
            "THAW_LOAD_COOLDOWN_S": "0.5",
            "THAW_UNHEALTHY_AFTER_S": "3",
        }
    ).start()
    try:
        server.wait_live()
        assert until(lambda: server.get("/health").json()["status"] == "failed", timeout=60)
        assert server.get("/livez").status_code == 200  # not yet: failed for under 3 s
        assert until(lambda: server.get("/livez").status_code == 503, timeout=30, every=0.2)
        assert "failed" in server.get("/livez").text
    finally:
        server.stop()


def test_a_worker_crash_fails_only_the_running_request(tiny_model: Path) -> None:
    server = start(
        tiny_model,
        THAW_LOADER=FAULTY,
        THAW_TEST_SLOW_S="30",
        THAW_MAX_CONCURRENCY="1",
        THAW_QUEUE_SIZE="8",
        THAW_WARM_WAIT_S="120",
    )
    try:
        dead = the_worker(server)
        running: list[list[httpx.Response]] = []
        waiting: list[list[httpx.Response]] = []
        first = threading.Thread(target=lambda: running.append(post_all(server, [SLOW])))
        first.start()  # the slow one runs first, then three queue behind it
        assert until(lambda: server.get("/health").json()["inflight"] == 1, timeout=30)
        rest = threading.Thread(target=lambda: waiting.append(post_all(server, [QUICK] * 3)))
        rest.start()
        assert until(lambda: server.get("/health").json()["queued"] == 3, timeout=30)
        os.kill(dead, signal.SIGKILL)
        first.join(120)
        rest.join(120)
        (slow,), queued = running[0], waiting[0]
        assert slow.status_code == 503, slow.text
        assert "retry-after" in slow.headers
        assert [answer.status_code for answer in queued] == [200, 200, 200]
        assert the_worker(server) != dead
        assert server.get("/health").json()["loads_completed"] == 2
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["mid-generation", "idle", "stopped"])
def test_a_worker_never_outlives_its_server(tiny_model: Path, how: str) -> None:
    server = start(tiny_model, THAW_LOADER=FAULTY, THAW_TEST_SLOW_S="60")
    assert server.proc is not None
    try:
        worker = the_worker(server)
        if how == "mid-generation":

            def send() -> None:
                with (
                    httpx.Client(base_url=server.url, timeout=60) as client,
                    suppress(httpx.HTTPError),
                ):
                    client.post("/generate", json=SLOW)  # the server dies under it

            threading.Thread(target=send, daemon=True).start()
            assert until(lambda: server.get("/health").json()["inflight"] == 1, timeout=30)
        if how == "stopped":  # cannot read its socket: only the kernel can end it
            os.kill(worker, signal.SIGSTOP)
        server.proc.kill()  # SIGKILL: nothing in the server runs any more
        server.proc.wait(10)
    finally:
        server.stop()  # closes the test's client (and stops the server if a check failed)
    assert until(lambda: not running(worker), timeout=5), "the worker outlived its server"


def test_a_hung_worker_is_stopped_and_replaced(tiny_model: Path) -> None:
    """A worker that stops answering (SIGSTOP here; a wedged kernel in life) is not dead, so
    its socket stays open: a generation still running at twice its deadline means it hangs."""
    server = start(tiny_model, THAW_REQUEST_TIMEOUT_S="2", THAW_WARM_WAIT_S="120")
    try:
        hung = the_worker(server)
        os.kill(hung, signal.SIGSTOP)
        late = server.post("/generate", json=QUICK)
        assert late.status_code == 504
        assert until(lambda: server.get("/health").json()["models_lost"] == 1, timeout=30)
        assert "hung" in server.get("/health").json()["last_error"]
        assert until(lambda: server.get("/readyz").status_code == 200, timeout=90, every=0.2)
        assert server.post("/generate", json=QUICK).status_code == 200
        assert not running(hung)
        assert server.get("/health").json()["inflight"] == 0
    finally:
        server.stop()


def test_a_worker_that_keeps_dying_fails_liveness(tiny_model: Path) -> None:
    """Each reload succeeds, so the model is never 'failed'; a worker that dies at every
    generation still needs a fresh container (a broken GPU does not heal in-process)."""
    server = start(
        tiny_model, THAW_LOADER=FAULTY, THAW_UNHEALTHY_AFTER_S="300", THAW_WARM_WAIT_S="120"
    )
    try:
        for _ in range(5):
            assert server.get("/livez").status_code == 200
            server.wait_ready()
            lost = server.post("/generate", json={**QUICK, "prompt": "__abort__"})
            assert lost.status_code == 503
            assert lost.json()["error"]["code"] == "model_lost"
        assert server.get("/livez").status_code == 503
        assert "died 5 times" in server.get("/livez").json()["reason"]
    finally:
        server.stop()
