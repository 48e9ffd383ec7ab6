"""Build thaw's random-weight pipelines: the embedded default model and one of each family.

Nothing is downloaded. Each pipeline is made of its family's real classes with fixed random
weights and a locally written tokenizer vocabulary, and saved with ``save_pretrained``, so the
service loads it through the real ``from_pretrained`` path.

    python infra/scripts/build_tiny_model.py [--family sd sdxl sd3 flux] [--variant fp16]
                                             [--full] [--out DIR] [--force]

Families: ``sd`` (Stable Diffusion 1.x: the embedded default model, 64 px native), ``sdxl``,
``sd3`` and ``flux`` (see tiny_families.py). ``--variant fp16`` saves float16 weights under
diffusers' variant file names (``diffusion_pytorch_model.fp16.safetensors``). ``--full`` builds
the ``sd`` family at Stable Diffusion 1.5's real shapes in float16 (~2 GB, for benchmarks).

The default output is ``$THAW_CACHE_DIR/tiny-<family>`` (``~/.cache/thaw/tiny-sd``, ...;
``-fp16`` appended for the variant, ``sd15-random-fp16`` with ``--full``), outside git; ``tiny-sd``
is where the service looks when THAW_MODEL is unset. A ``.complete`` marker is written last, so
a half-written folder is never taken for a model. This file alone builds the ``sd`` family (the
image's build copies only it); the other families import tiny_families.py beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The pipeline is seeded so every machine builds the same weights (and tests can compare images).
SEED = 20261128
SD15_SEED = 15
MARKER = ".complete-2"
"""Written last into a built model's folder. Its name changes whenever the builder's output does
(2: the SD tokenizer knows its vocabulary), so a model built by an older builder is rebuilt."""
FAMILIES = ("sd", "sdxl", "sd3", "flux")


def cache_root() -> Path:
    """thaw's cache folder (see runtime.settings)."""
    base = os.environ.get("THAW_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "thaw"
    )
    return Path(base)


def default_output(family: str = "sd", *, variant: str | None = None, full: bool = False) -> Path:
    """Where a family's model is built; `tiny-sd` is what the service loads when THAW_MODEL is
    unset."""
    if full:
        return cache_root() / "sd15-random-fp16"
    return cache_root() / (f"tiny-{family}" + (f"-{variant}" if variant else ""))


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


def clip_vocabulary() -> dict[str, int]:
    """A byte-level CLIP vocabulary: the 256 byte symbols with and without `</w>`, then
    `<|startoftext|>` and `<|endoftext|>`."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


def build(out: Path, family: str = "sd", *, variant: str | None = None, full: bool = False) -> None:
    """Build one family's pipeline and save it to `out`."""
    import torch

    torch.manual_seed(SD15_SEED if full else SEED)
    if family == "sd":
        pipe = _sd15() if full else _tiny_sd()
    else:
        if full:
            raise ValueError(f"--full builds the sd family only, not {family!r}")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tiny_families import BUILDERS

        pipe = BUILDERS[family](clip_vocabulary())
    if variant is not None:
        # A variant's files hold weights in that dtype, as the ones diffusers downloads do.
        pipe = pipe.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[variant]))
    pipe.save_pretrained(out, safe_serialization=True, variant=variant)


def _sd_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    # transformers 5 builds CLIPTokenizer from `vocab` and `merges` (the `vocab_file` and
    # `merges_file` of version 4 are ignored, which left a tokenizer that knew only its special
    # tokens: every prompt encoded alike and the embedded model ignored its prompt). An empty
    # merge list is enough: every word tokenizes to its bytes. Without model_max_length a
    # self-made CLIPTokenizer fails with OverflowError.
    return CLIPTokenizer(vocab=clip_vocabulary(), merges=[], model_max_length=77)


def _sd_pipeline(tokenizer: Any, text_encoder: Any, unet: Any, vae: Any) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny_sd() -> Any:
    """Stable Diffusion 1.x, tiny: 64 px native."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _sd_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_vocabulary()),
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
    return _sd_pipeline(tokenizer, text_encoder, unet, vae)


def _sd15() -> Any:
    """Stable Diffusion 1.5's shapes (UNet 860M parameters, the SD VAE, CLIP ViT-L/14's text
    tower) in float16, so load and transfer costs are realistic; the weights are noise."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _sd_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(len(clip_vocabulary()), 49408),
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
    return _sd_pipeline(tokenizer, text_encoder, unet, vae)


def share(folder: Path) -> None:
    """Give the model the modes the umask allows, as any file written in place would have.

    mkdtemp makes the staging folder 0700 and safetensors writes its files 0600, so a model
    built by root (a Dockerfile's RUN) was unreadable by the image's own user and Lambda's.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build_into(out: Path, family: str, *, variant: str | None, full: bool, force: bool) -> None:
    """Build into `out` unless a complete model is there."""
    if (out / MARKER).exists() and not force:
        print(f"{family} model already built: {out}")
        return
    # Build beside the target, then swap in: a crash never leaves a folder that looks complete.
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build(staging, family, variant=variant, full=full)
        (staging / MARKER).write_text("ok\n", encoding="utf-8")
        share(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{family} model built in {time.monotonic() - started:.1f}s: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--family", nargs="+", choices=FAMILIES, default=["sd"], help="families to build"
    )
    parser.add_argument("--variant", choices=("fp16", "bf16"), help="save as this weight variant")
    parser.add_argument("--full", action="store_true", help="sd at SD 1.5's shapes, float16")
    parser.add_argument("--out", type=Path, default=None, help="output folder (one family)")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    if args.out is not None and len(args.family) > 1:
        parser.error("--out takes one --family")
    if args.full and args.family != ["sd"]:
        parser.error("--full builds the sd family only")
    for family in args.family:
        out = args.out or default_output(family, variant=args.variant, full=args.full)
        build_into(out, family, variant=args.variant, full=args.full, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
