"""Two real thaw services (uvicorn on loopback, the tiny model) sharing one job store in S3
(moto's server over HTTP): a job submitted on one is polled, streamed, fetched and canceled on
the other; an idempotent PUT holds across both; two racing creates of one id start one job; a
replica killed mid-job leaves it `running` until its lease runs out, then `failed: lost`, and the
replica that records the loss sends the job's `completed` webhook."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_webhooks import SECRET, Receiver
from tests.support.s3_server import S3Server
from tests.support.server import ServerProcess

BUCKET = "thaw-jobs"
LEASE_S = 3.0
TTL_B_S = 6.0
QUICK = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 5}
LONG = {"prompt": "a long one", "num_inference_steps": 100, "width": 512, "height": 512, "seed": 1}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_prefixes = itertools.count()


def wait_job(server: ServerProcess, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = server.get(f"/jobs/{job_id}").json()
        if job.get("status") in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {statuses}: {job}")


def replica(tiny_model: Path, s3: S3Server, prefix: str, **env: str) -> ServerProcess:
    return ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_URL": f"s3://{BUCKET}/{prefix}",
            "THAW_JOB_LEASE_S": str(LEASE_S),
            "THAW_WEBHOOK_HOSTS": "127.0.0.1",
            "THAW_WEBHOOK_SECRET": SECRET,
            **s3.env(),
            **env,
        }
    )


@pytest.fixture(scope="module")
def pair(tiny_model: Path, s3: S3Server) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """Replicas A and B on one bucket and prefix. B keeps its jobs TTL_B_S seconds (the TTL is
    the submitter's), so the expiry test needs no process of its own."""
    s3.client().create_bucket(Bucket=BUCKET)
    prefix = f"jobs-{next(_prefixes)}"
    a = replica(tiny_model, s3, prefix)
    b = replica(tiny_model, s3, prefix, THAW_JOB_TTL_S=str(TTL_B_S))
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        yield a, b, prefix
    finally:
        a.stop()
        b.stop()


def fetch_image(server: ServerProcess, s3: S3Server, job_id: str) -> bytes:
    """`GET /jobs/{id}/image` answers a 307 to a presigned S3 URL; the client follows it."""
    answer = server.get(f"/jobs/{job_id}/image")
    assert answer.status_code == 307
    assert answer.headers["cache-control"] == "no-store"
    location = answer.headers["location"]
    assert location.startswith(f"{s3.endpoint}/{BUCKET}/")
    assert "X-Amz-Signature=" in location
    assert "X-Amz-Expires=" in location
    png = httpx.get(location).content  # S3 itself, not the thaw server
    assert png.startswith(PNG_MAGIC)
    return png


def test_a_job_submitted_on_one_replica_is_polled_and_fetched_on_the_other(
    pair: tuple[ServerProcess, ServerProcess, str], s3: S3Server
) -> None:
    a, b, _ = pair
    accepted = a.post("/jobs", json=QUICK)
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/jobs/{job_id}"
    done = wait_job(b, job_id, "succeeded")
    assert done["result"]["seed"] == 5
    assert done["links"]["image"] == f"/jobs/{job_id}/image"
    assert "owner" not in done
    assert "lease_until" not in done
    png = fetch_image(b, s3, job_id)
    assert png == fetch_image(a, s3, job_id)
    assert png == a.post("/generate", json=QUICK).content  # the same image a sync call gives


def test_progress_of_another_replicas_job_streams_from_the_store(
    pair: tuple[ServerProcess, ServerProcess, str],
) -> None:
    from httpx_sse import connect_sse

    a, b, _ = pair
    job = a.post("/jobs", json={**QUICK, "num_inference_steps": 30, "width": 128}).json()
    statuses, steps = [], []
    with (
        httpx.Client(base_url=b.url, timeout=60) as client,
        connect_sse(client, "GET", f"/jobs/{job['id']}/events") as source,
    ):
        for event in source.iter_sse():
            data = event.json()
            statuses.append(data["status"])
            if event.event == "progress":
                steps.append(data["progress"]["step"])
    assert statuses[-1] == "succeeded"
    assert steps == sorted(steps)  # what A wrote (at most once a second), in order


def test_an_idempotent_put_holds_across_replicas(
    pair: tuple[ServerProcess, ServerProcess, str],
) -> None:
    a, b, _ = pair
    first = a.client.put("/jobs/order-7", json=QUICK)
    again = b.client.put("/jobs/order-7", json=QUICK)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["created_at"] == first.json()["created_at"]
    other = b.client.put("/jobs/order-7", json={**QUICK, "prompt": "something else"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "job_conflict"
    wait_job(b, "order-7", "succeeded")


def test_racing_creates_of_one_id_on_two_replicas_start_one_job(
    pair: tuple[ServerProcess, ServerProcess, str],
) -> None:
    a, b, _ = pair

    def put(
        server: ServerProcess, job_id: str, barrier: threading.Barrier, codes: list[int]
    ) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            barrier.wait()
            codes.append(client.put(f"/jobs/{job_id}", json=QUICK).status_code)

    for round_ in range(4):
        job_id = f"race-{round_}"
        barrier = threading.Barrier(2)
        codes: list[int] = []
        threads = [threading.Thread(target=put, args=(s, job_id, barrier, codes)) for s in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(codes) == [200, 202], codes
        wait_job(a, job_id, "succeeded")
        assert accepted(a, job_id) + accepted(b, job_id) == 1  # one process ran it


def accepted(server: ServerProcess, job_id: str) -> int:
    """How many times the server's (JSON lines) log says it accepted the job."""
    count = 0
    for line in server.log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == "job accepted" and record.get("job_id") == job_id:
            count += 1
    return count


def test_canceling_on_one_replica_stops_the_job_running_on_the_other(
    pair: tuple[ServerProcess, ServerProcess, str],
) -> None:
    a, b, _ = pair
    job = a.post("/jobs", json=LONG).json()
    running = wait_job(b, job["id"], "running")
    assert b.client.delete(f"/jobs/{job['id']}").json()["status"] == "canceled"
    # A finds the record changed at its next write (a step's progress, at most a second apart)
    # and stops the generation: its place is free again.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        health = a.get("/health").json()
        if (health["inflight"], health["queued"]) == (0, 0):
            break
        time.sleep(0.1)
    assert (health["inflight"], health["queued"]) == (0, 0)
    final = wait_job(a, job["id"], "canceled")
    assert final["progress"]["step"] < 100
    assert final["progress"]["step"] >= running["progress"]["step"]
    assert b.get(f"/jobs/{job['id']}/image").status_code == 409


def test_an_expired_job_is_gone_from_every_replica_before_any_lifecycle_rule(
    pair: tuple[ServerProcess, ServerProcess, str], s3: S3Server
) -> None:
    a, b, prefix = pair
    job = b.post("/jobs", json=QUICK).json()  # B's TTL is TTL_B_S
    done = wait_job(a, job["id"], "succeeded")
    assert done["expires_at"] - done["finished_at"] == pytest.approx(TTL_B_S, abs=0.01)
    keys = _keys(s3, f"{prefix}/{job['id']}/")
    assert keys == {f"{prefix}/{job['id']}/job.json", f"{prefix}/{job['id']}/image.png"}
    time.sleep(max(0.0, done["expires_at"] - time.time()) + 0.2)
    assert a.get(f"/jobs/{job['id']}").status_code == 404
    assert b.get(f"/jobs/{job['id']}/image").status_code == 404
    assert _keys(s3, f"{prefix}/{job['id']}/") == set()  # deleted by the reader, not lifecycle


def _keys(s3: S3Server, prefix: str) -> set[str]:
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for item in listed.get("Contents", [])}


def test_a_replica_killed_mid_job_leaves_it_lost_after_its_lease_not_running_forever(
    tiny_model: Path, s3: S3Server, pair: tuple[ServerProcess, ServerProcess, str]
) -> None:
    with Receiver() as receiver:
        _killed_mid_job(tiny_model, s3, pair, receiver)


def _killed_mid_job(
    tiny_model: Path,
    s3: S3Server,
    pair: tuple[ServerProcess, ServerProcess, str],
    receiver: Receiver,
) -> None:
    _, b, prefix = pair
    doomed = replica(tiny_model, s3, prefix).start()
    try:
        doomed.wait_ready()
        hook = receiver.url("/ok/lost")
        job = doomed.post("/jobs", json={**LONG, "webhook": hook}).json()
        running = wait_job(b, job["id"], "running")
        while running["progress"]["step"] < 1:  # mid-job: steps done and written
            running = wait_job(b, job["id"], "running")
        assert doomed.proc is not None
        os.kill(doomed.proc.pid, signal.SIGKILL)  # no drain, no last write
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        # Within its lease the job may still be alive elsewhere: B reports it as it was.
        assert b.get(f"/jobs/{job['id']}").json()["status"] == "running"
        lost = wait_job(b, job["id"], "failed", timeout=LEASE_S + 10)
        assert time.monotonic() - killed_at <= LEASE_S + 5
        assert lost["error"]["code"] == "lost"
        assert "lost with the process that ran it" in lost["error"]["message"]
        assert lost["progress"]["step"] >= 1
        assert b.get(f"/jobs/{job['id']}/image").status_code == 409
        # Its holder died without a word: the replica that recorded the loss tells the client.
        [completed] = receiver.wait("/ok/lost", 1)
        event = completed.verified()
        assert event["type"] == "job.completed"
        assert (event["data"]["status"], event["data"]["error"]["code"]) == ("failed", "lost")
    finally:
        doomed.stop()  # its model worker went with it (PR_SET_PDEATHSIG, runtime.worker)


def test_a_replica_keeps_its_queued_jobs_leases_and_a_drain_finishes_them(
    tiny_model: Path, s3: S3Server, pair: tuple[ServerProcess, ServerProcess, str]
) -> None:
    _, b, prefix = pair
    c = replica(tiny_model, s3, prefix, THAW_MAX_STEPS="500").start()
    try:
        c.wait_ready()
        first = c.post("/jobs", json={**LONG, "num_inference_steps": 500}).json()
        wait_job(b, first["id"], "running")
        second = c.post("/jobs", json=QUICK).json()  # queued behind it: no progress to write
        held_since = time.monotonic()
        while time.monotonic() - held_since < 2 * LEASE_S:
            # Past its first lease and still queued, not lost: C renews it while it waits.
            assert b.get(f"/jobs/{second['id']}").json()["status"] == "queued"
            time.sleep(0.2)
        assert b.client.delete(f"/jobs/{first['id']}").status_code == 200  # cut it short
        c.signal(signal.SIGTERM)  # the drain waits for the queued job
        assert c.wait_exit(60) == 0
        assert b.get(f"/jobs/{second['id']}").json()["status"] == "succeeded"
        assert b.get(f"/jobs/{first['id']}").json()["status"] == "canceled"
    finally:
        c.stop()
