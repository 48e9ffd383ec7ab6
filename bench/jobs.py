"""The asynchronous path's cost against the synchronous one, and how late progress arrives.

    python -m bench.jobs [--runs 15] [--steps 20] [--poll-s 0.05]    (writes bench/results/jobs.md)

One server (`python -m handler`, the tiny model, jobs in a temporary folder) on loopback, warmed
up with one request of each kind. Then, per run and for the same work (the same body and seed):

- sync: one `POST /generate` answered with the PNG;
- poll: `POST /jobs` (202), `GET /jobs/{id}` every `--poll-s` until `succeeded`, then
  `GET /jobs/{id}/image`;
- sse: `POST /jobs`, `GET /jobs/{id}/events` read with httpx-sse until the job is final, then
  `GET /jobs/{id}/image`.

The three are interleaved, their order rotating run by run, over one keep-alive connection each
(one client). Medians; the overheads are medians of the per-run differences and ratios to the
synchronous request of the same run.

Progress latency: each progress event of the SSE streams carries `progress.at`, the wall-clock
time its step ended in the model's worker process; the client notes `time.time()` as it reads
the event. The first event of a stream is the job as it was when the stream opened (not a
change pushed to it) and is left out. Both clocks are this machine's.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from bench.common import (
    free_port,
    median,
    percentile,
    python,
    spawn,
    stop,
    wait_status,
    write_result,
)
from bench.make_sd15 import default_output

VARIANTS = ("sync", "poll", "sse")


@dataclass
class JobSamples:
    """Seconds per variant (one per run, in run order), and what the streams showed."""

    steps: int
    size: int
    poll_s: float
    seconds: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    submit: list[float] = field(default_factory=list)
    """`POST /jobs` to its 202, every job submitted."""
    polls: list[int] = field(default_factory=list)
    """`GET /jobs/{id}` requests per polled job."""
    lateness: list[float] = field(default_factory=list)
    """Per progress event: received minus `progress.at` (seconds)."""
    events: list[int] = field(default_factory=list)
    """Progress events received per stream (the first left out)."""
    server_steps: int = 0
    """Denoising steps per job as the server counts them (a scheduler may add some)."""


def body(steps: int, size: int) -> dict[str, Any]:
    return {
        "prompt": "a lighthouse",
        "num_inference_steps": steps,
        "width": size,
        "height": size,
        "seed": 7,
    }


def submit(client: httpx.Client, request: dict[str, Any], samples: JobSamples) -> str:
    started = time.perf_counter()
    answer = client.post("/jobs", json=request)
    samples.submit.append(time.perf_counter() - started)
    if answer.status_code != 202:
        raise RuntimeError(f"POST /jobs: {answer.status_code} {answer.text[:200]}")
    job_id: str = answer.json()["id"]
    return job_id


def image(client: httpx.Client, job_id: str) -> bytes:
    answer = client.get(f"/jobs/{job_id}/image", follow_redirects=True)
    answer.raise_for_status()
    return answer.content


def run_sync(client: httpx.Client, request: dict[str, Any], samples: JobSamples) -> bytes:
    answer = client.post("/generate", json=request)
    answer.raise_for_status()
    return answer.content


def run_poll(
    client: httpx.Client, request: dict[str, Any], samples: JobSamples, poll_s: float
) -> bytes:
    job_id = submit(client, request, samples)
    polls = 0
    while True:
        polls += 1
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] == "succeeded":
            break
        if job["status"] in ("failed", "canceled"):
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        time.sleep(poll_s)
    samples.polls.append(polls)
    samples.server_steps = job["progress"]["steps"]
    return image(client, job_id)


def run_sse(client: httpx.Client, request: dict[str, Any], samples: JobSamples) -> bytes:
    job_id = submit(client, request, samples)
    received = 0
    status = None
    with connect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
        for index, event in enumerate(source.iter_sse()):
            heard = time.time()
            job = event.json()
            status = job["status"]
            at = job["progress"]["at"]
            if index > 0 and event.event == "progress" and at is not None:
                samples.lateness.append(heard - at)
                received += 1
            if status in ("succeeded", "failed", "canceled"):
                break
    if status != "succeeded":
        raise RuntimeError(f"job {job_id} ended {status}")
    samples.events.append(received)
    return image(client, job_id)


def measure(
    env: dict[str, str], runs: int, *, steps: int = 20, size: int = 64, poll_s: float = 0.05
) -> JobSamples:
    """Start one server, warm it up, and time `runs` rounds of the three variants."""
    samples = JobSamples(steps, size, poll_s)
    request = body(steps, size)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="thaw-bench-jobs-") as jobs_dir:
        proc = spawn(
            [python(), "-m", "handler"],
            {
                **env,
                "THAW_HOST": "127.0.0.1",
                "THAW_PORT": str(port),
                "THAW_JOBS_DIR": jobs_dir,
                "THAW_LOG_LEVEL": "warning",
            },
        )
        try:
            wait_status(f"{base}/readyz", time.monotonic(), 600, 0.05)
            with httpx.Client(base_url=base, timeout=120) as client:
                expected = run_sync(client, request, samples)  # warm-up: one of each
                warmup = JobSamples(steps, size, poll_s)
                polled = run_poll(client, request, warmup, poll_s)
                for check in (polled, run_sse(client, request, warmup)):
                    if check != expected:
                        raise RuntimeError("a job's image differs from /generate's")
                kinds: dict[str, Callable[[], bytes]] = {
                    "sync": lambda: run_sync(client, request, samples),
                    "poll": lambda: run_poll(client, request, samples, poll_s),
                    "sse": lambda: run_sse(client, request, samples),
                }
                for run in range(runs):
                    for offset in range(len(VARIANTS)):
                        name = VARIANTS[(run + offset) % len(VARIANTS)]
                        started = time.perf_counter()
                        kinds[name]()
                        samples.seconds[name].append(time.perf_counter() - started)
        finally:
            stop(proc)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def table(samples: JobSamples) -> list[str]:
    """The markdown tables: the three paths, then progress latency."""
    steps, size, poll_s = samples.steps, samples.size, samples.poll_s
    sync = samples.seconds["sync"]
    rows = [
        f"| async jobs vs POST /generate (tiny model, {steps} steps, {size} px; "
        f"{len(sync)} runs) | median | p95 | overhead vs sync (paired median) |",
        "|---|---|---|---|",
        f"| POST /generate (sync) | {ms(median(sync))} | {ms(percentile(sync, 95))} | — |",
    ]
    labels = {
        "poll": f"POST /jobs + GET /jobs/{{id}} every {poll_s * 1000:.0f} ms + GET image",
        "sse": "POST /jobs + /jobs/{id}/events (httpx-sse) + GET image",
    }
    for name, label in labels.items():
        found = samples.seconds[name]
        extra = [a - s for a, s in zip(found, sync, strict=True)]
        ratio = [a / s for a, s in zip(found, sync, strict=True)]
        rows.append(
            f"| {label} | {ms(median(found))} | {ms(percentile(found, 95))} "
            f"| {median(extra) * 1000:+.1f} ms ({median(ratio):.2f}x) |"
        )
    late = samples.lateness
    rows += [
        "",
        "| progress events over SSE | value |",
        "|---|---|",
        f"| POST /jobs → 202: median / p95 | {ms(median(samples.submit))} / "
        f"{ms(percentile(samples.submit, 95))} |",
        f"| GET /jobs/{{id}} per polled job: median | {median(samples.polls):g} |",
        f"| progress events per stream: median, of {samples.server_steps} steps "
        f"| {median(samples.events):g} |",
        f"| step ended in the worker → event read by the client: p50 / p95 / max "
        f"({len(late)} events) | {ms(median(late))} / {ms(percentile(late, 95))} / "
        f"{ms(max(late))} |",
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--poll-s", type=float, default=0.05)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model = args.model or Path(os.environ.get("THAW_MODEL", default_output()))
    load_before = os.getloadavg()[0]
    samples = measure(
        {"THAW_MODEL": str(model)}, args.runs, steps=args.steps, size=args.size, poll_s=args.poll_s
    )
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, no GPU; `python -m bench.jobs --runs {args.runs} "
        f"--steps {args.steps} --size {args.size} --poll-s {args.poll_s:g}`; one server "
        "(`python -m handler`, jobs in a local folder) on loopback, the three paths interleaved "
        f"run by run. Load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
        "after (whatever else the machine ran counts in it).",
        "",
        *table(samples),
    ]
    write_result("jobs.md", lines)


if __name__ == "__main__":
    main()
