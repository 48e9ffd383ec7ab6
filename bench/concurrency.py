"""What THAW_MAX_CONCURRENCY buys: throughput of the default worker process running one
generation at a time against two at once, and against one generation given both cores.

    python -m bench.concurrency [--runs 3] [--requests 8] [--side 128] [--steps 20]

Each variant is a fresh server on the tiny model; variants are interleaved run by run, and
the table reports medians of requests per second (4 clients, every request the same size) and
their ratio to the default (one generation, thaw's default torch threads). Writes
bench/results/concurrency.md.
"""

from __future__ import annotations

import argparse
import os
import platform

from bench.common import ROOT, median
from bench.make_sd15 import default_output
from bench.suite import throughput

VARIANTS = {
    "1 at a time, default threads (cores - 1)": {},
    "2 at once, default threads each": {"THAW_MAX_CONCURRENCY": "2"},
    "1 at a time, THAW_TORCH_THREADS = all cores": {"THAW_TORCH_THREADS": str(os.cpu_count())},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    body = {
        "prompt": "a lighthouse",
        "num_inference_steps": args.steps,
        "width": args.side,
        "height": args.side,
    }
    env = {"THAW_MODEL": str(default_output())}
    found: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.runs):
        for name, extra in VARIANTS.items():
            figures = throughput({**env, **extra}, (4,), args.requests, body=body)
            found[name].append(figures[4]["rps"])
    base = median(found[next(iter(VARIANTS))])
    lines = [
        f"THAW_MAX_CONCURRENCY on {platform.machine()}, {os.cpu_count()} cores: tiny model, "
        f"{args.steps} steps at {args.side} px, {args.requests} requests from 4 clients, "
        f"medians of {args.runs} interleaved runs (`python -m bench.concurrency`).",
        "",
        "| variant | requests/s | vs default |",
        "|---|---|---|",
    ]
    for name, values in found.items():
        lines.append(f"| {name} | {median(values):.2f} | {median(values) / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "concurrency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
