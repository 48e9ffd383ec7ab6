"""The benchmark suite's pure parts: the cold-start timeline the plot draws, and the variants a
row runs. The suite itself runs as `make bench`, not in the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suite import Samples, plot, row_variants, timeline


def cold_start_samples() -> Samples:
    """Two runs of one row, as `thaw_cold_start` records them: the prefetch runs beside the
    imports, so it starts with them rather than after them."""
    samples = Samples()
    for run in range(2):
        at = 0.1 * run
        samples.add("sd15/cold/thaw/livez", 0.4 + at)
        samples.add("sd15/cold/thaw/ready", 4.3 + at)
        samples.add("sd15/cold/plain/ready", 6.0 + at)
        for name, begun, seconds in (
            ("worker_start", 0.1, 0.001),
            ("import", 0.2, 3.5),
            ("prefetch", 0.2, 2.4),
            ("build", 3.7, 0.3),
            ("to_device", 4.0, 0.02),
            ("configure", 3.7, 0.0),
        ):
            samples.add(f"sd15/cold/phase/{name}", seconds)
            samples.add(f"sd15/cold/phase_at/{name}", begun + at)
    return samples


def test_timeline_places_each_phase_at_its_median_start_from_spawn() -> None:
    found = {
        name: (begun, seconds)
        for name, begun, seconds in timeline(cold_start_samples(), "sd15/cold")
    }

    assert found["prefetch"] == pytest.approx((0.25, 2.4))  # beside the imports, not after
    assert found["import"] == pytest.approx((0.25, 3.5))
    assert found["build"] == pytest.approx((3.75, 0.3))
    assert "configure" not in found  # a phase that took no time draws nothing


def test_timeline_leaves_out_phases_recorded_without_a_start() -> None:
    samples = cold_start_samples()
    del samples.values["sd15/cold/phase_at/build"]  # samples saved before starts were recorded

    names = [name for name, _, _ in timeline(samples, "sd15/cold")]

    assert "build" not in names
    assert "import" in names


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "suite.png"

    plot(cold_start_samples(), ["sd15/cold"], path)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_run_only_the_variants_they_can_measure() -> None:
    every = ("bare", "thaw", "nogc", "plain", "lazy")
    image = {"num_inference_steps": 1}

    assert row_variants(every, "sd15", "cold", None) == ["bare", "thaw", "nogc", "plain"]
    assert row_variants(every, "sd15", "warm", None) == ["bare", "thaw", "plain"]
    assert row_variants(every, "tiny", "cold", image) == ["bare", "thaw", "plain", "lazy"]
