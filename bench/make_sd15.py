"""Generate a random-weight pipeline shaped like Stable Diffusion 1.5, saved in fp16 (~2 GB).

Same architecture and tensor shapes as SD 1.5 (UNet 860M parameters, the SD VAE, a CLIP ViT-L/14
text encoder) so load and transfer costs are realistic; the weights are noise and so are the
images. Built from scratch; nothing is downloaded; never committed. The one builder
(infra/scripts/build_tiny_model.py) does the work: this is its `--family sd --full`.

    python -m bench.make_sd15 [--out DIR]     (default: $THAW_CACHE_DIR/sd15-random-fp16)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra" / "scripts"))

from build_tiny_model import MARKER, default_output
from build_tiny_model import main as build_main

__all__ = ["MARKER", "default_output", "default_sd15_output", "main"]


def default_sd15_output() -> Path:
    return default_output("sd", full=True)


def main(argv: list[str] | None = None) -> int:
    return build_main(["--family", "sd", "--full", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
