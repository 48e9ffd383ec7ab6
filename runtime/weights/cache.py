"""A folder of model files that is either complete or absent, never half there.

Files are written into a hidden temporary sibling and the folder is renamed into place only after
every file is verified. A rename within one filesystem is atomic, so a crash, a full disk, or a
Lambda environment frozen and then killed mid-download leaves at most a `.NAME.tmp-*` folder,
which nothing loads and the next fetch removes. A lock file serialises fetchers that share a cache
(pods on one volume): the second waits, then finds the folder done.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("thaw.cache")

MB = 1_000_000
# Room kept free beyond the model itself: logs, temp files, the manifest.
_MARGIN_BYTES = 16 * 1024 * 1024


class InsufficientSpace(OSError):
    """The model does not fit in the free space of the cache's filesystem."""


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


DiskUsageFn = Callable[[Path], DiskUsage]


def disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)


def check_space(folder: Path, needed: int, what: str, usage: DiskUsageFn = disk_usage) -> None:
    free = usage(folder).free
    if needed + _MARGIN_BYTES > free:
        raise InsufficientSpace(
            errno.ENOSPC,
            f"{what} needs {needed / MB:.0f} MB but only {free / MB:.0f} MB are free in {folder}: "
            "on Lambda raise EphemeralStorage (up to 10240 MB); elsewhere point THAW_CACHE_DIR "
            "at a larger volume",
        )


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder/.lock` (blocking) for the body."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Run `fill(tmp)` on a fresh temporary folder beside `dest`, then rename it to `dest`.

    On any error the temporary folder is removed and `dest` is untouched. A full disk becomes
    `InsufficientSpace` naming the folder.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the serving user may not be the baking one
        os.rename(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC and not isinstance(exc, InsufficientSpace):
            raise InsufficientSpace(
                errno.ENOSPC,
                f"the disk holding {dest.parent} filled up while writing the model: free space "
                "or point THAW_CACHE_DIR at a larger volume",
            ) from exc
        if dest.is_dir() and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return dest  # another fetcher published the same folder first
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("model folder published", extra={"path": str(dest)})
    return dest


def remove_leftovers(folder: Path) -> None:
    """Delete temporary folders of fetches that died. Call with the folder's lock held."""
    for child in folder.glob(".*.tmp-*"):
        log.warning("removing an incomplete download", extra={"path": str(child)})
        shutil.rmtree(child, ignore_errors=True)


def snapshots(folder: Path) -> list[Path]:
    """Complete snapshot folders under `folder`, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def remove_other_snapshots(folder: Path, keep: str) -> int:
    """Delete complete snapshots other than `keep` to make room; return bytes freed."""
    freed = 0
    for snapshot in snapshots(folder):
        if snapshot.name != keep:
            freed += sum(f.stat().st_size for f in snapshot.rglob("*") if f.is_file())
            shutil.rmtree(snapshot, ignore_errors=True)
    return freed
