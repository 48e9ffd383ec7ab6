"""Lambda cold and warm paths under the real awslambdaric client and the Runtime API emulator.

    python -m bench.lambda_init [--runs 3]

Measured in one run, medians over the runs:
1. INIT (spawn -> the runtime's first /next): thaw's entry point (on-demand, background load;
   and lazy, no load) against a bare handler module (`bench.lambda_init.echo`): the ratios are
   what thaw adds to INIT, and what the background load's imports take from it (GIL);
2. the first on-demand invocation, waiting at spawn, to its image (INIT + load + generate),
   against the naive handler that loads in sequence at INIT (`bench.lambda_naive`);
3. warm /generate (64 px, 1 step) and warm-up ping round trips through the emulator, with the
   freeze/thaw between invocations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "tests" / "fixtures" / "events"
ENV = {"THAW_TORCH_THREADS": "1"}


def echo(event: Any, _context: Any) -> Any:
    """The baseline handler: nothing to import, nothing to load."""
    return event


def init_seconds(handler: str, env: dict[str, str]) -> float:
    from tests.support.lambda_emulator import RuntimeApiEmulator

    emulator = RuntimeApiEmulator()
    emulator.start(env, handler=handler)
    try:
        return emulator.wait_init(120)
    finally:
        emulator.close()


def naive_first_invoke(model: Path) -> float:
    """The first on-demand invocation, waiting at spawn, under the naive handler
    (`bench.lambda_naive`: imports and loads at INIT, in sequence)."""
    from tests.support.lambda_emulator import RuntimeApiEmulator

    generate = json.loads((EVENTS / "function_url_generate.json").read_text())
    emulator = RuntimeApiEmulator()
    first = emulator.submit(generate)
    spawned = time.monotonic()
    emulator.start({**ENV, "THAW_MODEL": str(model)}, handler="bench.lambda_naive.handler")
    try:
        first.wait(180)
        assert first.result["statusCode"] == 200, first.body
        return time.monotonic() - spawned
    finally:
        emulator.close()


def warm_paths(model: Path, invocations: int) -> dict[str, float]:
    from tests.support.lambda_emulator import RuntimeApiEmulator

    generate = json.loads((EVENTS / "function_url_generate.json").read_text())
    emulator = RuntimeApiEmulator()
    first = emulator.submit(generate)
    spawned = time.monotonic()
    emulator.start({**ENV, "THAW_MODEL": str(model)})
    try:
        first.wait(180)
        first_s = time.monotonic() - spawned
        assert first.result["statusCode"] == 200, first.body
        generate_s, ping_s = [], []
        for _ in range(invocations):
            started = time.monotonic()
            assert emulator.invoke(generate).result["statusCode"] == 200
            generate_s.append(time.monotonic() - started)
            started = time.monotonic()
            assert emulator.invoke({"thaw": "warmup"}).result["warm"] is True
            ping_s.append(time.monotonic() - started)
        return {
            "first_invoke_s": first_s,
            "warm_generate_s": statistics.median(generate_s),
            "warm_ping_s": statistics.median(ping_s),
        }
    finally:
        emulator.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--invocations", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "infra" / "scripts"))
    import build_tiny_model

    model = build_tiny_model.default_output()
    bare, thaw, lazy, warm, naive = [], [], [], [], []
    for _ in range(args.runs):  # interleaved, so both sides see the same machine load
        bare.append(init_seconds("bench.lambda_init.echo", ENV))
        naive.append(naive_first_invoke(model))
        thaw.append(
            init_seconds("handler.lambda_function.handler", {**ENV, "THAW_MODEL": str(model)})
        )
        warm.append(warm_paths(model, args.invocations))
        lazy.append(
            init_seconds(
                "handler.lambda_function.handler",
                {**ENV, "THAW_MODEL": str(model), "THAW_PRELOAD": "lazy"},
            )
        )
    bare_s, thaw_s = statistics.median(bare), statistics.median(thaw)
    print(f"INIT, bare handler            {bare_s:8.3f} s")
    print(f"INIT, thaw (on-demand)        {thaw_s:8.3f} s   ratio {thaw_s / bare_s:.2f}x")
    lazy_s = statistics.median(lazy)
    print(f"INIT, thaw (lazy: no load)    {lazy_s:8.3f} s   ratio {lazy_s / bare_s:.2f}x")
    for key in ("first_invoke_s", "warm_generate_s", "warm_ping_s"):
        print(f"{key:<29} {statistics.median(run[key] for run in warm):8.3f} s")
    first_s = statistics.median(run["first_invoke_s"] for run in warm)
    naive_s = statistics.median(naive)
    print(f"first_invoke_s, naive handler {naive_s:8.3f} s   thaw/naive {first_s / naive_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
