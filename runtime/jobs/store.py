"""Job records and where they live.

A job is a JSON record (and, once done, its PNG). Every store gives each record a version (an
S3 ETag, a digest of the local file) and two atomic writes: `create` claims an id exclusively,
so two submissions with one client-chosen id cannot both start a job, and `replace` writes only
over the version the writer read, so of two writers racing on one job (a replica finishing it,
another declaring it lost or canceling it) exactly one wins and the other learns it lost.

`LocalJobStore` keeps the jobs in a local folder (one process uses it: a single pod with a
volume); `runtime.jobs.s3store.S3JobStore` keeps them in S3, shared by every replica.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from runtime.errors import ThawError

log = logging.getLogger("thaw.jobs")

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""What a job id may be (a client-chosen one included): safe as a file name and in a URL."""

DISPATCHED = "dispatched"
"""The owner of a job handed to another invocation (Lambda's asynchronous queue) that has not
claimed it yet."""


class StoreUnavailable(ThawError):
    """The job store could not be read or written (S3 unreachable, access denied, throttled; a
    jobs folder that cannot be created or written)."""

    code = "store_unavailable"


class JobStatus(StrEnum):
    QUEUED = "queued"
    """Accepted; waiting for the model or its turn."""

    RUNNING = "running"
    """Generating."""

    SUCCEEDED = "succeeded"
    """Done; the image can be fetched until the job expires."""

    FAILED = "failed"
    """Ended without an image; `error` says why."""

    CANCELED = "canceled"
    """Canceled by the client, queued or running (a running one stops at its next step)."""

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


@dataclass
class Job:
    """One job's record, as stored and as `GET /jobs/{id}` shows it (with links added)."""

    id: str
    request: dict[str, Any]
    request_hash: str
    created_at: float
    expires_at: float
    status: JobStatus = JobStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    steps: int | None = None
    step_seconds: float | None = None
    step_at: float | None = None
    """When step `step` ended (wall clock), where the model ran."""
    error: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    """Who holds the job while it is not final: a process's id, or `DISPATCHED` while it waits
    in Lambda's queue of asynchronous invocations."""
    lease_until: float | None = None
    """The holder renews this while it holds the job; a job not final past it is lost."""

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["status"] = self.status.value
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Job:
        """The job a record holds. A field this version does not know (written by a newer one)
        is ignored; a missing or unreadable one raises."""
        known = {name: value for name, value in record.items() if name in _FIELDS}
        return cls(**{**known, "status": JobStatus(record["status"])})


_FIELDS = frozenset(item.name for item in fields(Job))


def parse_record(raw: bytes, where: str) -> Job | None:
    """The job in a stored record, or None (logged) when it holds none: not JSON, or not a
    job's record (another program's file, a record this version cannot read)."""
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise TypeError(f"a JSON {type(record).__name__}, not an object")
        return Job.from_json(record)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning(
            "job record unreadable: ignored", extra={"record": where, "error": repr(exc)[:200]}
        )
        return None


class JobStore(Protocol):
    """Where job records and images live. A version is an opaque token (never empty) that
    changes with every write of the record."""

    exclusive: bool
    """One process uses the store at a time: jobs left pending in it at start are lost."""

    def create(self, job: Job) -> str | None:
        """Store a new job and return its version; None when a job with this id exists."""

    def get(self, job_id: str) -> Job | None: ...

    def read(self, job_id: str) -> tuple[Job, str] | None:
        """The job and its version, or None when there is no such job."""

    def update(self, job: Job) -> str:
        """Write the record whatever its version; return the new version."""

    def replace(self, job: Job, version: str) -> str | None:
        """Write the record only if it is still at `version`; return the new version, or None
        when another writer got there first (or the job is gone)."""

    def put_image(self, job_id: str, png: bytes) -> None: ...

    def image(self, job_id: str) -> bytes | None: ...

    def image_url(self, job_id: str, expires_in_s: int) -> str | None:
        """A URL the client may fetch the image from directly, or None to stream it."""

    def delete(self, job_id: str) -> None: ...

    def ids(self) -> list[str]: ...


class LocalJobStore:
    """Jobs in a local folder: `<root>/<id>/job.json` and `<root>/<id>/image.png`.

    A record's version is a digest of its bytes; `replace` compares and writes under an
    exclusive `flock` on the job's folder, so writers in this process and another on the
    same machine take turns."""

    exclusive = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the server still serves; each submission says why it cannot
            log.warning("jobs folder unusable", extra={"path": str(root), "error": repr(exc)})

    def create(self, job: Job) -> str | None:
        folder = self._folder(job.id)
        try:
            folder.mkdir()  # atomic: exactly one creator wins
        except FileExistsError:
            return None
        except OSError as exc:
            raise self._unavailable(exc) from exc
        try:
            return self.update(job)
        except BaseException:  # no record: the folder would hold the id without a job
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def get(self, job_id: str) -> Job | None:
        found = self.read(job_id)
        return None if found is None else found[0]

    def read(self, job_id: str) -> tuple[Job, str] | None:
        try:
            raw = (self._folder(job_id) / "job.json").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        job = parse_record(raw, str(self._folder(job_id) / "job.json"))
        return None if job is None else (job, _digest(raw))

    def update(self, job: Job) -> str:
        raw = json.dumps(job.to_json()).encode()
        try:
            with self._locked(job.id):
                self._write(self._folder(job.id) / "job.json", raw)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        return _digest(raw)

    def replace(self, job: Job, version: str) -> str | None:
        raw = json.dumps(job.to_json()).encode()
        path = self._folder(job.id) / "job.json"
        try:
            with self._locked(job.id):
                if _digest(path.read_bytes()) != version:
                    return None
                self._write(path, raw)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._unavailable(exc) from exc
        return _digest(raw)

    def put_image(self, job_id: str, png: bytes) -> None:
        try:
            self._write(self._folder(job_id) / "image.png", png)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def image(self, job_id: str) -> bytes | None:
        try:
            return (self._folder(job_id) / "image.png").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def image_url(self, job_id: str, expires_in_s: int) -> str | None:
        return None  # a local file has no URL of its own: the server streams it

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def ids(self) -> list[str]:
        """The jobs' folders; what else a volume holds (`lost+found`) is no job."""
        try:
            entries = list(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            entry.name for entry in entries if ID_PATTERN.fullmatch(entry.name) and entry.is_dir()
        )

    def _unavailable(self, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(
            f"jobs cannot be stored: the jobs folder {self.root} cannot be written "
            f"({exc.strerror or type(exc).__name__}); synchronous generation still works"
        )

    def _folder(self, job_id: str) -> Path:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        """This job's records to one writer at a time, in this process and across processes."""
        with self._lock, open(self._folder(job_id) / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32]
