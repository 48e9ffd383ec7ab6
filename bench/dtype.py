"""Loading fp16 weights as fp16 versus upcasting them to float32, on the SD-1.5-sized model.

    python -m bench.dtype [--runs 2]

Spawns thaw with THAW_DTYPE=float16 and float32, interleaved, and prints time to ready, the
`build` phase and resident memory (medians).
"""

from __future__ import annotations

import argparse

from bench.make_sd15 import default_sd15_output
from bench.suite import Samples, thaw_cold_start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    samples = Samples()
    for _ in range(args.runs):
        for dtype in ("float16", "float32"):
            env = {"THAW_MODEL": str(default_sd15_output()), "THAW_DTYPE": dtype}
            thaw_cold_start(env, None, samples, dtype, "thaw")
    for dtype in ("float16", "float32"):
        print(
            f"{dtype}: ready {samples.med(f'{dtype}/thaw/ready'):.2f} s, "
            f"build {samples.med(f'{dtype}/phase/build'):.2f} s, "
            f"RSS {samples.med(f'{dtype}/thaw/rss_mib'):.0f} MiB"
        )


if __name__ == "__main__":
    main()
