"""Where a cold start's imports go: `python -X importtime` over a model load, by package.

    python -m bench.imports [--runs 3] [--family sd]

Runs a fresh interpreter that does what thaw's model worker does on a load (import torch and
diffusers, `DiffusionPipeline.from_pretrained` on a tiny model of the family), under
`-X importtime`, and sums each module's own import time by top-level package, and separately the
subtrees that diffusers pulls in before any model is read (`torch._dynamo` through
`diffusers.utils.torch_utils`, `transformers` through `diffusers.quantizers`). Medians over
`--runs` fresh interpreters. Writes bench/results/imports.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.common import ROOT, median
from bench.make_sd15 import default_output

RESULTS = ROOT / "bench" / "results" / "imports.md"
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")
LOAD = """
import torch
from diffusers import DiffusionPipeline
DiffusionPipeline.from_pretrained({path!r}, local_files_only=True)
"""
SUBTREES = {
    "torch (itself)": "torch",
    "torch._dynamo (via diffusers.utils.torch_utils)": "torch._dynamo",
    "transformers (via diffusers.quantizers)": "transformers",
    "sympy (via torch._dynamo)": "sympy",
}


def profile(path: Path) -> tuple[dict[str, float], dict[str, float], float]:
    """One fresh interpreter's load: self seconds by top package, subtree seconds by root
    module (first import only), and the total."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", LOAD.format(path=str(path))],
        cwd=ROOT,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
        capture_output=True,
        text=True,
        check=True,
    )
    by_package: dict[str, float] = defaultdict(float)
    subtrees: dict[str, float] = {}
    total = 0.0
    for line in done.stderr.splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        own, cumulative, _, module = match.groups()
        by_package[module.split(".")[0]] += int(own) / 1e6
        total += int(own) / 1e6
        if module in SUBTREES.values() and module not in subtrees:
            subtrees[module] = int(cumulative) / 1e6
    return dict(by_package), subtrees, total


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--family", default="sd")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = default_output(args.family)
    runs = [profile(path) for _ in range(args.runs)]
    totals = [total for _, _, total in runs]
    packages = sorted(
        {name for by_package, _, _ in runs for name in by_package},
        key=lambda name: -median([r[0].get(name, 0.0) for r in runs]),
    )
    lines = [
        "# Where a cold start's imports go",
        "",
        f"`python -m bench.imports --runs {args.runs} --family {args.family}`: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "a fresh interpreter imports torch and diffusers and loads the tiny model under "
        "`-X importtime` (which adds its own overhead: compare shares, not absolute times "
        "with other tables). Medians of the runs.",
        "",
        f"Total import time: {median(totals):.2f} s.",
        "",
        "| package | own import time | share |",
        "|---|---|---|",
    ]
    for name in packages[:15]:
        seconds = median([r[0].get(name, 0.0) for r in runs])
        lines.append(f"| {name} | {seconds:.3f} s | {seconds / median(totals):.0%} |")
    lines += ["", "| subtree (first import, cumulative) | seconds |", "|---|---|"]
    for label, module in SUBTREES.items():
        seconds = median([r[1].get(module, 0.0) for r in runs])
        lines.append(f"| {label} | {seconds:.3f} s |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
