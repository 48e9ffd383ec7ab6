"""Outside review of issue 17's jobs, without a model: what the local store meets on a real
volume (a record another version wrote, one that is not JSON, `lost+found`, a folder left by a
crash between its creation and its record), a store that cannot be written, a cancel that lands
just as a queued job's work is handed to its thread, and webhook addresses of cloud metadata
services that are not link-local."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import pytest

from runtime.errors import Canceled, Overloaded, ThawError
from runtime.jobs.destinations import AllowList, Reach, WebhookRefused, parse, refusal
from runtime.jobs.runner import Jobs
from runtime.jobs.store import Job, JobStatus, LocalJobStore, StoreUnavailable
from runtime.jobs.webhooks import WebhookSender
from runtime.settings import WebhookSettings
from runtime.work import Control, Work, running


def record(job_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "request": {"prompt": "p"},
        "request_hash": "h",
        "created_at": 1.0,
        "expires_at": 9e9,
        "status": "running",
        **fields,
    }


def write(root: Path, name: str, raw: bytes | None) -> None:
    (root / name).mkdir()
    if raw is not None:
        (root / name / "job.json").write_bytes(raw)


def messy_root(root: Path) -> None:
    """A jobs folder as a volume and other versions leave it."""
    write(root, "newer", json.dumps(record("newer", tenant="acme")).encode())  # a future field
    write(root, "garbage", b"\x00{not json")
    write(root, "listed", b"[1, 2, 3]")  # JSON, not a record
    write(root, "partial", json.dumps({"id": "partial"}).encode())  # fields missing
    write(root, "empty", None)  # created, then the process died before the record
    write(root, "lost+found", None)  # every ext4 volume's root has one
    (root / "README").write_text("not a job")


def test_a_foreign_or_corrupt_record_does_not_stop_the_start(tmp_path: Path) -> None:
    messy_root(tmp_path)
    store = LocalJobStore(tmp_path)
    Jobs(cast(Any, None), store, ttl_s=100).recover()  # reads every record
    newer = store.get("newer")
    assert newer is not None  # a field from another version is ignored, not fatal
    assert newer.status is JobStatus.FAILED  # and its pending job is recorded lost
    assert newer.error is not None
    assert newer.error["code"] == "lost"
    for name in ("garbage", "listed", "partial", "empty"):
        assert store.get(name) is None  # unreadable: no such job, not a crash


def test_the_sweep_passes_over_what_it_cannot_read(tmp_path: Path) -> None:
    messy_root(tmp_path)
    store = LocalJobStore(tmp_path)
    Jobs(cast(Any, None), store, ttl_s=100, wall=lambda: 1e10).recover()  # "newer": lost
    later = Jobs(cast(Any, None), store, ttl_s=100, wall=lambda: 1e10 + 101)
    assert later.sweep() >= 1  # kept the TTL from when it was recorded lost, then gone
    assert not (tmp_path / "newer").exists()
    assert (tmp_path / "lost+found").exists()


def test_a_record_that_could_not_be_written_leaves_its_id_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalJobStore(tmp_path)
    job = Job.from_json(record("order-1", status="queued"))

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(LocalJobStore, "_write", staticmethod(disk_full))
        with pytest.raises(StoreUnavailable, match="No space left"):
            store.create(job)
    assert store.create(job) is not None  # the client's retry under its id is not wedged


def test_a_jobs_folder_that_cannot_be_written_is_a_clear_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = LocalJobStore(blocker / "jobs")  # no folder can be made there: no crash at start
    job = Job.from_json(record("j", status="queued"))
    with pytest.raises(StoreUnavailable):
        store.create(job)
    assert store.get("j") is None
    assert store.ids() == []


class HandedOver:
    """A service whose work, once its turn comes, is handed to a thread that begins it a moment
    later; the awaiting task being canceled does not stop that thread (as `Service` does)."""

    def __init__(self) -> None:
        self.handed = threading.Event()
        self.go = threading.Event()
        self.steps_done = 0
        self.released = 0
        self.gate = self

    def reserve(self, request_id: str | None = None) -> object:
        return object()

    def release(self, ticket: object) -> None:
        self.released += 1

    async def run_item(self, item: Any, *, control: Control, **_: Any) -> Any:
        outcome: Future[None] = Future()

        def work() -> None:
            self.handed.set()
            self.go.wait(5)
            try:
                with running(Work([control])) as current:
                    current.begin()
                    for step in range(1, 51):
                        time.sleep(0.01)
                        self.steps_done = step
                        current.step(step, 50)
                outcome.set_result(None)
            except Canceled as exc:
                outcome.set_exception(exc)

        threading.Thread(target=work, daemon=True).start()
        waiter = asyncio.wrap_future(outcome)
        waiter.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.wait({waiter})  # a canceled caller leaves the thread's work running
        return waiter.result()


def test_a_cancel_as_a_queued_job_is_handed_to_its_thread_stops_that_work(
    tmp_path: Path,
) -> None:
    service = HandedOver()

    async def scenario() -> None:
        jobs = Jobs(cast(Any, service), LocalJobStore(tmp_path), ttl_s=100)
        _job, _ = await jobs.asubmit(
            None,
            {"prompt": "p"},
            batch=lambda m, b: b,
            key=None,
            encode=lambda v: (b"png", {}),
            job_id="j",
        )
        await asyncio.to_thread(service.handed.wait, 5)
        assert jobs.get("j").status is JobStatus.QUEUED  # type: ignore[union-attr]
        jobs.cancel("j")  # the client's DELETE, as the thread takes the work
        service.go.set()
        for _ in range(300):
            await asyncio.sleep(0.01)
        assert jobs.get("j").status is JobStatus.CANCELED  # type: ignore[union-attr]

    asyncio.run(scenario())
    # Recorded canceled, the work must not go on holding the model for all its steps.
    assert service.steps_done <= 2, f"canceled job ran {service.steps_done} of 50 steps"


@pytest.mark.parametrize("address", ["fd00:ec2::254", "100.100.100.200"])
def test_metadata_services_outside_link_local_are_never_called(address: str) -> None:
    # AWS's IPv6 instance metadata endpoint (Nitro) and Alibaba Cloud's: a listed name (or a
    # listed network) must not reach them any more than 169.254.169.254.
    assert refusal(address, Reach.LISTED) is not None
    host = f"[{address}]" if ":" in address else address
    listed = AllowList(["fd00::/8", "100.64.0.0/10"])
    with pytest.raises(WebhookRefused):
        parse(f"http://{host}/latest/meta-data/", listed)


@pytest.mark.parametrize(
    "url",
    [
        "http://2852039166/",  # 169.254.169.254 as one decimal number
        "http://0xa9fea9fe/",  # as hex
        "http://0251.0376.0251.0376/",  # as octal parts
        "http://169.254.43518/",  # a.b.c form
        "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped, hex
    ],
)
def test_other_spellings_of_the_metadata_address_are_refused(url: str) -> None:
    sender = WebhookSender(WebhookSettings(hosts=("*",)))

    async def subscribe() -> None:
        await sender.subscribe(url, None)

    with pytest.raises(WebhookRefused):
        asyncio.run(subscribe())


class FewPlaces:
    """Two places (one running, one queued); the work waits until canceled."""

    def __init__(self) -> None:
        self.taken = 0
        self.gate = self

    def reserve(self, request_id: str | None = None) -> object:
        if self.taken >= 2:
            raise Overloaded("full", retry_after=1)
        self.taken += 1
        return object()

    def release(self, ticket: object) -> None:
        self.taken -= 1

    async def run_item(self, item: Any, **_: Any) -> Any:
        await asyncio.Event().wait()


class SlowReads(LocalJobStore):
    def read(self, job_id: str) -> tuple[Job, str] | None:
        time.sleep(0.05)  # a store far away: concurrent submissions overlap
        return super().read(job_id)


def test_concurrent_puts_of_one_id_are_one_job_and_conflicts_not_overload(
    tmp_path: Path,
) -> None:
    service = FewPlaces()

    async def scenario() -> list[str]:
        jobs = Jobs(cast(Any, service), SlowReads(tmp_path), ttl_s=100)

        async def put(n: int) -> str:
            try:
                _, created = await jobs.asubmit(
                    None,
                    {"prompt": f"p{n % 2}"},  # two bodies: one wins, its repeats are the job
                    batch=lambda m, b: b,
                    key=None,
                    encode=lambda v: (b"png", {}),
                    job_id="one-id",
                )
            except ThawError as exc:
                return exc.code
            return "created" if created else "same"

        answers = await asyncio.gather(*(put(n) for n in range(10)))
        for task in list(jobs._tasks.values()):
            task.cancel()
        return list(answers)

    answers = asyncio.run(scenario())
    assert answers.count("created") == 1
    assert sorted(set(answers)) == ["created", "job_conflict", "same"], answers
    assert service.taken <= 1  # the winner's place only
