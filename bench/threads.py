"""CPU thread policy: generation latency and /livez latency for each torch thread count, on an
idle machine and with one core taken by another process (a concurrent load, a neighbour).

    python -m bench.threads [--runs 5]

Writes bench/results/threads.md. The thread count is THAW_TORCH_THREADS; 0 means thaw's default.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time

import httpx

from bench.common import (
    ROOT,
    LatencyProbe,
    free_port,
    median,
    percentile,
    python,
    spawn,
    stop,
    wait_status,
)
from bench.make_sd15 import default_output

RESULTS = ROOT / "bench" / "results"
BODY = {"prompt": "a lighthouse", "num_inference_steps": 10, "width": 128, "height": 128}


def spin(stop_at: float) -> None:
    """Keep one core busy, as a concurrent load or a neighbouring process would."""
    while time.monotonic() < stop_at:
        sum(range(10_000))


def measure(threads: int, busy: bool, runs: int) -> tuple[float, float]:
    """Median generation seconds and worst /livez latency during the generations."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"THAW_MODEL": str(default_output()), "THAW_PORT": str(port)}
    env["THAW_TORCH_THREADS"] = str(threads)
    proc = spawn([python(), "-m", "handler"], env)
    spinner = None
    try:
        wait_status(f"{base}/readyz", time.monotonic(), 300, 0.05)
        httpx.post(f"{base}/generate", json=BODY, timeout=300).raise_for_status()
        if busy:
            spinner = multiprocessing.Process(target=spin, args=(time.monotonic() + 600,))
            spinner.start()
            time.sleep(0.5)
        seconds = []
        with LatencyProbe(f"{base}/livez", 0.02) as probe:
            for _ in range(runs):
                started = time.perf_counter()
                httpx.post(f"{base}/generate", json=BODY, timeout=300).raise_for_status()
                seconds.append(time.perf_counter() - started)
        return median(seconds), percentile(probe.samples, 99)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    BODY.update(width=args.size, height=args.size)
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, max(1, cores - 1), cores})
    rows = []
    for busy in (False, True):
        for threads in counts:
            gen, livez = measure(threads, busy, args.runs)
            rows.append((busy, threads, gen, livez))
            print(rows[-1], flush=True)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {cores} CPUs; "
        f"`python -m bench.threads --runs {args.runs} --size {args.size}`; tiny model, 10 steps "
        f"at {args.size} px, medians.",
        "",
        "| another process busy on one core | torch threads | generation | /livez p99 |",
        "|---|---|---|---|",
        *(
            f"| {'yes' if busy else 'no'} | {threads} "
            f"| {gen * 1000:.0f} ms | {livez * 1000:.0f} ms |"
            for busy, threads, gen, livez in rows
        ),
    ]
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    (RESULTS / f"threads-{args.size}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
