"""handler.variants: which weight variant a pipeline folder is loaded with."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.variants import choose_variant, folder_variants


def folder(tmp_path: Path, *files: str) -> Path:
    for name in ("model_index.json", "unet/config.json", *files):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "setting", "chosen"),
    [
        # What `save_pretrained(variant="fp16")` writes, and a download filtered to it.
        (
            [
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "text_encoder/model.fp16.safetensors",
            ],
            None,
            "fp16",
        ),
        # Sharded: the variant before the shard number.
        (
            [
                "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
            ],
            None,
            "fp16",
        ),
        # Plain files too (a full download): diffusers' default, the plain ones.
        (
            ["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.bin"],
            None,
            None,
        ),
        (["unet/diffusion_pytorch_model-00001-of-00002.safetensors"], None, None),
        # The setting wins over the plain files (two variants and no plain files, or a setting
        # the folder holds none of, are refused: test_families_review).
        (
            ["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.bin"],
            "fp16",
            "fp16",
        ),
    ],
)
def test_the_variant_chosen(
    tmp_path: Path, files: list[str], setting: str | None, chosen: str | None
) -> None:
    assert choose_variant(folder(tmp_path, *files), setting) == chosen


def test_config_files_and_the_index_are_not_weights(tmp_path: Path) -> None:
    path = folder(tmp_path, "unet/diffusion_pytorch_model.safetensors.index.json")
    assert folder_variants(path) == (False, set())
