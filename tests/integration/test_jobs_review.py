"""Outside review of issue 17's jobs over real HTTP, as a client and a platform would try them:
racing PUTs of one id, ids and bodies a router or a file system may take for something else,
cancels that race completion, Server-Sent Events on finished jobs and from many or idle
clients, a jobs folder that another version left behind (or that cannot be written), expired
jobs nobody reads again, a drain with jobs running and queued, and the model worker killed
under a job."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.support.procs import child_pids
from tests.support.server import ServerProcess

QUICK = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 5}
LONG = {"prompt": "a long one", "num_inference_steps": 100, "width": 512, "height": 512, "seed": 1}


def wait_job(server: ServerProcess, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = server.get(f"/jobs/{job_id}").json()
        if job.get("status") in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {statuses}: {job}")


def raw(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> tuple:
    """A request with its path sent as written (httpx would normalize `..` and encode)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def one_error_shape(status: int, body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message", "retry_after"}, (status, body)
    return error


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_DIR": str(tmp_path_factory.mktemp("jobs")),
            "THAW_QUEUE_SIZE": "4",
        }
    ).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


# -- submissions that race, ids and bodies ------------------------------------------------------


def test_concurrent_puts_of_one_id_make_one_job(server: ServerProcess) -> None:
    barrier = threading.Barrier(10)

    def put(body: dict) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            return client.put("/jobs/race-different", json=body)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(put, [{**QUICK, "prompt": f"p{n}"} for n in range(10)]))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] + [409] * 9, codes
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "job_conflict"
    winner = next(a.json() for a in answers if a.status_code == 202)
    stored = wait_job(server, "race-different", "succeeded")
    assert stored["created_at"] == winner["created_at"]

    barrier = threading.Barrier(10)

    def same(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            return client.put("/jobs/race-same", json=QUICK)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(same, range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 9 + [202]
    assert len({a.json()["created_at"] for a in answers}) == 1
    wait_job(server, "race-same", "succeeded")


def test_a_put_retried_without_a_seed_is_the_same_job(server: ServerProcess) -> None:
    # A client retrying a PUT whose answer it lost sends the same body: that must not be a 409
    # because the server drew another seed for the omitted one.
    body = {key: value for key, value in QUICK.items() if key != "seed"}
    first = server.client.put("/jobs/no-seed-given", json=body)
    again = server.client.put("/jobs/no-seed-given", json=body)
    assert first.status_code == 202
    assert again.status_code == 200, again.text
    assert again.json()["created_at"] == first.json()["created_at"]
    done = wait_job(server, "no-seed-given", "succeeded")
    other = server.client.put("/jobs/no-seed-given-2", json=body)
    assert other.status_code == 202
    assert (
        wait_job(server, "no-seed-given-2", "succeeded")["result"]["seed"] != done["result"]["seed"]
    )  # another id, another drawn seed
    assert server.client.put("/jobs/no-seed-given", json={**body, "seed": 7}).status_code == 409


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/..",
        "/jobs/%2e%2e",
        "/jobs/..%2F..%2Fetc",
        "/jobs/a%2Fb",
        "/jobs/%00",
        "/jobs/.hidden",
        "/jobs/lost+found",
        "/jobs/%C3%A9t%C3%A9",
        "/jobs/" + "a" * 200,
        "/jobs/%2e%2e/image",
        "/jobs/%2e%2e/events",
    ],
)
def test_odd_ids_are_no_job_in_the_one_error_shape(server: ServerProcess, path: str) -> None:
    for method in ("GET", "DELETE"):
        status, body = raw(server, method, path)
        assert status in (404, 405), (method, path, status, body)
        one_error_shape(status, body)
    status, body = raw(server, "PUT", path, json.dumps(QUICK).encode())
    assert status in (404, 405, 422), (path, status, body)
    one_error_shape(status, body)


def test_ids_that_differ_in_case_are_two_jobs(server: ServerProcess) -> None:
    assert server.client.put("/jobs/Case-Id", json=QUICK).status_code == 202
    assert server.get("/jobs/case-id").status_code == 404
    other = server.client.put("/jobs/case-id", json={**QUICK, "prompt": "another"})
    assert other.status_code == 202
    assert wait_job(server, "Case-Id", "succeeded")["request"]["prompt"] == "a lighthouse"
    assert wait_job(server, "case-id", "succeeded")["request"]["prompt"] == "another"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{" * 100_000, 413),  # past THAW_MAX_BODY_BYTES (64 kB)
        (json.dumps({**QUICK, "prompt": "x" * 60_000}).encode(), 422),  # a prompt too long
        (b"[" * 10_000 + b"]" * 10_000, 400),  # nesting too deep to parse, under the limit
        (b"not json", 422),
        (b"[]", 422),
        (b"null", 422),
        (json.dumps({**QUICK, "owner": "me"}).encode(), 422),  # an internal field
    ],
)
def test_bad_bodies_are_refused_at_submission(
    server: ServerProcess, body: bytes, status: int
) -> None:
    for method, path in (("POST", "/jobs"), ("PUT", "/jobs/bad-body")):
        got, answer = raw(server, method, path, body)
        assert got == status, (method, got, answer[:300])
        one_error_shape(got, answer)
    assert server.get("/jobs/bad-body").status_code == 404


# -- cancel ---------------------------------------------------------------------------------------


def test_deleting_a_succeeded_job_keeps_its_result_and_cancel_twice_is_calm(
    server: ServerProcess,
) -> None:
    done = server.post("/jobs", json=QUICK).json()
    wait_job(server, done["id"], "succeeded")
    for _ in range(2):
        answer = server.client.delete(f"/jobs/{done['id']}")
        assert answer.status_code == 200
        assert answer.json()["status"] == "succeeded"
    assert server.get(f"/jobs/{done['id']}/image").status_code == 200

    job = server.post("/jobs", json=LONG).json()
    wait_job(server, job["id"], "running")
    first = server.client.delete(f"/jobs/{job['id']}")
    second = server.post(f"/jobs/{job['id']}/cancel")
    assert (first.status_code, second.status_code) == (200, 200)
    canceled = wait_job(server, job["id"], "canceled", timeout=20)
    assert "image" not in canceled["links"]
    assert server.client.delete(f"/jobs/{job['id']}").json()["status"] == "canceled"
    health = server.get("/health").json()
    assert (health["inflight"], health["queued"]) == (0, 0)


def test_a_cancel_racing_completion_leaves_one_consistent_outcome(server: ServerProcess) -> None:
    for round_ in range(6):
        job = server.post("/jobs", json={**QUICK, "seed": 100 + round_}).json()
        time.sleep(0.02 * round_)  # from before it starts to about when it ends
        server.client.delete(f"/jobs/{job['id']}")
        final = wait_job(server, job["id"], "succeeded", "canceled", timeout=30)
        image = server.get(f"/jobs/{job['id']}/image")
        if final["status"] == "succeeded":
            assert image.status_code == 200
            assert final["links"]["image"]
        else:
            assert image.status_code == 409
            assert "image" not in final["links"]
            assert final["result"] == {}
    health = server.get("/health").json()
    assert (health["inflight"], health["queued"]) == (0, 0)


# -- Server-Sent Events -------------------------------------------------------------------------


def test_a_stream_of_a_finished_job_says_so_once_and_ends(server: ServerProcess) -> None:
    job = server.post("/jobs", json=QUICK).json()
    wait_job(server, job["id"], "succeeded")
    started = time.monotonic()
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        connect_sse(client, "GET", f"/jobs/{job['id']}/events") as source,
    ):
        events = list(source.iter_sse())
    assert [(e.event, e.json()["status"]) for e in events] == [("status", "succeeded")]
    assert time.monotonic() - started < 5
    missing = server.get("/jobs/never-was/events")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_many_streams_and_clients_that_never_read_do_not_stall_the_server(
    server: ServerProcess,
) -> None:
    job = server.post("/jobs", json={**QUICK, "num_inference_steps": 30}).json()
    idle = []
    for _ in range(20):  # ask for the stream, never read a byte of it
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(f"GET /jobs/{job['id']}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        idle.append(sock)

    def follow(_: int) -> str:
        with (
            httpx.Client(base_url=server.url, timeout=60) as client,
            connect_sse(client, "GET", f"/jobs/{job['id']}/events") as source,
        ):
            return [event.json()["status"] for event in source.iter_sse()][-1]

    try:
        with ThreadPoolExecutor(20) as pool:
            finals = pool.map(follow, range(20))
            probe = time.monotonic()
            assert server.get("/livez", timeout=5).status_code == 200
            assert time.monotonic() - probe < 2
            assert list(finals) == ["succeeded"] * 20
    finally:
        for sock in idle:
            sock.close()
    # The idle streams' connections are gone with their job: a new job still runs.
    assert wait_job(server, server.post("/jobs", json=QUICK).json()["id"], "succeeded")


# -- the model worker killed under a job (last: the module's server heals from it) ---------------


def test_a_job_whose_model_worker_is_killed_fails_clearly_and_the_server_heals(
    server: ServerProcess,
) -> None:
    assert server.proc is not None
    job = server.post("/jobs", json=LONG).json()
    running = wait_job(server, job["id"], "running")
    deadline = time.monotonic() + 30
    while running["progress"]["step"] < 1 and time.monotonic() < deadline:
        running = server.get(f"/jobs/{job['id']}").json()
    (worker,) = child_pids(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    failed = wait_job(server, job["id"], "failed", timeout=30)
    assert failed["error"]["code"] == "model_lost"
    assert failed["finished_at"] is not None
    again = server.post("/jobs", json=QUICK).json()
    assert wait_job(server, again["id"], "succeeded", timeout=120)["status"] == "succeeded"


# -- the jobs folder: left by another version, unwritable, expired jobs ----------------------------


def test_a_foreign_or_corrupt_jobs_folder_neither_stops_the_start_nor_breaks_a_read(
    tiny_model: Path, tmp_path: Path
) -> None:
    def put(name: str, raw_record: bytes | None) -> None:
        (tmp_path / name).mkdir()
        if raw_record is not None:
            (tmp_path / name / "job.json").write_bytes(raw_record)

    record = {
        "id": "newer",
        "request": dict(QUICK),
        "request_hash": "x",
        "created_at": time.time(),
        "expires_at": time.time() + 3600,
        "status": "running",
        "tenant": "acme",  # a field of another version
    }
    put("newer", json.dumps(record).encode())
    put("garbage", b"\x00{not json")
    put("a-list", b"[1]")
    put("empty", None)  # the process died between the folder and its record
    put("lost+found", None)
    server = ServerProcess(
        {"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(tmp_path), "THAW_JOB_TTL_S": "8"}
    ).start()
    try:
        server.wait_ready()
        # Recorded lost at the start, kept THAW_JOB_TTL_S from then.
        newer = server.get("/jobs/newer").json()
        assert (newer["status"], newer["error"]["code"]) == ("failed", "lost")
        assert "tenant" not in newer
        for name in ("garbage", "a-list", "empty"):
            answer = server.get(f"/jobs/{name}")
            assert answer.status_code == 404, (name, answer.text)
            assert server.client.delete(f"/jobs/{name}").status_code == 404
        assert server.post("/generate", json=QUICK).status_code == 200
        # Expired jobs go, whether or not anyone reads them again: each job's folder is
        # written once here and never read by a client after it succeeded.
        ids = [server.post("/jobs", json={**QUICK, "seed": n}).json()["id"] for n in range(2)]
        deadline = time.monotonic() + 40  # done + the TTL + a sweep (every TTL/2)
        while time.monotonic() < deadline and any((tmp_path / i).exists() for i in ids):
            time.sleep(0.2)
        assert not any((tmp_path / i).exists() for i in ids), "expired jobs never deleted"
        assert server.proc is not None
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert "Traceback" not in server.log


def immutable(path: Path) -> bool:
    """Make `path` unwritable even for root (ext4's immutable flag); False where impossible."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("how", ["cannot-be-created", "read-only"])
def test_an_unwritable_jobs_folder_leaves_sync_serving_and_says_why_jobs_cannot_be_taken(
    tiny_model: Path, tmp_path: Path, how: str
) -> None:
    if how == "cannot-be-created":
        (tmp_path / "a-file").write_text("")
        jobs = tmp_path / "a-file" / "jobs"
    else:
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        if not immutable(jobs):
            pytest.skip("chattr +i is not possible here")
    server = ServerProcess({"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(jobs)}).start()
    try:
        server.wait_ready()
        assert server.post("/generate", json=QUICK).status_code == 200
        for submit in (
            lambda: server.post("/jobs", json=QUICK),
            lambda: server.client.put("/jobs/mine", json=QUICK),
            lambda: server.post("/generate", json=QUICK, headers={"Prefer": "respond-async"}),
        ):
            answer = submit()
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "store_unavailable"
            assert str(jobs) in error["message"]
        assert server.get("/jobs/mine").status_code == 404
        health = server.get("/health").json()
        assert (health["inflight"], health["queued"]) == (0, 0)  # no place kept by a refusal
        assert server.post("/generate", json=QUICK).status_code == 200
    finally:
        server.stop()
        subprocess.run(["chattr", "-i", str(jobs)], capture_output=True, check=False)


def test_a_second_server_on_the_jobs_folder_leaves_the_first_ones_jobs_running(
    tiny_model: Path, tmp_path: Path
) -> None:
    # A rolling update (maxSurge: the new pod starts while the old one still serves or drains)
    # with the jobs folder on a volume both mount: the new process's start must not record the
    # old one's live jobs lost (which also stops them there at their next write).
    env = {"THAW_MODEL": str(tiny_model), "THAW_JOBS_DIR": str(tmp_path)}
    old = ServerProcess(env).start()
    new = ServerProcess(env)
    try:
        old.wait_ready()
        job = old.post("/jobs", json=LONG).json()
        wait_job(old, job["id"], "running")
        new.start().wait_ready()
        time.sleep(1.5)  # a progress write or two of the old process's
        seen = old.get(f"/jobs/{job['id']}").json()
        assert seen["status"] == "running", seen.get("error")
        assert new.get(f"/jobs/{job['id']}").json()["status"] == "running"
        old.client.delete(f"/jobs/{job['id']}")
        wait_job(old, job["id"], "canceled", timeout=20)
    finally:
        new.stop()
        old.stop()


# -- a job store that does not answer --------------------------------------------------------------


def test_a_submission_to_a_store_that_does_not_answer_leaves_the_loop_serving(
    tiny_model: Path,
) -> None:
    # An S3 endpoint that accepts connections and never answers (a stalled network path):
    # botocore waits for it up to 30 s per attempt, 4 attempts. The server must go on
    # answering its probes and other requests meanwhile.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(hole.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_URL": "s3://jobs/review",
            "THAW_S3_ENDPOINT_URL": f"http://127.0.0.1:{hole.getsockname()[1]}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    ).start()
    try:
        server.wait_live()

        def submit() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.url}/jobs", json=QUICK, timeout=150)

        threading.Thread(target=submit, daemon=True).start()
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:  # the PUT reached the endpoint
            time.sleep(0.05)
        assert held
        probe = time.monotonic()
        assert server.get("/livez", timeout=5).status_code == 200
        assert time.monotonic() - probe < 1.0
    finally:
        assert server.proc is not None
        server.proc.kill()  # the stalled PUT would hold a drain for minutes
        server.proc.wait(10)
        server.stop()
        hole.close()
        for sock in held:
            sock.close()


# -- a drain with jobs running and queued -------------------------------------------------------


def test_a_drain_cut_short_leaves_every_job_final_with_a_reason(
    tiny_model: Path, tmp_path: Path
) -> None:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_DIR": str(tmp_path),
            "THAW_DRAIN_TIMEOUT_S": "3",
        }
    ).start()
    try:
        server.wait_ready()
        running = server.post("/jobs", json=LONG).json()
        wait_job(server, running["id"], "running")
        queued = server.post("/jobs", json={**LONG, "seed": 2}).json()
        assert server.get(f"/jobs/{queued['id']}").json()["status"] == "queued"
        stopped_at = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait_exit(60)
        took = time.monotonic() - stopped_at
    finally:
        server.stop()
    assert took < 30, f"the drain took {took:.0f}s past a 3 s deadline"
    for job in (running, queued):
        record = json.loads((tmp_path / job["id"] / "job.json").read_text())
        assert record["status"] in ("failed", "canceled"), record
        assert record["finished_at"] is not None
        if record["status"] == "failed":
            assert record["error"]["code"]
            assert record["error"]["message"]
