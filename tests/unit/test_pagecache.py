"""Page-cache warming: reads every weight file, largest first, with progress; honours cancel."""

from __future__ import annotations

import threading
from pathlib import Path

from runtime.pagecache import evict, warm, weight_files
from runtime.phases import PhaseRecorder


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
    assert warm(tmp_path, phases) == 3_001_000
    (phase,) = phases.snapshot()
    assert phase["name"] == "prefetch"
    assert phase["state"] == "done"
    assert phase["detail"]["bytes_done"] == phase["detail"]["bytes_total"] == 3_001_000
    evict(weight_files(tmp_path))  # must not fail for files it may drop


def test_a_cancelled_warm_stops_reading(tmp_path: Path) -> None:
    make_model(tmp_path)
    cancel = threading.Event()
    cancel.set()
    assert warm(tmp_path, PhaseRecorder(), cancel=cancel) == 0
