"""Build thaw's embedded default model: a tiny random-weight Stable Diffusion pipeline.

Nothing is downloaded. The script writes its own byte-level CLIP vocabulary, builds a small
UNet, VAE and CLIP text encoder with fixed random weights, and saves everything with
``save_pretrained`` so the service loads it through the real ``from_pretrained`` path.

    python infra/scripts/build_tiny_model.py [--out DIR] [--force]

The default output is ``$THAW_CACHE_DIR/tiny-sd`` (``~/.cache/thaw/tiny-sd``), outside git,
which is where the service looks when THAW_MODEL is unset.
A ``.complete`` marker is written last, so a half-written folder is never taken for a model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The pipeline is seeded so every machine builds the same weights (and tests can compare images).
SEED = 20261128
MARKER = ".complete"


def default_output() -> Path:
    """The folder the service loads when THAW_MODEL is unset (see runtime.settings)."""
    base = os.environ.get("THAW_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "thaw"
    )
    return Path(base) / "tiny-sd"


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table that byte-level BPE vocabularies use."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tokenizer_files(folder: Path) -> int:
    """Write vocab.json and merges.txt for a byte-level CLIP tokenizer; return the vocab size."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    # An empty merge list is enough: every word tokenizes to its bytes.
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(vocab)


def build(out: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory(prefix="thaw-tokenizer-") as tmp:
        vocab_size = write_tokenizer_files(Path(tmp))
        # Without model_max_length a self-made CLIPTokenizer fails with OverflowError.
        tokenizer = CLIPTokenizer(
            vocab_file=str(Path(tmp) / "vocab.json"),
            merges_file=str(Path(tmp) / "merges.txt"),
            model_max_length=77,
        )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        # Four blocks give Stable Diffusion's 8x latent scale, so sizes behave as they do there.
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=32,
        # Attention over every latent pixel makes decoding quadratic in the image size.
        mid_block_add_attention=False,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def share(folder: Path) -> None:
    """Give the model the modes the umask allows, as any file written in place would have.

    mkdtemp makes the staging folder 0700 and safetensors writes its files 0600, so a model
    built by root (a Dockerfile's RUN) was unreadable by the image's own user and Lambda's.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    out: Path = args.out or default_output()
    if (out / MARKER).exists() and not args.force:
        print(f"tiny model already built: {out}")
        return 0
    # Build beside the target, then swap in: a crash never leaves a folder that looks complete.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-sd-", dir=out.parent))
    try:
        build(staging)
        (staging / MARKER).write_text("ok\n", encoding="utf-8")
        share(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"tiny model built: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
