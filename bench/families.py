"""Cold start per pipeline family: the tiny model of each (Stable Diffusion, SDXL, SD3, Flux)
served by thaw, against the plain script loading the same folder, in one run.

    python -m bench.families [--runs 2]      (writes bench/results/families.md)

For each family and run, interleaved: thaw (`python -m handler`, background preload) from spawn
to first /livez, each load phase, /readyz and a first image (64 px, 2 steps), then the plain
script (import, `from_pretrained`, done). Medians; the ratio is the median of the per-run ratios.
`make bench` (bench.suite) runs it with its own runs and adds the table to suite.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from bench.common import ROOT, compile_bytecode, python, write_result
from bench.suite import Samples, fmt, paired_ratio, plain_load, thaw_cold_start
from runtime.observe.phases import PhaseRecorder
from runtime.weights import pagecache

FAMILIES = ("sd", "sdxl", "sd3", "flux")
IMAGE = {"num_inference_steps": 2, "width": 64, "height": 64}


def family_folder(family: str) -> Path:
    from bench.make_sd15 import default_output

    return default_output(family)


def build_all() -> None:
    subprocess.run(
        [python(), "infra/scripts/build_tiny_model.py", "--family", *FAMILIES],
        cwd=ROOT,
        check=True,
    )


def measure(runs: int) -> Samples:
    samples = Samples()
    for _ in range(runs):
        for family in FAMILIES:
            folder = family_folder(family)
            env = {"THAW_MODEL": str(folder)}
            pagecache.prefetch(folder, PhaseRecorder())  # a warm page cache for both
            thaw_cold_start(env, IMAGE, samples, family, "thaw")
            plain_load(env, samples, family)
    return samples


def family_table(samples: Samples) -> list[str]:
    """The markdown table, one row a family."""
    rows = [
        "| family (tiny) | pipeline | first /livez | load phases (median s) | thaw /readyz "
        "| plain script loaded | ratio | first image (64 px, 2 steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        index = json.loads((family_folder(family) / "model_index.json").read_text())
        phases = [
            name.split("/")[-1] for name in samples.values if name.startswith(f"{family}/phase/")
        ]
        phase_text = ", ".join(f"{p} {fmt(samples.med(f'{family}/phase/{p}'))}" for p in phases)
        rows.append(
            f"| {family} | {index['_class_name']} | {fmt(samples.med(f'{family}/thaw/livez'))} "
            f"| {phase_text} | {fmt(samples.med(f'{family}/thaw/ready'))} "
            f"| {fmt(samples.med(f'{family}/plain/ready'))} "
            f"| {paired_ratio(samples, f'{family}/thaw/ready', f'{family}/plain/ready')} "
            f"| {fmt(samples.med(f'{family}/thaw/first_image'))} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    compile_bytecode()
    build_all()
    samples = measure(args.runs)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `python -m bench.families --runs {args.runs}`; "
        "medians; page cache warm.",
        "",
        *family_table(samples),
    ]
    write_result("families.md", lines)


if __name__ == "__main__":
    main()
