"""Jobs in S3, shared by every replica: `<prefix>/<id>/job.json` and `<prefix>/<id>/image.png`.

A record's version is its ETag. `create` is a conditional write (`If-None-Match: *`) and
`replace` another (`If-Match: <etag>`): S3 refuses the loser of a race with 412 Precondition
Failed, or 409 ConditionalRequestConflict when two such writes to one key overlap (S3 User
Guide, "How to prevent object overwrites with conditional writes"), so two replicas never both
create one id nor both settle one job. Objects are deleted by the bucket's lifecycle rule some
time after the TTL; until then `runtime.jobs.runner` treats an expired record as gone.

boto3 is imported when the first client is made, not with this module: importing the app stays
light, and a deployment with a local store never imports it at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from runtime.jobs.store import ID_PATTERN, Job, StoreUnavailable, parse_record

RECORD = "job.json"
IMAGE = "image.png"

# What S3 answers the loser of a conditional write: 412 when the condition is false, 409 when a
# concurrent conditional write to the same key won; NoSuchKey when `If-Match` meets no object.
LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412"})
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


def parse_jobs_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix.strip("/")


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the standard AWS settings (region, credentials), with standard
    retries and a pool wide enough for the inference threads, the loop and the lease renewals."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",  # presigned URLs too (botocore may pick SigV2 for them)
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3JobStore:
    """The `JobStore` over one S3 location. `client` is a boto3 S3 client, or made on first use
    by `client_factory`."""

    exclusive = False  # every replica uses it: a pending job may be another's, alive

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        client_factory: Callable[[], Any] = make_client,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._client_factory = client_factory
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3JobStore:
        bucket, prefix = parse_jobs_url(url)
        return cls(bucket, prefix, **kwargs)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    # -- records -----------------------------------------------------------------------------------

    def create(self, job: Job) -> str | None:
        try:
            return self._put_record(job, IfNoneMatch="*")
        except _LostRace:
            return None

    def get(self, job_id: str) -> Job | None:
        found = self.read(job_id)
        return None if found is None else found[0]

    def read(self, job_id: str) -> tuple[Job, str] | None:
        found = self._get(self._key(job_id, RECORD))
        if found is None:
            return None
        raw, etag = found
        job = parse_record(raw, f"s3://{self.bucket}/{self._key(job_id, RECORD)}")
        return None if job is None else (job, etag)

    def update(self, job: Job) -> str:
        return self._put_record(job)

    def replace(self, job: Job, version: str) -> str | None:
        try:
            return self._put_record(job, IfMatch=version)
        except _LostRace:
            return None

    # -- images and housekeeping ---------------------------------------------------------------

    def put_image(self, job_id: str, png: bytes) -> None:
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=self._key(job_id, IMAGE),
            Body=png,
            ContentType="image/png",
        )

    def image(self, job_id: str) -> bytes | None:
        found = self._get(self._key(job_id, IMAGE))
        return None if found is None else found[0]

    def image_url(self, job_id: str, expires_in_s: int) -> str | None:
        """A presigned GET of the image, valid `expires_in_s` seconds (signed locally: no
        request is made, and a URL signed with temporary credentials stops working when they
        expire, whichever comes first)."""
        url: str = self._call(
            "generate_presigned_url",
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(job_id, IMAGE)},
            ExpiresIn=max(1, int(expires_in_s)),
        )
        return url

    def delete(self, job_id: str) -> None:
        for name in (IMAGE, RECORD):  # the record last: while it exists, the job does
            self._call("delete_object", Bucket=self.bucket, Key=self._key(job_id, name))

    def ids(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        found: list[str] = []
        paginator = self._call("get_paginator", "list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    found.append(common["Prefix"][len(base) :].rstrip("/"))
        except Exception as exc:
            raise _unavailable("list", self.bucket, base, exc) from exc
        return sorted(found)

    # -- S3 calls --------------------------------------------------------------------------------

    def _key(self, job_id: str, name: str) -> str:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{self.prefix}/{job_id}/{name}" if self.prefix else f"{job_id}/{name}"

    def _put_record(self, job: Job, **conditions: str) -> str:
        """Write the record (under `IfNoneMatch`/`IfMatch` when given) and return its ETag;
        `_LostRace` when a condition lost."""
        key = self._key(job.id, RECORD)
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(job.to_json()).encode(),
                ContentType="application/json",
                **conditions,
            )
        except Exception as exc:
            if conditions and _code(exc) in LOST_RACE:
                raise _LostRace from exc
            raise _unavailable("put", self.bucket, key, exc) from exc
        etag: str = response["ETag"]
        return etag

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read(), response["ETag"]
        except Exception as exc:
            if _code(exc) in MISSING:
                return None
            raise _unavailable("get", self.bucket, key, exc) from exc

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:
            raise _unavailable(method, self.bucket, kwargs.get("Key", ""), exc) from exc


class _LostRace(Exception):
    """A conditional write found the record changed (or gone)."""


def _code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore `ClientError` (None for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _unavailable(action: str, bucket: str, key: str, exc: Exception) -> StoreUnavailable:
    detail = _code(exc) or type(exc).__name__
    return StoreUnavailable(
        f"job store: {action} s3://{bucket}/{key} failed ({detail})", retry_after=1
    )
