"""Warm (or evict) the OS page cache for a model's weight files.

A cold start on a fresh node reads gigabytes of weights from disk. Reading them in a thread while
torch and diffusers import overlaps the two: file reads release the GIL, so the read costs wall
time only where it outlasts the imports. The build phase then finds the bytes in memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from runtime.phases import PhaseRecorder

WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf"})
CHUNK = 8 * 1024 * 1024


def weight_files(folder: Path) -> list[Path]:
    """Weight files under `folder`, largest first (they gain the most from an early start)."""
    files = [p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def warm(
    folder: Path,
    phases: PhaseRecorder,
    *,
    cancel: threading.Event | None = None,
    phase: str = "prefetch",
) -> int:
    """Read every weight file once; return the bytes read. Progress shows in the phase."""
    files = weight_files(folder)
    total = sum(p.stat().st_size for p in files)
    done = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with phases.phase(phase):
        started = time.monotonic()
        for path in files:
            with path.open("rb", buffering=0) as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while cancel is None or not cancel.is_set():
                    count = handle.readinto(view)
                    if not count:
                        break
                    done += count
            elapsed = max(time.monotonic() - started, 1e-6)
            phases.progress(
                phase,
                bytes_done=done,
                bytes_total=total,
                mib_per_s=round(done / elapsed / 2**20, 1),
            )
    return done


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' clean pages from the page cache (no root needed): a cold-cache start."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
