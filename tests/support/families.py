"""The tiny model of each pipeline family (infra/scripts/build_tiny_model.py), built into the
cache on first use, and what the family tests expect of each."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra" / "scripts"))

import build_tiny_model  # noqa: E402


def built(family: str, *, variant: str | None = None) -> Path:
    """The family's tiny model folder, built now if `make model` has not."""
    out = build_tiny_model.default_output(family, variant=variant)
    if not (out / build_tiny_model.MARKER).exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "infra/scripts/build_tiny_model.py"),
                "--family",
                family,
                *(["--variant", variant] if variant else []),
            ],
            check=True,
            timeout=600,
        )
    return out


@dataclass(frozen=True)
class Family:
    """What a family's tiny pipeline takes, as the tests expect it (read from diffusers'
    pipelines by hand, to check what thaw reads from them by itself)."""

    pipeline: str
    native: int  # px, both sides
    steps: int  # the call's default num_inference_steps
    takes: frozenset[str]
    refused: tuple[str, Any]  # a field it does not take, and a value for it
    extras: dict[str, Any] = field(default_factory=dict)  # fields it takes, batched together


BASE = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "width", "height"})
FAMILIES = {
    "sd": Family("StableDiffusionPipeline", 64, 50, BASE, ("max_sequence_length", 77)),
    "sdxl": Family("StableDiffusionXLPipeline", 128, 50, BASE, ("true_cfg_scale", 2.0)),
    "sd3": Family(
        "StableDiffusion3Pipeline",
        192,
        28,
        BASE | {"max_sequence_length"},
        ("true_cfg_scale", 2.0),
        {"max_sequence_length": 32},
    ),
    "flux": Family(
        "FluxPipeline",
        1024,
        28,
        BASE | {"true_cfg_scale", "max_sequence_length"},
        # Flux's call takes a negative prompt only for true CFG: alone, it is refused.
        ("negative_prompt", "blurry"),
        # True CFG runs only against a negative prompt: without one it is refused too.
        {"true_cfg_scale": 2.0, "max_sequence_length": 32, "negative_prompt": "blurry"},
    ),
}
