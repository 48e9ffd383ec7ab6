"""SnapStart restore to first image against an on-demand cold start to first image.

    python -m bench.lambda_snapstart [--runs 1] [--model PATH]

Both under the real awslambdaric client and thaw's Runtime API emulator, same model, one run
(medians when `--runs` > 1):

1. on demand: the /generate event waits before the environment is spawned; the time is spawn to
   the image (INIT, the background load, the generation);
2. SnapStart: the environment INITs with `snap-start` (the load in INIT, one warm inference,
   the before-snapshot hook), is "snapshotted" (frozen in `restore/next`), then restored with the
   /generate event waiting; the time is the restore to the image (the after-restore hook,
   reseeding here and in the worker, the generation). INIT's own time is reported too: Lambda
   spends it once per published version, not per environment.

What this does not measure: a real restore. The emulator's "snapshot" is a process group
stopped with SIGSTOP; its restore is SIGCONT, with every page still in memory. Lambda restores a
microVM from a snapshot whose size is the environment's memory (the model's weights first of
all, reported below as the environment's resident size), loading pages lazily from its cache;
its restore time grows with that size and was not measured on AWS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "tests" / "fixtures" / "events"
ENV = {"THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "warning"}


def generate_event() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / "function_url_generate.json").read_text())
    return loaded


def resident_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def on_demand(model: Path) -> float:
    from tests.support.lambda_emulator import RuntimeApiEmulator

    emulator = RuntimeApiEmulator()
    first = emulator.submit(generate_event())
    emulator.start({**ENV, "THAW_MODEL": str(model)})
    try:
        first.wait(300)
        assert first.result["statusCode"] == 200, first.body[:500]
        assert first.answered_at is not None
        # answered_at is wall time; spawned_at monotonic: measure on one clock.
        return time.monotonic() - emulator.spawned_at - (time.time() - first.answered_at)
    finally:
        emulator.close()


def snapstart(model: Path) -> tuple[float, float, float]:
    """(INIT seconds to the snapshot, restore to first image seconds, environment RSS MB)."""
    from tests.support.lambda_emulator import RuntimeApiEmulator

    emulator = RuntimeApiEmulator()
    emulator.start(
        {**ENV, "THAW_MODEL": str(model), "THAW_WARM_INFERENCE": "1"}, init_type="snap-start"
    )
    try:
        init_s = emulator.wait_snapshot(300)
        rss = resident_mb(emulator.environment_pids())
        first = emulator.submit(generate_event())  # waiting before the restore, as on Lambda
        emulator.restore()
        first.wait(300)
        assert first.result["statusCode"] == 200, first.body[:500]
        assert first.answered_at is not None
        assert emulator.restored_at is not None
        restored_s = time.monotonic() - emulator.restored_at - (time.time() - first.answered_at)
        return init_s, restored_s, rss
    finally:
        emulator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/thaw/tiny-sd")
    args = parser.parse_args()
    cold: list[float] = []
    inits: list[float] = []
    restores: list[float] = []
    sizes: list[float] = []
    for _ in range(args.runs):  # interleaved, so a drift of the machine hits both alike
        cold.append(on_demand(args.model))
        init_s, restore_s, rss = snapstart(args.model)
        inits.append(init_s)
        restores.append(restore_s)
        sizes.append(rss)
    cold_s, restore_s = statistics.median(cold), statistics.median(restores)
    print(f"model: {args.model}   runs: {args.runs}")
    print(f"on-demand cold start to first image:   {cold_s:8.3f} s")
    print(f"SnapStart restore to first image:      {restore_s:8.3f} s")
    print(f"  ratio (on-demand / restore):         {cold_s / restore_s:8.1f}x")
    print(f"SnapStart INIT to snapshot (once per version): {statistics.median(inits):.3f} s")
    print(f"environment resident at the snapshot:  {statistics.median(sizes):8.0f} MB")
    print(
        "a restore here is SIGCONT of a stopped process group; on Lambda it loads a microVM "
        "snapshot of about that size: not measured on AWS"
    )


if __name__ == "__main__":
    main()
