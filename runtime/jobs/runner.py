"""Jobs: submit now (202, or 429/503 at once under the same admission as a synchronous
request), run when the job's turn comes, report progress and a measured ETA, cancel, expire.

An accepted job holds its place in the admission gate from submission, so it will run or be
reported failed, never silently dropped: a drain waits for it like any request, and one cut off
at the drain deadline is recorded `failed`.

A process that dies (SIGKILL, out of memory, a Lambda timeout) cannot say so, so a job is held
under a lease: its holder renews `lease_until` every third of `lease_s` while the job is queued
or running, and a job found past its lease is recorded `failed: lost with its process` by
whichever replica reads it first (a conditional write: one of them wins). It is not run again
elsewhere: a job that killed its process (an image too large for memory, a driver fault) would
go on to kill the next, and its client may no longer want it; the record says what happened and
the client resubmits. A holder that finds its job's record changed under it (canceled from
another replica, or declared lost while it was stalled) stops the work at its next step. With a
store only this process uses (a local folder), jobs left pending by the previous process are
recorded lost at start.

On Lambda (`dispatch` given) a submission only records the job and hands it to an asynchronous
invocation of the function; `run_stored` is that invocation's side: claim the job (a
conditional write, so a duplicate delivery runs nothing), run it, record the outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

from runtime.errors import Canceled, ThawError
from runtime.jobs.store import DISPATCHED, Job, JobStatus, JobStore
from runtime.jobs.webhooks import JobEvent, WebhookSender
from runtime.lifecycle.notify import Notifier
from runtime.lifecycle.service import Service
from runtime.settings import WebhookSettings
from runtime.work import Control

log = logging.getLogger("thaw.jobs")

P = TypeVar("P")
R = TypeVar("R")

SAVE_EVERY_S = 1.0
"""Progress is written to the store at most this often (every state change is written)."""

POLL_S = 0.5
"""How often a stream of another process's job reads the store for changes."""

LOST = "lost with the process that ran it (it stopped renewing its lease)"


class JobConflict(ThawError):
    """A job with this id exists with a different request (an idempotent PUT must repeat it)."""

    code = "job_conflict"


class JobNotFound(ThawError):
    """No such job (never submitted, or expired)."""

    code = "not_found"


class DispatchFailed(ThawError):
    """The job could not be handed to a worker invocation; nothing was kept, submit again."""

    code = "dispatch_failed"


class JobWork(NamedTuple):
    """What running a job takes: the item, its batch function and key, and how to encode the
    result as a PNG and its metadata."""

    item: Any
    batch: Callable[[Any, list[Any]], list[Any]]
    key: Hashable | None
    encode: Callable[[Any], tuple[bytes, dict[str, Any]]]


def process_owner() -> str:
    """This process's name in a job's `owner`: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


class Jobs(Generic[P]):
    """The jobs of one service. `asubmit` and the readers run on the event loop; progress
    arrives from inference threads, lease renewals from a thread of their own (thread-safe).

    `lease_s`: how long a job stays held without a renewal. `dispatch(job_id)`: hand a new job
    to another invocation instead of running it here (Lambda); it must start within
    `start_within_s` or it is recorded lost."""

    def __init__(
        self,
        service: Service[Any],
        store: JobStore,
        *,
        ttl_s: float,
        webhooks: WebhookSender | None = None,
        lease_s: float = 30.0,
        start_within_s: float = 120.0,
        dispatch: Callable[[str], None] | None = None,
        owner: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.store = store
        self.ttl_s = ttl_s
        self.webhooks = webhooks or WebhookSender(WebhookSettings())
        self.lease_s = lease_s
        self.start_within_s = start_within_s
        self.dispatch = dispatch
        self.owner = owner or process_owner()
        self._wall = wall
        self._lock = threading.Lock()
        self._writes = threading.Lock()  # this process's writes of a record, one at a time
        self._live: dict[str, Job] = {}
        self._versions: dict[str, str] = {}
        self._controls: dict[str, Control] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._submitting: dict[str, _Turn] = {}  # ids being submitted (on the loop)
        self._saved_at: dict[str, float] = {}
        self._changed = Notifier()
        self._version = 0
        self._renewing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- submitting ----------------------------------------------------------------------------

    async def asubmit(
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
        holds another request. Call on the event loop.

        The store's reads and writes (and a Lambda hand-over) run in threads: a store that is
        slow or does not answer (S3 far away, a stalled path: botocore waits 30 s per attempt)
        holds this submission, never the loop's probes and other requests.

        The place is taken on the loop before the record is written. If this submission is
        canceled while the write is under way, the place goes back and a record the write still
        makes is held by nobody: it is recorded lost when its lease lapses, never left queued.

        Submissions of one id in this process take turns, as they did when all of it ran on
        the loop: a repeat finds the job its predecessor stored (200, or 409 for another body),
        not a place taken by submissions that all looked before any wrote (429)."""
        if job_id is None:
            return await self._asubmit(item, request, batch=batch, key=key, encode=encode)
        turn = self._submitting.get(job_id)
        if turn is None:
            turn = self._submitting[job_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                return await self._asubmit(
                    item, request, batch=batch, key=key, encode=encode, job_id=job_id
                )
        finally:
            turn.users -= 1
            if not turn.users:
                del self._submitting[job_id]

    async def _asubmit(
        self,
        item: P,
        request: dict[str, Any],
        *,
        batch: Callable[[Any, list[P]], list[Any]],
        key: Hashable | None,
        encode: Callable[[Any], tuple[bytes, dict[str, Any]]],
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        digest = request_hash(request)
        if job_id is not None:
            existing = await asyncio.to_thread(self.get, job_id)
            if existing is not None:
                return self._same(existing, digest), False
        if self.dispatch is not None:
            return await asyncio.to_thread(self._dispatch, self.dispatch, request, digest, job_id)
        ticket = self.service.reserve(job_id)
        job = self._new(request, digest, job_id)
        try:
            version = await asyncio.to_thread(self.store.create, job)
        except BaseException:  # the store is unreachable: the place goes back, the client retries
            self.service.gate.release(ticket)
            raise
        if version is None:  # another submission with this id won the race
            self.service.gate.release(ticket)
            return await asyncio.to_thread(self._existing, job.id, digest), False
        self._start(job, version, item, batch, key, encode, ticket)
        return job, True

    def _new(self, request: dict[str, Any], digest: str, job_id: str | None) -> Job:
        now = self._wall()
        return Job(
            id=job_id or uuid.uuid4().hex,
            request=request,
            request_hash=digest,
            created_at=now,
            expires_at=now + self.ttl_s,
            owner=self.owner,
            lease_until=now + self.lease_s,
        )

    def _start(
        self,
        job: Job,
        version: str,
        item: P,
        batch: Callable[[Any, list[P]], list[Any]],
        key: Hashable | None,
        encode: Callable[[Any], tuple[bytes, dict[str, Any]]],
        ticket: Any,
    ) -> None:
        """Run a job just stored at `version` here, in the place `ticket` holds (on the loop)."""
        control = self._hold(job, version)
        self._tasks[job.id] = asyncio.ensure_future(
            self._run(job.id, item, batch, key, encode, control, ticket)
        )
        log.info("job accepted", extra={"job_id": job.id})

    def _existing(self, job_id: str, digest: str) -> Job:
        existing = self.get(job_id)
        if existing is None:
            raise JobConflict(f"job {job_id} is being replaced; try again", retry_after=1)
        return self._same(existing, digest)

    def _hold(self, job: Job, version: str) -> Control:
        """Make `job` (just stored at `version`) one this process runs and renews."""
        control = Control()
        control.on_start(lambda: self._started(job.id))
        control.listen(lambda step, steps: self._progress(job.id, step, steps, control.step_at))
        with self._lock:
            self._live[job.id] = job
            self._versions[job.id] = version
            self._controls[job.id] = control
        self._loop = asyncio.get_running_loop()
        self._keep_leases()
        return control

    def _dispatch(
        self,
        dispatch: Callable[[str], None],
        request: dict[str, Any],
        digest: str,
        job_id: str | None,
    ) -> tuple[Job, bool]:
        """Record the job for another invocation and hand it over; it must be claimed within
        `start_within_s`. A hand-over that fails leaves nothing behind: the client submits
        again, under the same id if it chose one."""
        now = self._wall()
        job = Job(
            id=job_id or uuid.uuid4().hex,
            request=request,
            request_hash=digest,
            created_at=now,
            expires_at=now + self.ttl_s,
            owner=DISPATCHED,
            lease_until=now + self.start_within_s,
        )
        if self.store.create(job) is None:
            return self._existing(job.id, digest), False
        try:
            dispatch(job.id)
        except Exception as exc:
            log.warning("job not dispatched", extra={"job_id": job.id, "error": repr(exc)[:300]})
            try:
                self.store.delete(job.id)
            except ThawError:  # left behind, it is recorded never started at its deadline
                log.warning("undispatched job not deleted", extra={"job_id": job.id})
            raise DispatchFailed(
                f"job {job.id} could not be handed to a worker; submit it again", retry_after=1
            ) from exc
        log.info("job dispatched", extra={"job_id": job.id})
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
        status, fields = JobStatus.FAILED, dict[str, Any]()
        try:
            served = await self.service.run_item(
                item, batch=batch, key=key, request_id=job_id, control=control, ticket=ticket
            )
            png, meta = encode(served.value)
            await asyncio.to_thread(self.store.put_image, job_id, png)
            status, fields = JobStatus.SUCCEEDED, {"result": {**meta, "bytes": len(png)}}
        except (asyncio.CancelledError, Canceled):  # canceled while queued, or at a step
            status = JobStatus.CANCELED
        except ThawError as exc:
            fields = {"error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # the job is recorded failed whatever went wrong
            log.exception("job failed", extra={"job_id": job_id})
            fields = {"error": {"code": "internal_error", "message": type(exc).__name__}}
        try:
            # The final record is a store write (an S3 PUT, which may take a while): in a
            # thread, so the loop goes on serving probes and requests meanwhile. Canceling
            # this task now cannot stop that write; it completes in its thread.
            await asyncio.to_thread(self._finish, job_id, status, **fields)
        finally:
            self._tasks.pop(job_id, None)

    # -- changes (any thread) --------------------------------------------------------------------

    def _started(self, job_id: str) -> None:
        self._change(job_id, status=JobStatus.RUNNING, started_at=self._wall(), save=True)

    def _progress(self, job_id: str, step: int, steps: int, at: float | None) -> None:
        with self._lock:
            job = self._live.get(job_id)
            if job is None:
                return
            started = job.started_at or self._wall()
        at = self._wall() if at is None else at
        seconds = (at - started) / step if step else None
        self._change(job_id, step=step, steps=steps, step_seconds=seconds, step_at=at, save=False)

    def _finish(self, job_id: str, status: JobStatus, **fields: Any) -> None:
        """Record the job's end (a store write: call it from a thread, not the event loop).
        Of two ends racing (a Lambda worker's deadline, the job's own), the first is kept."""
        # Results are kept THAW_JOB_TTL_S from when they exist: a job that ran longer than the
        # TTL would otherwise lose its image the moment it finished.
        now = self._wall()
        changed = self._change(
            job_id,
            status=status,
            finished_at=now,
            expires_at=now + self.ttl_s,
            lease_until=None,
            save=True,
            **fields,
        )
        if not changed:  # settled elsewhere (canceled from another replica, declared lost)
            return
        self._release(job_id)
        log.info("job finished", extra={"job_id": job_id, "status": status.value})

    def _release(self, job_id: str) -> None:
        with self._lock:
            self._live.pop(job_id, None)
            self._versions.pop(job_id, None)
            self._controls.pop(job_id, None)
            self._saved_at.pop(job_id, None)

    def _announce(self, job: Job, fields: dict[str, Any]) -> None:
        """Hand a change to the job's webhook, if it asked for one. Called under `_lock`: the
        sender only builds the event and queues it, and a failure there fails no job."""
        if not job.request.get("webhook"):
            return
        status = fields.get("status")
        if status is JobStatus.RUNNING:
            event = JobEvent.START
        elif status is not None and status.final:
            event = JobEvent.COMPLETED
        elif "step" in fields:
            event = JobEvent.PROGRESS
        else:
            return
        try:
            self.webhooks.send(job, event)
        except Exception:
            log.exception("webhook not queued", extra={"job_id": job.id, "event": event.value})

    def _change(self, job_id: str, *, save: bool, **fields: Any) -> bool:
        """Apply `fields` to a job this process holds (and write it when `save`, or when the
        last write is `SAVE_EVERY_S` old); False when the job is not held or already final."""
        with self._lock:
            job = self._live.get(job_id)
            if job is None or job.status.final:
                return False
            for name, value in fields.items():
                setattr(job, name, value)
            self._announce(job, fields)
            now = time.monotonic()
            save = save or now - self._saved_at.get(job_id, 0.0) >= SAVE_EVERY_S
            if save:
                self._saved_at[job_id] = now
        if save:
            self._save(job_id)
        self._notify()
        return True

    def _notify(self) -> None:
        with self._changed.lock:
            self._version += 1
            self._changed.notify_all()

    def _save(self, job_id: str) -> None:
        """Write this process's job as it is now, with its lease renewed, over the version it
        last wrote. Losing that race means another process settled the job: let it go."""
        with self._writes:
            with self._lock:
                job = self._live.get(job_id)
                if job is None:
                    return
                if not job.status.final:
                    job.lease_until = self._wall() + self.lease_s
                snapshot = Job.from_json(job.to_json())
                version = self._versions.get(job_id)
            if version is None:
                written: str | None = self.store.update(snapshot)
            else:
                written = self.store.replace(snapshot, version)
            if written is None:
                self._taken(job_id)
                return
            with self._lock:
                if job_id in self._versions:
                    self._versions[job_id] = written

    def _taken(self, job_id: str) -> None:
        """The record changed under this process (canceled from another replica, or declared
        lost while this process stalled past its lease): stop the work and write no more."""
        log.warning("job settled elsewhere: its work here stops", extra={"job_id": job_id})
        with self._lock:
            control = self._controls.get(job_id)
        self._release(job_id)
        task = self._tasks.get(job_id)
        if control is not None:
            control.cancel()  # a running job stops at its next step
        if task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(task.cancel)  # a queued one leaves the queue
        self._notify()

    # -- leases ----------------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        """Renew the leases of this process's jobs while it has any (one thread, started when
        the first job is held, gone when the last is released)."""
        with self._lock:
            if self._renewing:
                return
            self._renewing = True
        threading.Thread(target=self._renew, name="thaw-job-leases", daemon=True).start()

    def _renew(self) -> None:
        while True:
            time.sleep(self.lease_s / 3)
            with self._lock:
                held = list(self._live)
                if not held:
                    self._renewing = False
                    return
            for job_id in held:
                try:
                    self._save(job_id)
                except Exception as exc:  # the next renewal tries again; the lease has slack
                    log.warning(
                        "job lease not renewed", extra={"job_id": job_id, "error": repr(exc)[:300]}
                    )

    # -- reading and canceling -------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job as it is now (live figures for this process's jobs), None if unknown or
        expired (an expired job is deleted). A job found past its lease is recorded lost."""
        with self._lock:
            live = self._live.get(job_id)
            if live is not None:
                return Job.from_json(live.to_json())
        job: Job | None = None
        for _ in range(3):  # a lost race to settle a lapsed job: read what the winner wrote
            try:
                found = self.store.read(job_id)
            except ValueError:  # not a valid id: no such job
                return None
            if found is None:
                return None
            job, version = found
            now = self._wall()
            lapsed = _lapsed(job, now)
            if (job.status.final or lapsed) and job.expires_at <= now:
                self.store.delete(job_id)
                return None
            if not lapsed:
                return job
            settled = self._settle(job, version, JobStatus.FAILED, error=_lost_error(job))
            if settled is not None:
                log.warning("job lost", extra={"job_id": job_id, "owner": job.owner})
                return settled
        return job

    def holds(self, job_id: str) -> bool:
        """This process runs the job (its figures are live here)."""
        with self._lock:
            return job_id in self._live

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id} (never submitted, or expired)")
        return job

    def image(self, job_id: str) -> bytes | None:
        job = self.require(job_id)
        return self.store.image(job_id) if job.status is JobStatus.SUCCEEDED else None

    def image_url(self, job_id: str, *, max_s: float = 300.0) -> str | None:
        """A short-lived URL of a succeeded job's image where the store has one (S3: presigned,
        valid `max_s` seconds at most and never past the job's expiry), else None."""
        job = self.require(job_id)
        if job.status is not JobStatus.SUCCEEDED:
            return None
        seconds = min(max_s, job.expires_at - self._wall())
        return self.store.image_url(job_id, max(1, int(seconds)))

    def cancel(self, job_id: str) -> Job:
        """A queued job leaves the queue at once; a running one stops at its next step. A job
        another process holds is recorded canceled here; that process stops it when its next
        write (a step's progress, a lease renewal) finds the record changed."""
        with self._lock:
            held = job_id in self._live
            control = self._controls.get(job_id)
        if not held:
            return self._cancel_elsewhere(job_id)
        job = self.require(job_id)
        if job.status.final:
            return job
        task = self._tasks.get(job_id)
        if control is not None:
            # Also for a queued job: its work may be on its way to an inference thread (handed
            # over, not yet begun), which canceling the task does not stop.
            control.cancel()
        if job.status is JobStatus.QUEUED and task is not None:
            task.cancel()  # its place in the queue is released as the task ends
        return self.require(job_id)

    def _cancel_elsewhere(self, job_id: str) -> Job:
        for _ in range(3):
            job = self.require(job_id)  # a lapsed job is recorded lost first
            if job.status.final:
                return job
            found = self.store.read(job_id)
            if found is None:
                break
            settled = self._settle(found[0], found[1], JobStatus.CANCELED)
            if settled is not None:
                log.info("job canceled", extra={"job_id": job_id, "owner": found[0].owner})
                return settled
        return self.require(job_id)

    def _settle(self, job: Job, version: str, status: JobStatus, **fields: Any) -> Job | None:
        """Record a job this process does not hold as final, if nobody wrote it since
        `version`; None when someone did."""
        settled = Job.from_json(job.to_json())
        settled.status = status
        settled.finished_at = self._wall()
        settled.expires_at = settled.finished_at + self.ttl_s
        settled.lease_until = None
        for name, value in fields.items():
            setattr(settled, name, value)
        if self.store.replace(settled, version) is None:
            return None
        # Its holder is gone or lets it go without a word: the `completed` webhook is sent here.
        self._announce(settled, {"status": status})
        self._notify()
        return settled

    async def events(self, job_id: str, *, heartbeat_s: float = 15.0) -> AsyncIterator[Job | None]:
        """The job now, then at each change until it is final; None as a heartbeat. Another
        process's job is read from the store every `POLL_S`."""
        job = await asyncio.to_thread(self.require, job_id)
        yield job
        quiet_since = time.monotonic()
        while not job.status.final:
            with self._changed.lock:
                seen = self._version
            with self._lock:
                here = job_id in self._live

            def moved(seen: int = seen) -> bool:
                return self._version != seen

            changed = await self._changed.wait_for_async(moved, heartbeat_s if here else POLL_S)
            if changed or not here:
                latest = await asyncio.to_thread(self.get, job_id)
                if latest is None:
                    return
                if _visible(latest) != _visible(job):
                    job = latest
                    quiet_since = time.monotonic()
                    yield job
                    continue
            if time.monotonic() - quiet_since >= heartbeat_s:
                quiet_since = time.monotonic()
                yield None

    # -- a job another invocation recorded (Lambda's asynchronous worker) -------------------------

    async def run_stored(
        self, job_id: str, build: Callable[[dict[str, Any]], JobWork], *, budget_s: float
    ) -> dict[str, Any]:
        """Claim a dispatched job and run it here within `budget_s` seconds; return what
        happened. A job already claimed, settled or gone runs nothing (an asynchronous event
        may be delivered more than once); one past its start deadline is recorded lost."""
        found = await asyncio.to_thread(self.store.read, job_id)
        if found is None:
            return {"job_id": job_id, "ran": False, "reason": "no such job"}
        job, version = found
        if job.status.final:
            return {"job_id": job_id, "ran": False, "reason": f"already {job.status.value}"}
        if job.owner != DISPATCHED:
            await asyncio.to_thread(self.get, job_id)  # recorded lost if its lease has lapsed
            return {"job_id": job_id, "ran": False, "reason": "held by another worker"}
        if _lapsed(job, self._wall()):
            await asyncio.to_thread(self.get, job_id)
            return {"job_id": job_id, "ran": False, "reason": "not claimed before its deadline"}
        job.owner = self.owner
        job.lease_until = self._wall() + self.lease_s
        claimed = await asyncio.to_thread(self.store.replace, job, version)
        if claimed is None:
            return {"job_id": job_id, "ran": False, "reason": "claimed by another worker"}
        control = self._hold(job, claimed)
        try:
            work = build(job.request)
            ticket = self.service.reserve(job_id)
        except ThawError as exc:
            error = {"code": exc.code, "message": str(exc)}
            await asyncio.to_thread(self._finish, job_id, JobStatus.FAILED, error=error)
            return {"job_id": job_id, "ran": False, "reason": exc.code}
        task = asyncio.ensure_future(
            self._run(job_id, work.item, work.batch, work.key, work.encode, control, ticket)
        )
        self._tasks[job_id] = task
        log.info("job claimed", extra={"job_id": job_id})
        done, _ = await asyncio.wait({task}, timeout=max(0.0, budget_s))
        if not done:
            # The invocation must answer before Lambda ends it: record why, stop the work.
            error = {
                "code": "deadline_exceeded",
                "message": f"the job ran past its worker's {budget_s:.0f}s budget",
            }
            await asyncio.to_thread(self._finish, job_id, JobStatus.FAILED, error=error)
            control.cancel()
        final = await asyncio.to_thread(self.store.get, job_id)
        status = final.status.value if final is not None else "gone"
        return {"job_id": job_id, "ran": True, "status": status}

    # -- housekeeping ----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired job; returns how many."""
        gone = 0
        for job_id in self.store.ids():
            try:
                job = self.store.get(job_id)
                if job is not None and job.status.final and job.expires_at <= self._wall():
                    self.store.delete(job_id)
                    gone += 1
            except Exception as exc:  # one job that cannot be read or deleted stops no other
                log.warning("job not swept", extra={"job_id": job_id, "error": repr(exc)[:300]})
        return gone

    def recover(self) -> None:
        """Jobs a previous process left queued or running can no longer finish: say so (a
        store this process alone writes; call it from a thread once the server listens: it
        reads every record, and a volume may hold a day's jobs). Only
        where that process is surely gone (it ran on this machine and its pid is dead or is now
        this process's, or its lease lapsed): a folder on a volume that a rolling update's
        new pod mounts while the old one still drains holds the old one's live jobs, which its
        lease renewals keep; if it dies, a read past the lease records them lost."""
        try:
            held = self.store.ids()
        except Exception as exc:  # the server starts all the same: submissions say why
            log.warning("jobs not recovered", extra={"error": repr(exc)[:300]})
            return
        for job_id in held:
            try:
                found = self.store.read(job_id)
                if found is None:
                    continue
                job, version = found
                if not job.status.final and _holder_gone(job, self._wall()):
                    job.status = JobStatus.FAILED
                    job.finished_at = self._wall()
                    job.expires_at = job.finished_at + self.ttl_s
                    job.lease_until = None
                    job.error = {"code": "lost", "message": LOST}
                    self.store.replace(job, version)  # its holder may write first: it wins
            except Exception as exc:  # one bad record must not keep the server from starting
                log.warning("job not recovered", extra={"job_id": job_id, "error": repr(exc)[:300]})


class _Turn:
    """The submissions of one id waiting for their turn (on the loop)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _holder_gone(job: Job, now: float) -> bool:
    """The process that holds `job` is surely gone: its lease lapsed, or its `owner` names a
    process of this machine that is dead or whose pid is now this one's (a restarted container
    reuses its pids). Another machine's process, or a live one here, is left to its lease."""
    if _lapsed(job, now) or not job.owner:
        return True
    host, _, rest = job.owner.partition(":")
    if host != socket.gethostname():
        return False
    try:
        pid = int(rest.split(":", 1)[0])
    except ValueError:
        return True
    if pid == os.getpid():
        return True  # this process holds nothing yet: an earlier one had this pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _lapsed(job: Job, now: float) -> bool:
    """Not final and past its lease: its holder is gone (or never came)."""
    return not job.status.final and job.lease_until is not None and job.lease_until <= now


def _lost_error(job: Job) -> dict[str, Any]:
    if job.owner == DISPATCHED:
        message = "never started: no worker claimed it before its start deadline"
    else:
        message = LOST
    return {"code": "lost", "message": message}


def _visible(job: Job) -> Job:
    """The job as a client sees it (a lease renewal is no change)."""
    return dataclasses.replace(job, owner=None, lease_until=None)
