"""Fetch an S3 model folder once per environment: into the cache, or into a given folder (bake).

The cache keeps one folder per endpoint, bucket and prefix (`cache_folder`), and under it one
snapshot per content (a digest of the listing: keys, sizes, ETags, or the manifest). A warm start
lists the prefix (one request), finds the snapshot complete, and downloads nothing. If S3 cannot
be reached but a complete snapshot is there, that snapshot is used with a warning, so a network
blip does not fail a warm restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.weights import cache as model_cache
from runtime.weights.integrity import RemoteFile
from runtime.weights.progress import Listener, ProgressMeter
from runtime.weights.s3 import (
    Downloader,
    MiB,
    S3Location,
    S3Unreachable,
    describe,
    list_model,
    make_client,
)

log = logging.getLogger("thaw.fetch")

SOURCE_FILE = ".thaw-source.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STEM_CHARS = 80


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 and how hard to pull. `client` overrides the others (tests, custom
    sessions); `session` is a boto3 session to build the client from."""

    endpoint_url: str | None = None
    concurrency: int = 16
    part_size: int = 16 * MiB
    client: Any = None
    session: Any = None

    def make_client(self) -> Any:
        if self.client is not None:
            return self.client
        return make_client(
            endpoint_url=self.endpoint_url,
            session=self.session,
            max_connections=self.concurrency + 2,
        )


@dataclass(frozen=True)
class FetchResult:
    path: Path
    downloaded_bytes: int
    seconds: float
    cached: bool


def cache_folder(cache_root: Path, location: S3Location, endpoint: str | None) -> Path:
    """Where snapshots of `location` at `endpoint` live: `<cache>/s3/<stem>-<hash>`.

    The hash (of endpoint, bucket and prefix) makes the name injective: `a/b` and `a--b`, or
    one bucket name at two S3-compatible stores, never share a folder, whose snapshots the
    offline fallback and the space eviction would take for their own. The stem (bucket and
    prefix, made filesystem-safe and cut short) is only for people reading the folder. Folders
    of the older `<cache>/s3/<bucket>/<prefix>` layout are not migrated: a model is fetched
    once more into its new folder, and the old one can be deleted.
    """
    identity = json.dumps([(endpoint or "").rstrip("/"), location.bucket, location.prefix])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    readable = f"{location.bucket}--{location.prefix.replace('/', '--')}".rstrip("-")
    stem = _UNSAFE.sub("_", readable)[:_STEM_CHARS]
    return cache_root / "s3" / f"{stem}-{digest}"


def endpoint_of(client: Any, options: S3Options) -> str | None:
    """The endpoint the cache is keyed by: the configured one, else the one the client uses
    (boto3 resolves it from the region or `AWS_ENDPOINT_URL_S3`)."""
    if options.endpoint_url:
        return options.endpoint_url
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return endpoint if isinstance(endpoint, str) else None


def content_digest(files: list[RemoteFile]) -> str:
    listing = [[f.relpath, f.size, f.etag, f.sha256, f.version_id] for f in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def fetch_to_cache(
    ref: str,
    cache_root: Path,
    options: S3Options,
    *,
    listener: Listener | None = None,
    cancel: threading.Event | None = None,
    usage: model_cache.DiskUsageFn = model_cache.disk_usage,
) -> FetchResult:
    """The local folder holding `ref` (`s3://bucket/prefix`), downloading it unless cached."""
    location = S3Location.parse(ref)
    client = options.make_client()
    folder = cache_folder(cache_root, location, endpoint_of(client, options))
    try:
        files, manifest = list_model(client, location)
    except S3Unreachable:
        cached = model_cache.snapshots(folder)
        if not cached:
            raise
        log.warning(
            "S3 unreachable; using the cached copy", extra={"source": ref, "path": str(cached[0])}
        )
        return FetchResult(cached[0], 0, 0.0, cached=True)
    digest = content_digest(files)
    dest = folder / digest
    if dest.is_dir():
        log.info("model found in the cache", extra={"source": ref, "path": str(dest)})
        return FetchResult(dest, 0, 0.0, cached=True)
    with model_cache.locked(folder):
        if dest.is_dir():  # another process fetched it while this one waited
            return FetchResult(dest, 0, 0.0, cached=True)
        model_cache.remove_leftovers(folder)
        total = sum(f.size for f in files)
        try:
            model_cache.check_space(folder, total, ref, usage)
        except model_cache.InsufficientSpace:
            if not model_cache.remove_other_snapshots(folder, keep=digest):
                raise
            model_cache.check_space(folder, total, ref, usage)
        return _download(client, location, files, manifest, dest, options, listener, cancel)


def fetch_to_folder(
    ref: str,
    dest: Path,
    options: S3Options,
    *,
    listener: Listener | None = None,
    usage: model_cache.DiskUsageFn = model_cache.disk_usage,
) -> FetchResult:
    """Download `ref` into `dest` (which must not exist yet), atomically: for image builds."""
    location = S3Location.parse(ref)
    client = options.make_client()
    files, manifest = list_model(client, location)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; remove it or choose another --to")
    dest.parent.mkdir(parents=True, exist_ok=True)
    model_cache.check_space(dest.parent, sum(f.size for f in files), ref, usage)
    return _download(client, location, files, manifest, dest, options, listener, None)


def _download(
    client: Any,
    location: S3Location,
    files: list[RemoteFile],
    manifest: bytes | None,
    dest: Path,
    options: S3Options,
    listener: Listener | None,
    cancel: threading.Event | None,
) -> FetchResult:
    total = sum(f.size for f in files)
    meter = ProgressMeter(total, len(files), listener)
    downloader = Downloader(
        client,
        location,
        concurrency=options.concurrency,
        part_size=options.part_size,
        meter=meter,
        cancel=cancel,
    )
    log.info(
        "downloading model",
        extra={"source": str(location), "files": len(files), "bytes": total, "to": str(dest)},
    )

    def fill(folder: Path) -> None:
        downloader.download(files, folder)
        info = {"source": str(location), "digest": dest.name, **describe(files, manifest)}
        (folder / SOURCE_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")

    try:
        model_cache.publish(dest, fill)
    finally:
        done = meter.finish()
    log.info(
        "model downloaded",
        extra={"bytes": done.bytes_done, "seconds": round(done.seconds, 3)},
    )
    return FetchResult(dest, done.bytes_done, done.seconds, cached=False)
