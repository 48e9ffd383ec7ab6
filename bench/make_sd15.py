"""Generate a random-weight pipeline shaped like Stable Diffusion 1.5, saved in fp16 (~2 GB).

Same architecture and tensor shapes as SD 1.5 (UNet 860M parameters, the SD VAE, a CLIP ViT-L/14
text encoder) so load and transfer costs are realistic; the weights are noise and so are the
images. Built from scratch; nothing is downloaded; never committed.

    python -m bench.make_sd15 [--out DIR]     (default: $THAW_CACHE_DIR/sd15-random-fp16)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra" / "scripts"))

from build_tiny_model import MARKER, default_output, write_tokenizer_files


def default_sd15_output() -> Path:
    return default_output().parent / "sd15-random-fp16"


def build(out: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(15)
    with tempfile.TemporaryDirectory(prefix="thaw-tokenizer-") as tmp:
        vocab_size = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(
            vocab_file=str(Path(tmp) / "vocab.json"),
            merges_file=str(Path(tmp) / "merges.txt"),
            model_max_length=77,
        )
    # CLIP ViT-L/14's text tower, with the vocabulary this tokenizer has.
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(vocab_size, 49408),
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).half()
    unet = UNet2DConditionModel(  # the SD 1.5 UNet configuration
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
    ).half()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    ).half()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out: Path = args.out or default_sd15_output()
    if (out / MARKER).exists():
        print(f"already built: {out}")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sd15-", dir=out.parent))
    started = time.monotonic()
    try:
        build(staging)
        (staging / MARKER).write_text("ok\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"built {out} in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
