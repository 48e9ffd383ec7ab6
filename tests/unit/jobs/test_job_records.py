"""Job records without a model: the local store's versions (its compare-and-write), and a
submission handed to another invocation (Lambda's asynchronous worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from runtime.jobs.runner import DispatchFailed, Jobs
from runtime.jobs.store import DISPATCHED, Job, JobStatus, LocalJobStore


def job(job_id: str = "a", **fields: Any) -> Job:
    return Job(
        id=job_id,
        request={"prompt": "p"},
        request_hash="h",
        created_at=1.0,
        expires_at=9.0,
        **fields,
    )


def test_the_local_store_writes_over_the_version_it_read_only(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path)
    first = store.create(job())
    assert first is not None
    assert store.create(job()) is None
    running = job(status=JobStatus.RUNNING)
    second = store.replace(running, first)
    assert second is not None
    assert second != first
    assert store.replace(job(status=JobStatus.CANCELED), first) is None  # stale
    assert store.read("a") == (running, second)
    assert store.replace(job("gone"), second) is None
    assert store.image_url("a", 60) is None  # the server streams local images


def jobs_dispatching(
    store: LocalJobStore, dispatched: list[str], *, fail: bool = False
) -> Jobs[Any]:
    def dispatch(job_id: str) -> None:
        if fail:
            raise ConnectionError("Lambda unreachable")
        dispatched.append(job_id)

    return Jobs(
        cast(Any, None),  # a dispatched job runs elsewhere: no service here
        store,
        ttl_s=100,
        start_within_s=120,
        dispatch=dispatch,
        wall=lambda: 1000.0,
    )


def submit(jobs: Jobs[Any], job_id: str) -> tuple[Job, bool]:
    """Submit the same request under `job_id`, as POST /jobs with an idempotency key would."""
    return asyncio.run(
        jobs.asubmit(
            None,
            {"prompt": "p"},
            batch=lambda m, b: b,
            key=None,
            encode=lambda v: (b"", {}),
            job_id=job_id,
        )
    )


def test_a_dispatched_job_is_recorded_for_its_worker_and_handed_over(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path)
    dispatched: list[str] = []
    jobs = jobs_dispatching(store, dispatched)
    accepted, created = submit(jobs, "j1")
    assert created
    assert dispatched == ["j1"]
    stored = store.get("j1")
    assert stored is not None
    assert (stored.status, stored.owner, stored.lease_until) == (
        JobStatus.QUEUED,
        DISPATCHED,
        1120.0,
    )
    assert accepted == stored
    again, created = submit(jobs, "j1")
    assert (again.id, created, dispatched) == ("j1", False, ["j1"])  # idempotent: once


def test_a_job_that_cannot_be_handed_over_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path)
    jobs = jobs_dispatching(store, [], fail=True)
    with pytest.raises(DispatchFailed) as raised:
        submit(jobs, "j2")
    assert raised.value.retry_after == 1
    assert store.get("j2") is None  # the client may submit again under the same id
