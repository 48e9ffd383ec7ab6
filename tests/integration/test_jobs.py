"""Asynchronous jobs over real HTTP: submit, poll, stream progress (read with httpx-sse, an
independent SSE client), fetch, cancel running and queued jobs, idempotent PUT, expiry, 429 at
submission, and a job that outlives neither its store nor an honest record of a crash."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.support.server import ServerProcess

QUICK = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 5}
LONG = {"prompt": "a long one", "num_inference_steps": 100, "width": 512, "height": 512, "seed": 1}


def wait_job(server: ServerProcess, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {statuses}: {job}")


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    jobs = tmp_path_factory.mktemp("jobs")
    process = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(jobs), "THAW_QUEUE_SIZE": "1"}
    ).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_job_is_accepted_at_once_and_its_image_is_the_one_generate_gives(
    server: ServerProcess,
) -> None:
    accepted = server.post("/jobs", json=QUICK)
    assert accepted.status_code == 202
    job = accepted.json()
    assert accepted.headers["location"] == f"/jobs/{job['id']}"
    assert int(accepted.headers["retry-after"]) >= 1
    assert job["status"] in ("queued", "running", "succeeded")
    done = wait_job(server, job["id"], "succeeded")
    assert done["result"]["seed"] == 5
    assert done["links"]["image"] == f"/jobs/{job['id']}/image"
    assert done["progress"]["step"] == done["progress"]["steps"] >= 2
    image = server.get(done["links"]["image"])
    assert image.headers["content-type"] == "image/png"
    assert image.content == server.post("/generate", json=QUICK).content


def test_prefer_respond_async_turns_generate_into_a_job(server: ServerProcess) -> None:
    accepted = server.post("/generate", json=QUICK, headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202
    assert wait_job(server, accepted.json()["id"], "succeeded")["status"] == "succeeded"


def test_progress_streams_as_server_sent_events_and_closing_the_stream_cancels_nothing(
    server: ServerProcess,
) -> None:
    job = server.post("/jobs", json={**QUICK, "num_inference_steps": 12}).json()
    steps, statuses, ended, heard = [], [], [], []
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        connect_sse(client, "GET", f"/jobs/{job['id']}/events") as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            data = event.json()
            statuses.append(data["status"])
            if event.event == "progress":
                steps.append(data["progress"]["step"])
                ended.append(data["progress"]["at"])  # when that step ended, in the worker
                heard.append(time.time())
    assert statuses[-1] == "succeeded"
    assert all(at is not None for at in ended)
    assert ended == sorted(ended)
    assert all(job["created_at"] <= at <= seen for at, seen in zip(ended, heard, strict=True))
    assert steps == sorted(steps)
    assert len(steps) >= 2
    assert steps[-1] >= 12  # every timestep (a scheduler may add warm-up steps)
    # A stream closed early leaves the job running.
    other = server.post("/jobs", json={**QUICK, "num_inference_steps": 8}).json()
    with (
        httpx.Client(base_url=server.url, timeout=60) as client,
        connect_sse(client, "GET", f"/jobs/{other['id']}/events") as source,
    ):
        next(iter(source.iter_sse()))
    assert wait_job(server, other["id"], "succeeded")["status"] == "succeeded"


def test_canceling_a_running_job_stops_it_at_its_next_step_and_frees_the_place(
    server: ServerProcess,
) -> None:
    job = server.post("/jobs", json=LONG).json()
    running = wait_job(server, job["id"], "running")
    deadline = time.monotonic() + 30
    while running["progress"]["step"] < 1 and time.monotonic() < deadline:
        running = server.get(f"/jobs/{job['id']}").json()
    assert running["progress"]["steps"] >= 100
    assert running["progress"]["eta_s"] is not None
    assert server.client.delete(f"/jobs/{job['id']}").status_code == 200
    canceled = wait_job(server, job["id"], "canceled", timeout=15)
    assert canceled["progress"]["step"] < 100
    health = server.get("/health").json()
    assert (health["inflight"], health["queued"]) == (0, 0)
    assert server.get(f"/jobs/{job['id']}/image").status_code == 409


def test_a_queued_job_leaves_the_queue_when_canceled_and_a_full_queue_is_a_429(
    server: ServerProcess,
) -> None:
    running = server.post("/jobs", json=LONG).json()
    wait_job(server, running["id"], "running")
    queued = server.post("/jobs", json=QUICK).json()
    refused = server.post("/jobs", json=QUICK)  # one running, one queued: no place left
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert server.post(f"/jobs/{queued['id']}/cancel").status_code == 200
    assert wait_job(server, queued["id"], "canceled", timeout=5)["started_at"] is None
    server.client.delete(f"/jobs/{running['id']}")
    wait_job(server, running["id"], "canceled", timeout=15)


def test_put_with_the_clients_id_is_idempotent(server: ServerProcess) -> None:
    first = server.client.put("/jobs/order-42", json=QUICK)
    again = server.client.put("/jobs/order-42", json=QUICK)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == "order-42"
    assert again.json()["created_at"] == first.json()["created_at"]
    other = server.client.put("/jobs/order-42", json={**QUICK, "prompt": "something else"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "job_conflict"
    assert server.client.put("/jobs/bad id!", json=QUICK).status_code == 422
    assert server.get("/jobs/never-submitted").status_code == 404
    wait_job(server, "order-42", "succeeded")


def test_an_expired_job_is_gone(tiny_model: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(tmp_path), "THAW_JOB_TTL_S": "1"}
    ).start()
    try:
        server.wait_ready()
        job = server.post("/jobs", json=QUICK).json()
        done = wait_job(server, job["id"], "succeeded")
        # Kept THAW_JOB_TTL_S from its end, not its submission: a job that ran longer than the
        # TTL keeps its image for the TTL.
        assert done["expires_at"] - done["finished_at"] == pytest.approx(1, abs=0.01)
        time.sleep(1.2)
        assert server.get(f"/jobs/{job['id']}").status_code == 404
        assert not (tmp_path / job["id"]).exists()
    finally:
        server.stop()


def test_a_drain_finishes_accepted_jobs_and_a_crash_is_recorded_not_left_running(
    tiny_model: Path, tmp_path: Path
) -> None:
    env = {"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(tmp_path)}
    server = ServerProcess(env).start()
    server.wait_ready()
    finished = server.post("/jobs", json={**QUICK, "num_inference_steps": 20}).json()
    server.signal(signal.SIGTERM)  # the drain waits for the accepted job
    assert server.wait_exit(60) == 0
    server.stop()  # closes the test's client
    crashed = ServerProcess(env).start()
    try:
        crashed.wait_ready()
        assert crashed.get(f"/jobs/{finished['id']}").json()["status"] == "succeeded"
        assert crashed.get(f"/jobs/{finished['id']}/image").status_code == 200
        lost = crashed.post("/jobs", json=LONG).json()
        wait_job(crashed, lost["id"], "running")
        assert crashed.proc is not None
        os.kill(crashed.proc.pid, signal.SIGKILL)
        crashed.proc.wait(10)
    finally:
        crashed.stop()
    again = ServerProcess(env).start()
    try:
        again.wait_ready()
        record = again.get(f"/jobs/{lost['id']}").json()
        assert record["status"] == "failed"
        assert record["error"]["code"] == "lost"
    finally:
        again.stop()
