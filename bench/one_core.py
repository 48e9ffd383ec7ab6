"""One core: spawn to listening and to ready with every process pinned to one CPU.

    python -m bench.one_core [--runs 3]

Many places thaw runs have one CPU or less (a Lambda function under 1,769 MB, a pod with
`limits.cpu: 1`). Each variant is started with its CPU affinity set to CPU 0 (as `taskset -c 0`
would; its children inherit it), interleaved run by run, and timed from spawn to the first /livez
200 and to the first /readyz 200 (the bare app and the plain script have only one of the two):

- a bare FastAPI app under uvicorn (the floor for listening);
- `uvicorn handler.app:app` (the model loads from the lifespan);
- `python -m handler` as documented (THAW_WORKER_START=auto: on one CPU the worker starts once
  the server listens);
- `python -m handler` with THAW_WORKER_START=early (the worker imports beside the server);
- a plain script that imports torch and diffusers and loads the model (spawn to loaded).

Each server starts right after a bare app of its own (the bare row pools those, one per server
per run), and its listen ratio is the median of the pairs; the ready ratio is of medians. The
probing client (this process) runs on the other CPUs where there are any. Writes
bench/results/one-core.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, compile_bytecode, free_port, median, python, stop, wait_status
from bench.make_sd15 import default_output

CPU = 0
RESULTS = ROOT / "bench" / "results" / "one-core.md"


def pinned(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {CPU}),
    )


def served(args: Sequence[str], env: dict[str, str], *, ready: bool) -> tuple[float, float | None]:
    """Spawn a server on a free port: seconds to the first /livez 200 and to /readyz 200."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "THAW_HOST": "127.0.0.1", "THAW_PORT": str(port)}
    argv = [a.replace("{port}", str(port)) for a in args]
    started = time.monotonic()
    proc = pinned(argv, env)
    try:
        live = wait_status(f"{base}/livez", started)
        return live, wait_status(f"{base}/readyz", started, interval=0.05) if ready else None
    finally:
        stop(proc)


def plain(env: dict[str, str]) -> tuple[float | None, float]:
    started = time.monotonic()
    proc = pinned([python(), "-m", "bench.plain_load"], env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.monotonic() - started
    proc.wait(60)
    if line.strip() != b"loaded":
        raise RuntimeError("plain load failed")
    return None, elapsed


def uvicorn_args(app: str) -> list[str]:
    return [python(), "-m", "uvicorn", app, "--port", "{port}", "--log-level", "warning"]


Variant = Callable[[dict[str, str]], tuple[float | None, float | None]]

VARIANTS: dict[str, Variant] = {
    "bare FastAPI app": lambda env: served(uvicorn_args("bench.bare_app:app"), env, ready=False),
    "uvicorn handler.app:app": lambda env: served(uvicorn_args("handler.app:app"), env, ready=True),
    "python -m handler (auto)": lambda env: served(
        [python(), "-m", "handler"], {**env, "THAW_WORKER_START": "auto"}, ready=True
    ),
    "python -m handler (early)": lambda env: served(
        [python(), "-m", "handler"], {**env, "THAW_WORKER_START": "early"}, ready=True
    ),
    "plain script (import + load)": plain,
}


Found = dict[str, tuple[list[float], list[float], list[float]]]
"""Per variant: listen seconds, ready seconds, and listen over the bare app's just before it."""


def measure(env: dict[str, str], runs: int) -> Found:
    """Each served variant runs right after a bare app of its own (the pair's ratio is the
    figure: what ran before a start, a model load or a process exit, moves both alike)."""
    bare = VARIANTS["bare FastAPI app"]
    found: Found = {name: ([], [], []) for name in VARIANTS}
    with probing_elsewhere():
        run_pairs(env, runs, bare, found)
    return found


@contextmanager
def probing_elsewhere() -> Iterator[None]:
    """This process (the probing client) off the servers' CPU while it times them."""
    mine = os.sched_getaffinity(0)
    others = mine - {CPU}
    if others:
        os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


def run_pairs(env: dict[str, str], runs: int, bare: Variant, found: Found) -> None:
    for _ in range(runs):
        for name, variant in VARIANTS.items():
            if name == "bare FastAPI app":
                continue
            floor = None
            if name != "plain script (import + load)":
                floor, _ = bare(env)
                assert floor is not None
                found["bare FastAPI app"][0].append(floor)
            live, ready = variant(env)
            if live is not None:
                found[name][0].append(live)
                if floor is not None:
                    found[name][2].append(live / floor)
            if ready is not None:
                found[name][1].append(ready)


def table(found: Found) -> list[str]:
    plain_ready = median(found["plain script (import + load)"][1])
    rows = [
        "| variant | listen (median) | vs the bare app just before (median of pairs) "
        "| ready (median) | vs plain script |",
        "|---|---|---|---|---|",
    ]
    for name, (lives, readies, ratios) in found.items():
        live = median(lives) if lives else None
        ready = median(readies) if readies else None
        ratio = (
            "1.00x" if name == "bare FastAPI app" else (f"{median(ratios):.2f}x" if ratios else "")
        )
        rows.append(
            f"| {name} "
            f"| {'' if live is None else f'{live:.3f} s'} "
            f"| {ratio if live is not None else ''} "
            f"| {'' if ready is None else f'{ready:.2f} s'} "
            f"| {'' if ready is None else f'{ready / plain_ready:.2f}x'} |"
        )
    return rows


def report(found: Found, runs: int, model: str) -> str:
    lines = [
        "# One core: spawn to listening and to ready, pinned to CPU 0",
        "",
        f"`python -m bench.one_core --runs {runs}`, {runs} interleaved runs per variant, "
        f"model `{model}`, {platform.machine()}, {os.cpu_count()} CPUs on the machine, every "
        "variant (and its children) pinned to one; each server started right after a bare app "
        "of its own, and its listen ratio is the median of those pairs.",
        "",
        *table(found),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    compile_bytecode()
    model = os.environ.get("THAW_MODEL") or str(default_output())
    env = {"THAW_MODEL": model, "THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "warning"}
    found = measure(env, args.runs)
    text = report(found, args.runs, model)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
