"""Jobs: submit now (202, or 429/503 at once under the same admission as a synchronous
request), run when the job's turn comes, report progress and a measured ETA, cancel, expire.

An accepted job holds its place in the admission gate from submission, so it will run or be
reported failed, never silently dropped: a drain waits for it like any request, and one cut off
at the drain deadline is recorded `failed`. The store here is local to the process's machine:
jobs that were queued or running when a previous process ended are recorded `failed: lost with
its process` when the next one starts (there is no other replica to take them over).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Generic, TypeVar

from runtime.errors import Canceled, ThawError
from runtime.jobs.store import Job, JobStatus, JobStore
from runtime.lifecycle.notify import Notifier
from runtime.lifecycle.service import Service
from runtime.work import Control

log = logging.getLogger("thaw.jobs")

P = TypeVar("P")
R = TypeVar("R")

SAVE_EVERY_S = 1.0
"""Progress is written to the store at most this often (every state change is written)."""


class JobConflict(ThawError):
    """A job with this id exists with a different request (an idempotent PUT must repeat it)."""

    code = "job_conflict"


class JobNotFound(ThawError):
    """No such job (never submitted, or expired)."""

    code = "not_found"


def request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


class Jobs(Generic[P]):
    """The jobs of one service. `submit` and the readers run on the event loop; progress
    arrives from inference threads (thread-safe)."""

    def __init__(
        self,
        service: Service[Any],
        store: JobStore,
        *,
        ttl_s: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.store = store
        self.ttl_s = ttl_s
        self._wall = wall
        self._lock = threading.Lock()
        self._live: dict[str, Job] = {}
        self._controls: dict[str, Control] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._saved_at: dict[str, float] = {}
        self._changed = Notifier()
        self._version = 0
        self._recover()

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        item: P,
        request: dict[str, Any],
        *,
        batch: Callable[[Any, list[P]], list[Any]],
        key: Hashable | None,
        encode: Callable[[Any], tuple[bytes, dict[str, Any]]],
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Accept a job (True) or return the one already under `job_id` with the same request
        (False). Raises `Overloaded`/`Draining` when no place is free, `JobConflict` when the id
        holds another request. Call on the event loop."""
        digest = request_hash(request)
        if job_id is not None:
            existing = self.get(job_id)
            if existing is not None:
                return self._same(existing, digest), False
        ticket = self.service.reserve(job_id)
        now = self._wall()
        job = Job(
            id=job_id or uuid.uuid4().hex,
            request=request,
            request_hash=digest,
            created_at=now,
            expires_at=now + self.ttl_s,
        )
        if not self.store.create(job):  # another submission with this id won the race
            self.service.gate.release(ticket)
            existing = self.get(job.id)
            if existing is None:
                raise JobConflict(f"job {job.id} is being replaced; try again", retry_after=1)
            return self._same(existing, digest), False
        control = Control()
        control.on_start(lambda: self._started(job.id))
        control.listen(lambda step, steps: self._progress(job.id, step, steps))
        with self._lock:
            self._live[job.id] = job
            self._controls[job.id] = control
        self._tasks[job.id] = asyncio.ensure_future(
            self._run(job.id, item, batch, key, encode, control, ticket)
        )
        log.info("job accepted", extra={"job_id": job.id})
        return job, True

    def _same(self, existing: Job, digest: str) -> Job:
        if existing.request_hash != digest:
            raise JobConflict(f"job {existing.id} exists with a different request")
        return existing

    async def _run(
        self,
        job_id: str,
        item: P,
        batch: Callable[[Any, list[P]], list[Any]],
        key: Hashable | None,
        encode: Callable[[Any], tuple[bytes, dict[str, Any]]],
        control: Control,
        ticket: Any,
    ) -> None:
        try:
            served = await self.service.run_item(
                item, batch=batch, key=key, request_id=job_id, control=control, ticket=ticket
            )
            png, meta = encode(served.value)
            await asyncio.to_thread(self.store.put_image, job_id, png)
            self._finish(job_id, JobStatus.SUCCEEDED, result={**meta, "bytes": len(png)})
        except asyncio.CancelledError:
            self._finish(job_id, JobStatus.CANCELED)  # canceled while queued
        except Canceled:
            self._finish(job_id, JobStatus.CANCELED)
        except ThawError as exc:
            self._finish(job_id, JobStatus.FAILED, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # the job is recorded failed whatever went wrong
            log.exception("job failed", extra={"job_id": job_id})
            self._finish(
                job_id,
                JobStatus.FAILED,
                error={"code": "internal_error", "message": type(exc).__name__},
            )
        finally:
            self._tasks.pop(job_id, None)

    # -- changes (any thread) --------------------------------------------------------------------

    def _started(self, job_id: str) -> None:
        self._change(job_id, status=JobStatus.RUNNING, started_at=self._wall(), save=True)

    def _progress(self, job_id: str, step: int, steps: int) -> None:
        with self._lock:
            job = self._live.get(job_id)
            if job is None:
                return
            started = job.started_at or self._wall()
        seconds = (self._wall() - started) / step if step else None
        self._change(job_id, step=step, steps=steps, step_seconds=seconds, save=False)

    def _finish(self, job_id: str, status: JobStatus, **fields: Any) -> None:
        self._change(job_id, status=status, finished_at=self._wall(), save=True, **fields)
        with self._lock:
            self._live.pop(job_id, None)
            self._controls.pop(job_id, None)
            self._saved_at.pop(job_id, None)
        log.info("job finished", extra={"job_id": job_id, "status": status.value})

    def _change(self, job_id: str, *, save: bool, **fields: Any) -> None:
        with self._lock:
            job = self._live.get(job_id)
            if job is None or job.status.final:
                return
            for name, value in fields.items():
                setattr(job, name, value)
            now = time.monotonic()
            save = save or now - self._saved_at.get(job_id, 0.0) >= SAVE_EVERY_S
            if save:
                self._saved_at[job_id] = now
            snapshot = Job.from_json(job.to_json())
        if save:
            self.store.update(snapshot)
        with self._changed.lock:
            self._version += 1
            self._changed.notify_all()

    # -- reading and canceling -------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job as it is now (live figures for this process's jobs), None if unknown or
        expired (an expired job is deleted)."""
        with self._lock:
            live = self._live.get(job_id)
            if live is not None:
                return Job.from_json(live.to_json())
        try:
            job = self.store.get(job_id)
        except ValueError:  # not a valid id: no such job
            return None
        if job is not None and job.status.final and job.expires_at <= self._wall():
            self.store.delete(job_id)
            return None
        return job

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id} (never submitted, or expired)")
        return job

    def image(self, job_id: str) -> bytes | None:
        job = self.require(job_id)
        return self.store.image(job_id) if job.status is JobStatus.SUCCEEDED else None

    def cancel(self, job_id: str) -> Job:
        """A queued job leaves the queue at once; a running one stops at its next step."""
        job = self.require(job_id)
        if job.status.final:
            return job
        with self._lock:
            control = self._controls.get(job_id)
        task = self._tasks.get(job_id)
        if job.status is JobStatus.QUEUED and task is not None:
            task.cancel()  # its place in the queue is released as the task ends
        elif control is not None:
            control.cancel()
        return self.require(job_id)

    async def events(self, job_id: str, *, heartbeat_s: float = 15.0) -> AsyncIterator[Job | None]:
        """The job now, then at each change until it is final; None as a heartbeat."""
        job = self.require(job_id)
        yield job
        while not job.status.final:
            with self._changed.lock:
                seen = self._version

            def moved(seen: int = seen) -> bool:
                return self._version != seen

            changed = await self._changed.wait_for_async(moved, heartbeat_s)
            if not changed:
                yield None
                continue
            latest = self.get(job_id)
            if latest is None:
                return
            if latest != job:
                job = latest
                yield job

    # -- housekeeping ----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired job; returns how many."""
        gone = 0
        for job_id in self.store.ids():
            job = self.store.get(job_id)
            if job is not None and job.status.final and job.expires_at <= self._wall():
                self.store.delete(job_id)
                gone += 1
        return gone

    def _recover(self) -> None:
        """Jobs a previous process left queued or running can no longer finish: say so."""
        for job_id in self.store.ids():
            job = self.store.get(job_id)
            if job is not None and not job.status.final:
                job.status = JobStatus.FAILED
                job.finished_at = self._wall()
                job.error = {"code": "lost", "message": "lost with the process that ran it"}
                self.store.update(job)
