"""The S3 job store and the runner's reading side against a real S3 API (moto's server over
HTTP): conditional create and replace, races between writers, expiry before any lifecycle rule
runs, and a job past its lease recorded lost exactly once."""

from __future__ import annotations

import itertools
import threading
from typing import Any, cast

import httpx
import pytest

from runtime.jobs.runner import Jobs
from runtime.jobs.s3store import S3JobStore, StoreUnavailable
from runtime.jobs.store import DISPATCHED, Job, JobStatus
from tests.support.s3_server import S3Server

BUCKET = "job-store"
_prefixes = itertools.count()


class Wall:
    """A wall clock the test moves."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    s3.client().create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def store(s3: S3Server, bucket: str) -> S3JobStore:
    return S3JobStore(bucket, f"jobs-{next(_prefixes)}", client=s3.client())


def job(job_id: str, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "request": {"prompt": "a lighthouse"},
        "request_hash": "h",
        "created_at": 1_000_000.0,
        "expires_at": 1_000_100.0,
        **fields,
    }
    return Job(id=job_id, **values)


def reader(store: S3JobStore, wall: Wall) -> Jobs[Any]:
    """A runner that only reads and settles (no service: it runs nothing)."""
    return Jobs(cast(Any, None), store, ttl_s=100, lease_s=10, owner="reader", wall=wall)


def test_create_is_exclusive_and_replace_writes_only_over_the_version_it_read(
    store: S3JobStore,
) -> None:
    first = store.create(job("a"))
    assert first is not None
    assert store.create(job("a", request={"prompt": "another"})) is None
    record, version = store.read("a") or (None, "")
    assert record is not None
    assert version == first
    assert record.request == {"prompt": "a lighthouse"}
    record.status = JobStatus.RUNNING
    newer = store.replace(record, version)
    assert newer is not None
    record.step = 3
    assert store.replace(record, version) is None  # stale: someone (we) wrote since
    assert store.replace(job("never-created"), version) is None
    assert store.get("a") == job("a", status=JobStatus.RUNNING)
    assert store.read("missing") is None


def test_of_many_concurrent_creators_of_one_id_exactly_one_wins(
    s3: S3Server, store: S3JobStore
) -> None:
    def create(index: int, job_id: str, barrier: threading.Barrier, wins: list[int]) -> None:
        mine = S3JobStore(store.bucket, store.prefix, client=s3.client())
        barrier.wait()
        if mine.create(job(job_id, request={"writer": index})) is not None:
            wins.append(index)

    for round_ in range(5):
        barrier = threading.Barrier(8)
        wins: list[int] = []
        threads = [
            threading.Thread(target=create, args=(i, f"race-{round_}", barrier, wins))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1
        assert store.get(f"race-{round_}") == job(f"race-{round_}", request={"writer": wins[0]})


def test_images_are_objects_a_presigned_url_fetches_and_delete_removes_both(
    store: S3JobStore, s3: S3Server
) -> None:
    store.create(job("img"))
    store.put_image("img", b"\x89PNG fake")
    assert store.image("img") == b"\x89PNG fake"
    url = store.image_url("img", 60)
    assert url is not None
    assert httpx.get(url).content == b"\x89PNG fake"
    assert store.ids() == ["img"]
    store.delete("img")
    assert store.read("img") is None
    assert store.image("img") is None
    assert store.ids() == []


def test_an_unreachable_store_is_a_retryable_error_not_a_crash() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",  # nothing listens there
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StoreUnavailable) as raised:
        S3JobStore("b", "p", client=client).read("job")
    assert raised.value.retry_after == 1
    assert "s3://b/p/job/job.json" in str(raised.value)


def test_an_expired_job_is_gone_before_any_lifecycle_rule_deletes_it(
    store: S3JobStore,
) -> None:
    wall = Wall()
    store.create(job("old", status=JobStatus.SUCCEEDED, expires_at=wall.now + 5))
    store.put_image("old", b"png")
    jobs = reader(store, wall)
    assert jobs.get("old") is not None
    wall.now += 5
    assert jobs.get("old") is None  # expired: gone from the API at once ...
    assert store.read("old") is None  # ... and its objects deleted on the way
    assert store.image("old") is None


def test_a_job_past_its_lease_is_recorded_lost_once_whoever_reads_it(
    s3: S3Server, store: S3JobStore
) -> None:
    wall = Wall()
    held = job(
        "held", status=JobStatus.RUNNING, owner="host:1:abc", lease_until=wall.now + 10, step=4
    )
    store.create(held)
    readers = [
        reader(S3JobStore(store.bucket, store.prefix, client=s3.client()), wall) for _ in range(6)
    ]
    assert readers[0].get("held") == held  # within its lease: the holder may be alive
    wall.now += 10
    barrier = threading.Barrier(len(readers))
    seen: list[Job | None] = []

    def read(jobs: Jobs[Any]) -> None:
        barrier.wait()
        seen.append(jobs.get("held"))

    threads = [threading.Thread(target=read, args=(jobs,)) for jobs in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every reader sees the same settled record: one of them wrote it, the others read it.
    assert len({(j.status, j.finished_at) for j in seen if j is not None}) == 1
    settled = store.get("held")
    assert settled is not None
    assert settled.status is JobStatus.FAILED
    assert settled.error == {
        "code": "lost",
        "message": "lost with the process that ran it (it stopped renewing its lease)",
    }
    assert settled.step == 4  # how far it got stays on the record
    assert settled.lease_until is None


def test_a_dispatched_job_nobody_claimed_in_time_is_recorded_never_started(
    store: S3JobStore,
) -> None:
    wall = Wall()
    store.create(
        job("waiting", owner=DISPATCHED, lease_until=wall.now + 120, expires_at=wall.now + 999)
    )
    jobs = reader(store, wall)
    assert jobs.require("waiting").status is JobStatus.QUEUED
    wall.now += 121
    lost = jobs.require("waiting")
    assert lost.status is JobStatus.FAILED
    assert lost.error is not None
    assert lost.error["message"].startswith("never started")


def test_canceling_another_processs_job_records_it_canceled_in_the_store(
    store: S3JobStore,
) -> None:
    wall = Wall()
    store.create(job("theirs", status=JobStatus.RUNNING, owner="other", lease_until=wall.now + 10))
    found = store.read("theirs")
    assert found is not None
    canceled = reader(store, wall).cancel("theirs")
    assert canceled.status is JobStatus.CANCELED
    assert canceled.finished_at == wall.now
    # The holder's next write, over the version it last wrote, now loses: it stops the work.
    assert store.replace(found[0], found[1]) is None
