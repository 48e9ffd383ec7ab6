"""The core issue's targets, measured against baselines in one run (medians, interleaved).

    python -m bench.core [--runs 5]

1. spawn -> first /livez: thaw vs a bare FastAPI app (target <= 1.10x), and vs an app that
   imports torch/diffusers and loads at import;
2. spawn -> ready: thaw's /readyz vs a plain script that imports and loads (target <= 1.0x);
3. worst /livez latency while the model loads, and while an inference runs (target <= 50 ms);
4. a warm /generate vs calling the pipeline directly for the same work (target <= 1.05x).
Writes bench/results/core.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import (
    ROOT,
    LatencyProbe,
    failed,
    free_port,
    median,
    percentile,
    python,
    spawn,
    stop,
    wait_status,
)

STEPS, SIZE = 20, 64


def uvicorn_app(module: str, env: dict[str, str]) -> tuple[float, float]:
    port = free_port()
    started = time.monotonic()
    proc = spawn(
        [python(), "-m", "uvicorn", module, "--port", str(port), "--log-level", "warning"], env
    )
    try:
        return wait_status(f"http://127.0.0.1:{port}/livez", started), 0.0
    finally:
        stop(proc)


def thaw_start(
    env: dict[str, str], probe_interval: float | None
) -> tuple[float, float, list[float]]:
    """Spawn thaw; return (to first /livez, to /readyz 200, /livez latencies while loading).

    /readyz is polled every 50 ms (a probe is not free: each answer takes the GIL from the
    loader). With `probe_interval`, /livez is also polled that often and its latency recorded;
    those runs are kept apart from the ones that time readiness.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = spawn([python(), "-m", "handler"], {**env, "THAW_PORT": str(port)})
    try:
        live = wait_status(f"{base}/livez", started)
        if probe_interval is None:
            return live, wait_status(f"{base}/readyz", started, interval=0.05), []
        with LatencyProbe(f"{base}/livez", probe_interval) as probe:
            ready = wait_status(f"{base}/readyz", started, interval=0.05)
        return live, ready, probe.samples
    finally:
        stop(proc)


def plain_load(env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = spawn([python(), "-m", "bench.plain_load"], env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.monotonic() - started
    proc.wait(60)
    if line.strip() != b"loaded":
        raise RuntimeError("plain load failed")
    return elapsed


def warm_path(env: dict[str, str], repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Paired samples: each warm /generate is followed by the same work called directly in a
    second, already loaded process. Returns (http seconds, direct seconds, /livez latencies
    while generations run)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = spawn([python(), "-m", "handler"], {**env, "THAW_PORT": str(port)})
    baseline = subprocess.Popen(
        [python(), "-m", "bench.direct", str(STEPS), str(SIZE)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert baseline.stdin is not None
    assert baseline.stdout is not None
    body = {"prompt": "a lighthouse", "num_inference_steps": STEPS, "width": SIZE, "height": SIZE}
    try:
        if baseline.stdout.readline().strip() != "ready":
            raise RuntimeError("direct baseline failed to load")
        wait_status(f"{base}/readyz", time.monotonic(), interval=0.05)
        http_s: list[float] = []
        direct_s: list[float] = []
        with httpx.Client(base_url=base, timeout=120) as client:
            client.post("/generate", json={**body, "seed": 1}).raise_for_status()
            for _ in range(repeats):
                started = time.perf_counter()
                client.post("/generate", json={**body, "seed": 1}).raise_for_status()
                http_s.append(time.perf_counter() - started)
                baseline.stdin.write("go\n")
                baseline.stdin.flush()
                direct_s.append(float(baseline.stdout.readline()))
            with LatencyProbe(f"{base}/livez", 0.02) as probe:
                for _ in range(repeats):
                    client.post("/generate", json={**body, "seed": 1}).raise_for_status()
        return http_s, direct_s, probe.samples
    finally:
        baseline.stdin.close()
        baseline.wait(30)
        stop(server)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    sys_path = str(Path.home() / ".cache/thaw/tiny-sd")
    env = {"THAW_MODEL": args.model or os.environ.get("THAW_MODEL", sys_path)}

    bare, naive, thaw_live, thaw_ready, plain = [], [], [], [], []
    load_latency: list[float] = []
    for run in range(args.runs):  # interleaved, so drift hits every variant alike
        bare.append(uvicorn_app("bench.bare_app:app", env)[0])
        live, ready, _ = thaw_start(env, probe_interval=None)
        thaw_live.append(live)
        thaw_ready.append(ready)
        load_latency.extend(thaw_start(env, probe_interval=0.02)[2])
        plain.append(plain_load(env))
        naive.append(uvicorn_app("bench.import_load_app:app", env)[0])
        print(
            f"run {run + 1}: bare {bare[-1]:.2f}s thaw live {live:.2f}s ready {ready:.2f}s "
            f"plain {plain[-1]:.2f}s import-load {naive[-1]:.2f}s",
            flush=True,
        )

    warm, direct_s, infer_latency = warm_path(env, args.repeats)
    paired = [w / d for w, d in zip(warm, direct_s, strict=True)]
    rows = [
        ("spawn → first /livez, bare FastAPI app", f"{median(bare):.3f} s", "1.00x"),
        (
            "spawn → first /livez, thaw (background preload)",
            f"{median(thaw_live):.3f} s",
            f"{median(thaw_live) / median(bare):.2f}x (target ≤ 1.10x)",
        ),
        (
            "spawn → first /livez, app that loads at import",
            f"{median(naive):.3f} s",
            f"{median(naive) / median(bare):.2f}x",
        ),
        ("spawn → loaded, plain import-and-load script", f"{median(plain):.3f} s", "1.00x"),
        (
            "spawn → /readyz 200, thaw",
            f"{median(thaw_ready):.3f} s",
            f"{median(thaw_ready) / median(plain):.2f}x (target ≤ 1.00x)",
        ),
        (
            "/livez latency while loading: p50 / p99 / max",
            f"{ms(median(load_latency))} / {ms(percentile(load_latency, 99))} / "
            f"{ms(max(load_latency))}",
            f"{len(load_latency)} probes, {failed(load_latency)} failed",
        ),
        (
            "/livez latency while generating: p50 / p99 / max",
            f"{ms(median(infer_latency))} / {ms(percentile(infer_latency, 99))} / "
            f"{ms(max(infer_latency))}",
            f"{len(infer_latency)} probes, {failed(infer_latency)} failed (target max ≤ 50 ms)",
        ),
        (f"pipeline called directly ({STEPS} steps, {SIZE}px, PNG)", ms(median(direct_s)), "1.00x"),
        (
            "warm POST /generate, same work",
            ms(median(warm)),
            f"{median(paired):.3f}x, median of {len(paired)} paired ratios (target ≤ 1.05x)",
        ),
    ]
    header = (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"`python -m bench.core --runs {args.runs}`; medians of {args.runs} interleaved runs.\n\n"
    )
    table = "| measure | value | ratio |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows
    )
    print()
    print(header + table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "core.md").write_text(header + table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
