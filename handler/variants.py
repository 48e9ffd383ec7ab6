"""Weight variants: diffusers' names for one model's weights in another dtype.

`save_pretrained(variant="fp16")` writes `diffusion_pytorch_model.fp16.safetensors` (and
`model.fp16.safetensors`, shards `...fp16-00001-of-00002.safetensors`), and `from_pretrained`
reads them only when given the same `variant`; without it, a folder holding only fp16 files (a
download filtered to `*.fp16.*`, to halve it) fails to load. So thaw passes `THAW_VARIANT`, or,
when unset, the one variant a folder holds if it holds no plain weight files.
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.weights.sources import ModelNotFound

WEIGHT_FILE = re.compile(
    r"^(?:diffusion_pytorch_model|pytorch_model|model)(?:\.(?P<variant>\w+?))?"
    r"(?:-\d{5}-of-\d{5})?\.(?:safetensors|bin)$"
)


def folder_variants(folder: Path) -> tuple[bool, set[str]]:
    """Whether the components of a pipeline folder hold plain weight files, and which variants
    theirs are named for."""
    plain = False
    variants: set[str] = set()
    for path in folder.glob("*/*"):
        match = WEIGHT_FILE.match(path.name)
        if match is None:
            continue
        if match["variant"] is None:
            plain = True
        else:
            variants.add(match["variant"])
    return plain, variants


def choose_variant(folder: Path, setting: str | None) -> str | None:
    """The `variant` to load `folder` with: the setting; else the one variant of a folder with
    no plain weights; else None (plain files, diffusers' default). A setting the folder holds no
    file of, or several variants and no plain files without a setting, is `ModelNotFound`
    naming THAW_VARIANT and what the folder holds (diffusers would name one missing file)."""
    plain, variants = folder_variants(folder)
    held = ", ".join((["plain weight files"] if plain else []) + sorted(variants)) or "no weights"
    if setting is not None:
        if setting not in variants:
            raise ModelNotFound(
                f"THAW_VARIANT={setting}: {folder} holds no weight files of variant {setting} "
                f"(*.{setting}.safetensors); it holds: {held}"
            )
        return setting
    if not plain and len(variants) == 1:
        return variants.pop()
    if not plain and len(variants) > 1:
        raise ModelNotFound(
            f"{folder} holds only weight variants ({held}) and THAW_VARIANT is unset: set "
            "THAW_VARIANT to the one to load"
        )
    return None
