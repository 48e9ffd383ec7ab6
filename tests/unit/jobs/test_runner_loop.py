"""The job runner keeps the store's I/O off the event loop: a slow store (S3 far away, a throttled
bucket) must not stall the probes and requests the same loop serves while a job finishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from handler.routes import probes
from runtime.jobs.runner import Jobs
from runtime.jobs.store import Job, JobStatus, LocalJobStore
from runtime.lifecycle.service import Service
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.settings import Settings
from tests.support.fakes import CountingLoader, FakeModel

WRITE_S = 0.5
"""How long the slow store takes to write a final record."""


class SlowStore(LocalJobStore):
    """A local store whose writes of a final record take `WRITE_S` (a slow round trip)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.slow_writes = 0

    def _slow(self, job: Job) -> None:
        if job.status.final:
            self.slow_writes += 1
            time.sleep(WRITE_S)

    def update(self, job: Job) -> str:
        self._slow(job)
        return super().update(job)

    def replace(self, job: Job, version: str) -> str | None:
        self._slow(job)
        return super().replace(job, version)


def ready_service() -> Service[FakeModel]:
    loader = CountingLoader()
    slot = ModelSlot("t", loader, release=loader.release, retry=RetryPolicy(attempts=1))
    service = Service(slot, Settings(warm_wait_s=5.0, request_timeout_s=5.0))
    service.start()
    slot.get(timeout=5)
    return service


def probe_app(service: Service[Any]) -> FastAPI:
    """The real /livez route, served on the test's loop (what uvicorn's loop would serve)."""
    app = FastAPI()
    app.state.thaw = SimpleNamespace(service=service)
    app.include_router(probes.router)
    return app


PROBE_EVERY_S = 0.02


async def probe(client: httpx.AsyncClient, latencies: list[float], stop: asyncio.Event) -> None:
    """Ask /livez every `PROBE_EVERY_S`, as a platform's prober would, and record how long after
    it was due each answer came: a loop held by blocking I/O answers late, whenever it blocks."""
    while not stop.is_set():
        due = time.perf_counter() + PROBE_EVERY_S
        await asyncio.sleep(PROBE_EVERY_S)
        assert (await client.get("/livez")).status_code == 200
        latencies.append(time.perf_counter() - due)


def generate(model: FakeModel, items: list[str]) -> list[str]:
    return [f"{item}@{model.number}" for item in items]


def fail(model: FakeModel, items: list[str]) -> list[str]:
    raise RuntimeError("the model fell over")


@pytest.mark.parametrize(
    ("batch", "status"), [(generate, JobStatus.SUCCEEDED), (fail, JobStatus.FAILED)]
)
def test_finishing_a_job_with_a_slow_store_leaves_livez_answering(
    tmp_path: Path, batch: Callable[[FakeModel, list[str]], list[str]], status: JobStatus
) -> None:
    service = ready_service()
    store = SlowStore(tmp_path)
    jobs: Jobs[str] = Jobs(service, store, ttl_s=100)
    latencies: list[float] = []

    async def scenario() -> Job | None:
        transport = httpx.ASGITransport(app=probe_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            stop = asyncio.Event()
            prober = asyncio.ensure_future(probe(client, latencies, stop))
            await asyncio.sleep(0.1)
            job, created = await jobs.asubmit(
                "item",
                {"prompt": "p"},
                batch=batch,
                key=None,
                encode=lambda value: (b"png", {"value": value}),
            )
            assert created
            deadline = time.monotonic() + 10
            found = None
            while time.monotonic() < deadline and not (found and found.status.final):
                await asyncio.sleep(0.05)
                found = await asyncio.to_thread(store.get, job.id)
            await asyncio.sleep(0.1)  # and right after the final write
            stop.set()
            await prober
            return found

    try:
        final = asyncio.run(scenario())
    finally:
        asyncio.run(service.shutdown(grace_s=1))
    assert final is not None
    assert final.status is status
    if status is JobStatus.SUCCEEDED:
        assert final.result == {"value": "item@1", "bytes": 3}
    assert store.slow_writes >= 1  # the slow final write did happen
    assert max(latencies) < 0.1, f"/livez answered {max(latencies):.3f}s late: the loop waited"
    assert len(latencies) >= 10  # probed all the while the final write took
