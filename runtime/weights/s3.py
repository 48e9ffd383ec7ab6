"""Model folders in S3 (or an S3-compatible store): list a prefix, download it in parallel.

`s3://bucket/prefix` names every object under `prefix/`, mapped to the same relative paths in a
local folder. When the prefix holds a `thaw-manifest.json` (see `runtime.weights.integrity`), the
manifest is authoritative: only the files it lists are fetched, each is checked against its sha256,
and an entry may pin an object version.

Objects are fetched as byte ranges (`part_size` each) by a pool of threads sharing one boto3
client, every range with `If-Match: <etag>` so an object replaced mid-download fails loudly
instead of mixing two versions. Each range is retried a few times on a network error before the
whole fetch fails; the slot's backoff then retries the load. Nothing here decides where the files
go or when they count as complete: `runtime.weights.cache` does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.weights.integrity import (
    MANIFEST_NAME,
    IntegrityError,
    RemoteFile,
    parse_manifest,
    verify_file,
)
from runtime.weights.progress import ProgressMeter

log = logging.getLogger("thaw.s3")

MiB = 1024 * 1024
_READ_CHUNK = 1 * MiB
_PART_ATTEMPTS = 3


class FetchError(RuntimeError):
    """A model could not be fetched; the message says what to check."""


class S3NotFound(FetchError, FileNotFoundError):
    """No such bucket, no object under the prefix, or a manifest entry that is missing."""


class S3AccessDenied(FetchError, PermissionError):
    """The credentials may not list the bucket or read an object (or there are none)."""


class S3Unreachable(FetchError, ConnectionError):
    """The endpoint could not be reached, or the connection broke mid-download."""


class FetchCancelled(FetchError):
    """The fetch was cancelled because the load it belongs to already failed."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; empty for the whole bucket)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, ref: str) -> S3Location:
        if not ref.startswith("s3://"):
            raise ValueError(f"{ref!r} is not an s3:// reference")
        bucket, _, prefix = ref[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{ref!r} names no bucket (expected s3://bucket/prefix)")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    def key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def make_client(
    *, endpoint_url: str | None = None, session: Any = None, max_connections: int = 16
) -> Any:
    """A boto3 S3 client. Region and credentials come from the standard AWS settings
    (`AWS_REGION`, `AWS_PROFILE`, the Lambda role...); `endpoint_url` targets an S3-compatible
    store, addressed path-style as most of them require."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max_connections,
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    session = session if session is not None else boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def translate(exc: Exception, what: str) -> FetchError:
    """Turn a botocore/urllib3 error into a `FetchError` a user can act on."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return S3AccessDenied(
            f"no AWS credentials to read {what}: give the function a role (Lambda), a service "
            "account with IRSA/workload identity (Kubernetes), or AWS_ACCESS_KEY_ID/AWS_PROFILE"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return S3NotFound(f"bucket of {what} does not exist (check the name and region)")
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
            return S3NotFound(f"{what} does not exist")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or (
            status == 403
        ):
            return S3AccessDenied(
                f"access denied reading {what} ({code}): the role needs s3:ListBucket on the "
                "bucket and s3:GetObject on the prefix, and the keys must be valid"
            )
        if code in ("PreconditionFailed", "412"):
            return FetchError(f"{what} changed while it was being downloaded; try again")
        return FetchError(f"S3 refused {what}: {code} {error.get('Message', '')}".strip())
    return S3Unreachable(
        f"connection to S3 lost while reading {what} ({type(exc).__name__}: {exc}); "
        "check the network, the endpoint (THAW_S3_ENDPOINT_URL) and the region"
    )


def list_model(client: Any, location: S3Location) -> tuple[list[RemoteFile], bytes | None]:
    """The files to fetch, and the manifest's bytes when the prefix has one."""
    what = f"{location}"
    try:
        listed = dict(_list_objects(client, location))
    except Exception as exc:
        raise translate(exc, what) from exc
    if not listed:
        raise S3NotFound(f"no objects under {location} (check the bucket, prefix and region)")
    if MANIFEST_NAME in listed:
        key = location.key(MANIFEST_NAME)
        try:
            raw = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise translate(exc, f"s3://{location.bucket}/{key}") from exc
        files = parse_manifest(raw, source=f"s3://{location.bucket}/{key}")
        for entry in files:
            if entry.version_id is not None:
                continue  # a pinned older version: the listing shows only the latest
            seen = listed.get(entry.relpath)
            if seen is None:
                raise S3NotFound(f"{location.key(entry.relpath)} is in the manifest, not in S3")
            if seen.size != entry.size:
                raise IntegrityError(
                    f"{location.key(entry.relpath)} is {seen.size} bytes in S3 but the manifest "
                    f"says {entry.size}: re-upload the object or regenerate the manifest"
                )
        # The listing's ETag lets every range ask If-Match, as for an unmanifested prefix.
        files = [f if f.version_id else replace(f, etag=listed[f.relpath].etag) for f in files]
        return files, raw
    return sorted(listed.values(), key=lambda f: f.relpath), None


def _list_objects(client: Any, location: S3Location) -> Iterator[tuple[str, RemoteFile]]:
    prefix = f"{location.prefix}/" if location.prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            key: str = item["Key"]
            if key.endswith("/"):
                continue  # a "folder" placeholder object
            relpath = safe_relpath(key[len(prefix) :])
            etag = str(item.get("ETag", "")).strip('"')
            yield relpath, RemoteFile(relpath=relpath, size=int(item["Size"]), etag=etag)


def safe_relpath(relpath: str) -> str:
    """Refuse keys that would land outside the model folder (`..`, absolute paths)."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise FetchError(f"refusing S3 key part {relpath!r}: it would leave the model folder")
    return str(path)


@dataclass(frozen=True)
class _Part:
    file: RemoteFile
    fd: int
    start: int
    end: int  # inclusive


class Downloader:
    """Parallel ranged downloads of a file list into an existing (temporary) folder."""

    def __init__(
        self,
        client: Any,
        location: S3Location,
        *,
        concurrency: int = 16,
        part_size: int = 16 * MiB,
        meter: ProgressMeter | None = None,
        cancel: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._location = location
        self._concurrency = max(1, concurrency)
        self._part_size = max(MiB, part_size)
        self._meter = meter or ProgressMeter(0, 0)
        self._cancel = cancel or threading.Event()
        self._sleep = sleep

    def download(self, files: list[RemoteFile], folder: Path) -> None:
        """Fetch every file into `folder`, then verify each. Raises `FetchError` on any failure;
        the caller owns `folder` and discards it on error."""
        fds: list[int] = []
        try:
            parts: list[_Part] = []
            for remote in files:
                fd = _open_preallocated(folder / remote.relpath, remote.size)
                fds.append(fd)
                parts.extend(self._split(remote, fd))
            with ThreadPoolExecutor(self._concurrency, thread_name_prefix="thaw-s3") as pool:
                self._run_all(pool, [pool.submit(self._fetch_part, part) for part in parts])
                checks = [pool.submit(self._verify, folder, remote) for remote in files]
                self._run_all(pool, checks)
        finally:
            for fd in fds:
                os.close(fd)

    def _run_all(self, pool: ThreadPoolExecutor, futures: list[Future[None]]) -> None:
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            self._cancel.set()  # the other parts stop at their next chunk
            for future in pending:
                future.cancel()
            wait(pending)
            raise failed[0].exception()  # type: ignore[misc]

    def _split(self, remote: RemoteFile, fd: int) -> Iterator[_Part]:
        for start in range(0, remote.size, self._part_size):
            yield _Part(remote, fd, start, min(start + self._part_size, remote.size) - 1)

    def _fetch_part(self, part: _Part) -> None:
        what = f"s3://{self._location.bucket}/{self._location.key(part.file.relpath)}"
        for attempt in range(1, _PART_ATTEMPTS + 1):
            try:
                self._read_range(part)
                return
            except Exception as exc:
                error = translate(exc, what)
                retryable = type(error) is S3Unreachable
                if not retryable or attempt == _PART_ATTEMPTS or self._cancel.is_set():
                    raise error from exc
                log.warning(
                    "S3 range failed, retrying",
                    extra={"key": what, "attempt": attempt, "error": str(error)},
                )
                self._sleep(0.2 * 2**attempt)

    def _read_range(self, part: _Part) -> int:
        if self._cancel.is_set():
            raise FetchCancelled("fetch cancelled")
        request: dict[str, Any] = {
            "Bucket": self._location.bucket,
            "Key": self._location.key(part.file.relpath),
            "Range": f"bytes={part.start}-{part.end}",
        }
        if part.file.version_id:
            request["VersionId"] = part.file.version_id
        elif part.file.etag:
            request["IfMatch"] = f'"{part.file.etag}"'
        body = self._client.get_object(**request)["Body"]
        offset, written = part.start, 0
        try:
            while offset <= part.end:
                if self._cancel.is_set():
                    raise FetchCancelled("fetch cancelled")
                chunk = body.read(min(_READ_CHUNK, part.end + 1 - offset))
                if not chunk:
                    raise S3Unreachable(
                        f"the connection closed after {offset} of {part.file.size} bytes"
                    )
                _pwrite_all(part.fd, chunk, offset)
                offset += len(chunk)
                written += len(chunk)
                self._meter.add(len(chunk))
        except BaseException:
            self._meter.add(-written)
            raise
        finally:
            body.close()
        return written

    def _verify(self, folder: Path, remote: RemoteFile) -> None:
        if self._cancel.is_set():
            raise FetchCancelled("fetch cancelled")
        verify_file(folder / remote.relpath, remote)
        self._meter.file_done()


def _open_preallocated(path: Path, size: int) -> int:
    """Create the file at its final size. `posix_fallocate` reserves the blocks now, so a full
    disk fails here, before any byte is downloaded, not halfway through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if size:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # pragma: no cover - macOS
                os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def describe(files: list[RemoteFile], manifest: bytes | None) -> dict[str, Any]:
    """What was fetched, written beside the files (`.thaw-source.json`)."""
    return {
        "files": [
            {"path": f.relpath, "size": f.size, "etag": f.etag, "sha256": f.sha256} for f in files
        ],
        "manifest": json.loads(manifest) if manifest else None,
    }
