"""The GPU check: one command, a few minutes, the numbers that matter on a GPU.

    make bench-gpu            # = python -m bench.gpu_check

On a machine with CUDA, with the SD-1.5-shaped fp16 model (generated here by bench.make_sd15
if missing; nothing is downloaded): spawn -> /readyz with its load phases (CUDA init and the
weights' copy to the device included), the first generation's cost against a warm one (and what the
THAW_WARM_INFERENCE warm-up takes off it), and micro-batching's gain at concurrency 8. Medians
of --runs spawns. Writes bench/results/gpu.md.

`--device cpu --tiny` runs the same script on the tiny model on a CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, free_port, median, python, spawn, stop, wait_status
from bench.make_sd15 import default_output, default_sd15_output

RESULTS = ROOT / "bench" / "results"


def cold_start(env: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """One spawn: ready, phases, first and second generation."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = spawn([python(), "-m", "handler"], {**env, "THAW_PORT": str(port)})
    try:
        ready = wait_status(f"{base}/readyz", started, 900, 0.05)
        with httpx.Client(base_url=base, timeout=600) as client:
            health = client.get("/health").json()
            timings = []
            for _ in range(3):
                begun = time.perf_counter()
                client.post("/generate", json=body).raise_for_status()
                timings.append(time.perf_counter() - begun)
        return {
            "ready": ready,
            "phases": {p["name"]: p["seconds"] for p in health["phases"]},
            "device": health["device"],
            "dtype": health["dtype"],
            "first": timings[0],
            "warm": median(timings[1:]),
        }
    finally:
        stop(proc)


def throughput(env: dict[str, str], body: dict[str, Any], concurrency: int, total: int) -> float:
    """Requests per second at `concurrency` against one warm server."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn([python(), "-m", "handler"], {**env, "THAW_PORT": str(port)})
    try:
        wait_status(f"{base}/readyz", time.monotonic(), 900, 0.05)
        httpx.post(f"{base}/generate", json=body, timeout=600).raise_for_status()

        async def burst() -> float:
            remaining = iter(range(total))
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:

                async def worker() -> None:
                    for _ in remaining:
                        (await client.post("/generate", json=body)).raise_for_status()

                begun = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return time.perf_counter() - begun

        return total / asyncio.run(burst())
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny model (a script check)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    if args.tiny:
        subprocess.run([python(), "infra/scripts/build_tiny_model.py"], cwd=ROOT, check=True)
        folder: Path = default_output()
        body = {"prompt": "a lighthouse", "num_inference_steps": 4, "width": 64, "height": 64}
        dtype = "float32"
    else:
        subprocess.run([python(), "-m", "bench.make_sd15"], cwd=ROOT, check=True)
        folder = default_sd15_output()
        body = {"prompt": "a lighthouse", "num_inference_steps": 20, "width": 512, "height": 512}
        dtype = "float16"
    env = {"THAW_MODEL": str(folder), "THAW_DEVICE": args.device, "THAW_DTYPE": dtype}
    starts, warmed = [], []
    for _ in range(args.runs):  # interleaved: without, then with the warm-up inference
        starts.append(cold_start(env, body))
        warmed.append(cold_start({**env, "THAW_WARM_INFERENCE": "1"}, body))
    phases = sorted({name for run in starts for name in run["phases"]})
    unbatched = throughput({**env, "THAW_QUEUE_SIZE": "32"}, body, 8, args.requests)
    batched = throughput(
        {**env, "THAW_QUEUE_SIZE": "32", "THAW_MAX_BATCH": "8"}, body, 8, args.requests
    )
    gpu = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    step = f"{body['num_inference_steps']} steps at {body['width']} px"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, GPU: {gpu}; "
        f"`python -m bench.gpu_check --device {args.device}{' --tiny' if args.tiny else ''}`; "
        f"{folder.name}, {dtype}, device {starts[0]['device']}; medians of {args.runs} spawns.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| spawn → /readyz | {median([r['ready'] for r in starts]):.2f} s |",
        *(
            f"| load phase `{name}` | "
            f"{median([r['phases'][name] for r in starts if r['phases'].get(name)] or [0]):.2f} s |"
            for name in phases
        ),
        f"| first generation ({step}) | {median([r['first'] for r in starts]):.3f} s |",
        f"| warm generation | {median([r['warm'] for r in starts]):.3f} s |",
        f"| first / warm | {median([r['first'] / r['warm'] for r in starts]):.2f}x |",
        f"| with THAW_WARM_INFERENCE=1: spawn → /readyz | "
        f"{median([r['ready'] for r in warmed]):.2f} s |",
        f"| with THAW_WARM_INFERENCE=1: load phase `warmup` | "
        f"{median([r['phases'].get('warmup', 0.0) for r in warmed]):.3f} s |",
        f"| with THAW_WARM_INFERENCE=1: first generation | "
        f"{median([r['first'] for r in warmed]):.3f} s |",
        f"| throughput at concurrency 8, no batching | {unbatched:.2f} images/s |",
        f"| throughput at concurrency 8, THAW_MAX_BATCH=8 | {batched:.2f} images/s "
        f"({batched / unbatched:.2f}x) |",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    name = "gpu-tiny-check.md" if args.tiny else "gpu.md"
    (RESULTS / name).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
