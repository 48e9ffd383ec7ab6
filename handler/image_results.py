"""Images kept for a while so a URL can hand them out (`response_format=url` of the OpenAI
Images API).

Each image is stored as a finished job in the jobs' store, so it lives where the jobs live (a
local folder, or S3 shared by every replica), expires with the same sweep, and is listed at
`/jobs/{id}` for a caller with the key. The URL is the store's own presigned one when it has
one; else `/v1/images/results/{id}`, which needs no key (an `<img src>` sends none): the random
128-bit id is the capability, and only images stored here are served there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from handler.pipeline import GeneratedImage
from runtime.jobs.runner import Jobs, request_hash
from runtime.jobs.store import Job, JobStatus

KIND = "openai.images"
"""Marks the records made here, the only ones `/v1/images/results/{id}` serves."""

URL_TTL_S = 3600.0
"""How long a URL stays valid: an hour, as OpenAI's do (THAW_JOB_TTL_S when that is shorter)."""


class ImageResults:
    """Store images and find them again by id. Blocking: call from a worker thread."""

    def __init__(
        self, jobs: Jobs[Any], *, ttl_s: float = URL_TTL_S, wall: Callable[[], float] = time.time
    ) -> None:
        self.jobs = jobs
        self.ttl_s = min(ttl_s, URL_TTL_S)
        self._wall = wall

    def keep(self, image: GeneratedImage, request: dict[str, Any]) -> str:
        """Store one image; returns its id. `request` is what its job record shows."""
        now = self._wall()
        record = {**request, "kind": KIND, "seed": image.seed}
        job = Job(
            id=uuid.uuid4().hex,
            request=record,
            request_hash=request_hash(record),
            created_at=now,
            expires_at=now + self.ttl_s,
            status=JobStatus.SUCCEEDED,
            started_at=now,
            finished_at=now,
            result={"seed": image.seed, "width": image.width, "height": image.height},
        )
        store = self.jobs.store
        if not store.create(job):
            raise RuntimeError(f"a random job id came up twice: {job.id}")
        store.put_image(job.id, image.png)
        return job.id

    def presigned_url(self, result_id: str) -> str | None:
        """The store's own URL for the image (a presigned S3 GET), or None to serve it here."""
        return self.jobs.store.image_url(result_id, int(self.ttl_s))

    def image(self, result_id: str) -> bytes | None:
        """The PNG stored here under this id, None if there is none (or it expired)."""
        job = self.jobs.get(result_id)
        if job is None or job.request.get("kind") != KIND or job.status is not JobStatus.SUCCEEDED:
            return None
        return self.jobs.store.image(result_id)
