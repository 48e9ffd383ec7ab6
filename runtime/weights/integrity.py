"""Is a downloaded file the file that was meant? Size always; sha256 from a manifest; else ETag.

A `thaw-manifest.json` at the model's root pins content:

    {"files": [{"path": "unet/diffusion_pytorch_model.safetensors", "size": 3438167534,
                "sha256": "…", "version_id": "optional S3 object version"}]}

`python -m runtime manifest DIR` writes one. Without a manifest, the S3 ETag is checked where it
is a content hash: the MD5 of the object for a single-part upload, the MD5 of the parts' MD5s
("…-N") for a multipart one, tried with the part sizes the AWS tools use. An ETag that is no
content hash (SSE-KMS, or an unknown part size) leaves the size and the `If-Match` on every range
as the check, and says so in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("thaw.integrity")

MANIFEST_NAME = "thaw-manifest.json"
MiB = 1024 * 1024
_BLOCK = MiB
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^([0-9a-f]{32})-(\d+)$")
_COMMON_PART_SIZES = (8 * MiB, 16 * MiB, 5 * MiB, 64 * MiB)


class IntegrityError(RuntimeError):
    """A downloaded file does not match its expected size or checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model folder, as the store describes it."""

    relpath: str
    size: int
    etag: str = ""
    sha256: str | None = None
    version_id: str | None = None


def parse_manifest(raw: bytes, *, source: str) -> list[RemoteFile]:
    try:
        data: Any = json.loads(raw)
        files = [
            RemoteFile(
                relpath=str(entry["path"]),
                size=int(entry["size"]),
                sha256=str(entry["sha256"]).lower(),
                version_id=entry.get("version_id"),
            )
            for entry in data["files"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{source} is not a valid manifest ({exc}); expected "
            '{"files": [{"path", "size", "sha256"}]}'
        ) from exc
    return files


def build_manifest(folder: Path) -> dict[str, Any]:
    """A manifest for every file under `folder` (the manifest itself excluded)."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relpath = path.relative_to(folder).as_posix()
        if relpath == MANIFEST_NAME or relpath.startswith("."):
            continue
        entries.append({"path": relpath, "size": path.stat().st_size, "sha256": sha256_of(path)})
    return {"files": entries}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: RemoteFile) -> None:
    """Raise `IntegrityError` unless `path` matches `expected`."""
    size = os.stat(path).st_size
    if size != expected.size:
        raise IntegrityError(
            f"{expected.relpath}: got {size} bytes, expected {expected.size} (truncated download)"
        )
    if expected.sha256:
        actual = sha256_of(path)
        if actual != expected.sha256:
            raise IntegrityError(
                f"{expected.relpath}: sha256 {actual} does not match the manifest's "
                f"{expected.sha256}: the object was changed or corrupted; re-upload it or "
                "regenerate the manifest"
            )
        return
    if not etag_matches(path, expected.etag, size):
        raise IntegrityError(
            f"{expected.relpath}: content does not match its ETag {expected.etag}: corrupted "
            "in transit or at rest; try again, or re-upload the object"
        )


def etag_matches(path: Path, etag: str, size: int) -> bool:
    """True if the content matches the ETag, or if the ETag is no content hash we can check."""
    etag = etag.strip('"').lower()
    if _PLAIN_MD5.match(etag):
        return _part_md5s(path, [size or 1])[0] == etag
    multipart = _MULTIPART.match(etag)
    if multipart is None:
        log.info("ETag is not a content hash; size checked", extra={"path": str(path)})
        return True
    parts = int(multipart.group(2))
    candidates = _part_sizes_for(size, parts)
    if not candidates:
        log.warning("multipart ETag not checkable; size checked", extra={"path": str(path)})
        return True
    return etag in _part_md5s(path, candidates)


def _part_sizes_for(size: int, parts: int) -> list[int]:
    """Whole-MiB part sizes that cut `size` bytes into exactly `parts` parts, common ones first."""
    if parts < 1 or size == 0:
        return []
    smallest = -(-size // parts)
    derived = -(-smallest // MiB) * MiB
    sizes = [*_COMMON_PART_SIZES, derived]
    unique = list(dict.fromkeys(s for s in sizes if -(-size // s) == parts))
    return unique[:3]


class _PartHasher:
    """The S3 ETag of a stream cut into parts of `part_size` bytes."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self._current = hashlib.md5()
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            room = self.part_size - self._filled
            self._current.update(view[:room])
            self._filled += min(room, len(view))
            view = view[room:]
            if self._filled == self.part_size:
                self._digests.append(self._current.digest())
                self._current, self._filled = hashlib.md5(), 0

    def etag(self, *, single: bool) -> str:
        digests = self._digests + ([self._current.digest()] if self._filled else [])
        if single:  # a single-part upload's ETag is the plain MD5 of the object
            return digests[0].hex() if digests else hashlib.md5().hexdigest()
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _part_md5s(path: Path, part_sizes: list[int]) -> list[str]:
    """In one read of the file, the ETag for each candidate part size."""
    single = len(part_sizes) == 1 and part_sizes[0] >= os.stat(path).st_size
    hashers = [_PartHasher(size) for size in part_sizes]
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            for hasher in hashers:
                hasher.update(block)
    return [hasher.etag(single=single) for hasher in hashers]
