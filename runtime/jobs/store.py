"""Job records and where they live.

A job is a JSON record (and, once done, its PNG) under a folder of its own. Every write goes to
a temporary file first and is renamed into place, so a reader never sees half a record and a
crash leaves the previous one. `create` claims an id exclusively (O_EXCL), so two submissions
with one client-chosen id cannot both start a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""What a job id may be (a client-chosen one included): safe as a file name and in a URL."""


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
    error: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["status"] = self.status.value
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Job:
        return cls(**{**record, "status": JobStatus(record["status"])})


class JobStore(Protocol):
    """Where job records and images live."""

    def create(self, job: Job) -> bool:
        """Store a new job; False when a job with this id exists already."""

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job: Job) -> None: ...

    def put_image(self, job_id: str, png: bytes) -> None: ...

    def image(self, job_id: str) -> bytes | None: ...

    def delete(self, job_id: str) -> None: ...

    def ids(self) -> list[str]: ...


class LocalJobStore:
    """Jobs in a local folder: `<root>/<id>/job.json` and `<root>/<id>/image.png`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def create(self, job: Job) -> bool:
        folder = self._folder(job.id)
        try:
            folder.mkdir()  # atomic: exactly one creator wins
        except FileExistsError:
            return False
        self.update(job)
        return True

    def get(self, job_id: str) -> Job | None:
        try:
            record = json.loads((self._folder(job_id) / "job.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Job.from_json(record)

    def update(self, job: Job) -> None:
        self._write(self._folder(job.id) / "job.json", json.dumps(job.to_json()).encode())

    def put_image(self, job_id: str, png: bytes) -> None:
        self._write(self._folder(job_id) / "image.png", png)

    def image(self, job_id: str) -> bytes | None:
        try:
            return (self._folder(job_id) / "image.png").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def ids(self) -> list[str]:
        return sorted(entry.name for entry in self.root.iterdir() if entry.is_dir())

    def _folder(self, job_id: str) -> Path:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

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
