"""Page-cache warming: reads every weight file, largest first, with progress; honours cancel;
does not read again what the cache already holds."""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

import pytest

from runtime.observe.phases import PhaseRecorder
from runtime.weights import pagecache
from runtime.weights.pagecache import evict, prefetch, resident_pages, weight_files


def make_model(folder: Path) -> None:
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"u" * 3_000_000)
    (folder / "vae.safetensors").write_bytes(b"v" * 1_000)
    (folder / "model_index.json").write_text("{}")


def test_warm_reads_every_weight_file_and_reports_progress(tmp_path: Path) -> None:
    make_model(tmp_path)
    phases = PhaseRecorder()
    assert [p.name for p in weight_files(tmp_path)] == [
        "diffusion_pytorch_model.safetensors",
        "vae.safetensors",
    ]
    assert prefetch(tmp_path, phases) == 3_001_000
    (phase,) = phases.snapshot()
    assert phase["name"] == "prefetch"
    assert phase["state"] == "done"
    assert phase["detail"]["bytes_done"] == phase["detail"]["bytes_total"] == 3_001_000
    evict(weight_files(tmp_path))  # must not fail for files it may drop


def test_a_cancelled_warm_stops_reading(tmp_path: Path) -> None:
    make_model(tmp_path)
    cancel = threading.Event()
    cancel.set()
    assert prefetch(tmp_path, PhaseRecorder(), cancel=cancel) == 0


def test_pages_already_cached_are_not_read_again(tmp_path: Path) -> None:
    make_model(tmp_path)
    prefetch(tmp_path, PhaseRecorder())  # now every page is resident
    big = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    fd = os.open(big, os.O_RDONLY)
    try:
        pages = resident_pages(fd, 3_000_000)
    finally:
        os.close(fd)
    assert pages is not None
    assert len(pages) == -(-3_000_000 // mmap.PAGESIZE)
    assert all(page & 1 for page in pages)

    phases = PhaseRecorder()
    assert prefetch(tmp_path, phases) == 3_001_000
    detail = phases.snapshot()[0]["detail"]
    assert detail["bytes_cached"] == detail["bytes_total"] == 3_001_000


def test_a_chunk_with_one_missing_page_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_model(tmp_path)
    size = 3_000_000
    missing = bytearray(b"\x01" * -(-size // mmap.PAGESIZE))
    missing[100] = 0  # one page of the first chunk is not in the cache
    vectors = {size: bytes(missing), 1_000: None}  # and nothing known about the small file
    monkeypatch.setattr(pagecache, "CHUNK", 1024 * 1024)
    monkeypatch.setattr(pagecache, "resident_pages", lambda fd, length: vectors[length])
    phases = PhaseRecorder()
    assert prefetch(tmp_path, phases) == 3_001_000
    detail = phases.snapshot()[0]["detail"]
    # chunks 2 and 3 of the big file were resident; chunk 1 and the small file were read
    assert detail["bytes_cached"] == size - 1024 * 1024


def test_without_sendfile_to_dev_null_the_bytes_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /dev/null is no sendfile target (macOS wants a socket) the warm falls back to
    reading, and still covers every byte."""
    make_model(tmp_path)
    evict(weight_files(tmp_path))
    calls: list[int] = []

    def refuse(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        calls.append(count)
        raise OSError(38, "sendfile refused")

    monkeypatch.setattr(pagecache, "resident_pages", lambda fd, length: None)
    monkeypatch.setattr(os, "sendfile", refuse)
    read: list[int] = []
    real_preadv = os.preadv

    def counting_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        got = real_preadv(fd, buffers, offset)
        read.append(got)
        return got

    monkeypatch.setattr(os, "preadv", counting_preadv)
    assert prefetch(tmp_path, PhaseRecorder()) == 3_001_000
    assert len(calls) == 1  # refused once, then not asked again
    assert sum(read) == 3_001_000


@pytest.mark.skipif(not hasattr(os, "sendfile"), reason="no sendfile on this platform")
def test_the_pages_are_pulled_in_without_a_copy_to_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_model(tmp_path)
    monkeypatch.setattr(pagecache, "resident_pages", lambda fd, length: None)

    def no_reads(*args: object) -> int:
        raise AssertionError("sendfile should have pulled the pages in")

    monkeypatch.setattr(os, "preadv", no_reads)
    assert prefetch(tmp_path, PhaseRecorder()) == 3_001_000
