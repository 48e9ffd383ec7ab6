"""Container start to the first /livez and to /readyz, against the same server started outside the
container, in one run (`make bench-image`).

    python -m bench.image_start [--image thaw:cpu] [--runs 3]

Each run starts the image (`run --detach`, the host's network, loopback only) and, alternately,
`python -m handler` from this checkout's virtual environment on the same tiny model with the
image's environment; both are timed from the moment the start command is issued, polling every
10 ms. The container's figure includes the engine's own work (creating the container, mounting
its layers, starting runc); the ratio says what the container costs on top of the process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from infra.image.engine import Engine, detect
from tests.image.containers import (
    SMALL_CPU_ENV,
    Container,
    StartTimeline,
    free_port,
    http_env,
    watch_start,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "scripts"))

import build_tiny_model  # noqa: E402

# What the image's ENV sets that changes how the server starts (see the Dockerfile).
IMAGE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def in_container(engine: Engine, image: str) -> StartTimeline:
    port = free_port()
    container = Container(engine, image, http_env(port), ["--network", "host"])
    try:
        container.start()
        return watch_start(
            f"http://127.0.0.1:{port}", container.started_at, alive=lambda: container.running
        )
    finally:
        container.remove()


def outside(model: Path) -> StartTimeline:
    port = free_port()
    env = {
        **os.environ,
        **IMAGE_ENV,
        **SMALL_CPU_ENV,
        "THAW_HOST": "127.0.0.1",
        "THAW_PORT": str(port),
        "THAW_MODEL": str(model),
    }
    started_at = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "handler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return watch_start(
            f"http://127.0.0.1:{port}", started_at, alive=lambda: proc.poll() is None
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="thaw:cpu")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    engine = detect()
    model = build_tiny_model.default_output()
    if not (model / build_tiny_model.MARKER).exists():
        raise SystemExit("no tiny model: run `make model`")

    runs: dict[str, list[StartTimeline]] = {"container": [], "outside": []}
    # One warm-up of each (page cache, the engine's own first start), not counted.
    in_container(engine, args.image)
    outside(model)
    for _ in range(args.runs):
        runs["container"].append(in_container(engine, args.image))
        runs["outside"].append(outside(model))

    print(f"\n{engine.name}, image {args.image}, {args.runs} interleaved starts each, medians\n")
    print("| start | → /livez (s) | → /readyz (s) | each run → /livez, /readyz (s) |")
    print("|---|---:|---:|---|")
    medians = {}
    for name, timelines in runs.items():
        livez = median([t.livez_s for t in timelines])
        readyz = median([t.readyz_s for t in timelines])
        medians[name] = (livez, readyz)
        each = "; ".join(f"{t.livez_s:.2f}, {t.readyz_s:.2f}" for t in timelines)
        print(f"| {name} | {livez:.2f} | {readyz:.2f} | {each} |")
    (c_live, c_ready), (o_live, o_ready) = medians["container"], medians["outside"]
    print(
        f"\ncontainer / outside: /livez {c_live / o_live:.2f}x "
        f"(+{c_live - o_live:.2f} s), /readyz {c_ready / o_ready:.2f}x (+{c_ready - o_ready:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
