"""SIGTERM to exit when the drain deadline cuts work off.

    python -m bench.drain [--runs 3]

A server (tiny model, one place, THAW_DRAIN_TIMEOUT_S=2) runs one 25 s generation with one more
queued; SIGTERM; the time until the process exits (code 1: cut off). Median of the runs.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLOW = {"num_inference_steps": 100, "width": 512, "height": 512, "prompt": "a slow one"}


def one_run(model: Path) -> tuple[int, float]:
    from tests.integration.test_drain import Request, wait_health
    from tests.support.server import ServerProcess

    server = ServerProcess(
        {
            "THAW_TORCH_THREADS": "1",
            "THAW_MODEL": str(model),
            "THAW_MAX_CONCURRENCY": "1",
            "THAW_DRAIN_TIMEOUT_S": "2",
        }
    ).start()
    try:
        server.wait_ready(timeout=120)
        Request(server, SLOW, "cut-running")
        wait_health(server, inflight=1)
        Request(server, SLOW, "cut-queued")
        wait_health(server, inflight=1, queued=1)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = server.wait_exit(timeout=60)
        return code, time.monotonic() - signalled
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "infra" / "scripts"))
    import build_tiny_model

    model = build_tiny_model.default_output()
    seconds = []
    for _ in range(args.runs):
        code, took = one_run(model)
        print(f"exit code {code} after {took:.2f} s", flush=True)
        seconds.append(took)
    print(f"median SIGTERM -> exit: {statistics.median(seconds):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
