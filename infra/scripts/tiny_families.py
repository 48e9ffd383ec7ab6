"""The newer pipeline families for `build_tiny_model.py`: SDXL, SD3 and Flux, tiny and random.

Each builder returns a diffusers pipeline of the real class with the real component classes
(so `save_pretrained` writes, and `from_pretrained` reads, what a downloaded model has), shrunk
until a 64 px, 2-step generation takes well under a second on one CPU core. The VAEs keep four
blocks, so latents are 8x smaller than images as in the real models and sizes behave as there.
Nothing is downloaded: the CLIP tokenizers take the byte-level vocabulary the SD builder makes,
and the T5 tokenizer a Unigram vocabulary written here.

Only torch, diffusers, transformers and tokenizers are needed; the caller seeds torch first.
"""

from __future__ import annotations

import string
from typing import Any

T5_MAX_LENGTH = 512  # what SD3 and Flux allow for `max_sequence_length`


def clip_tokenizer(vocabulary: dict[str, int]) -> Any:
    """A CLIP tokenizer over a byte-level vocabulary with no merges (each word is its bytes).

    transformers 5 builds CLIPTokenizer from `vocab` and `merges`; the `vocab_file` and
    `merges_file` of version 4 are ignored, leaving a two-token vocabulary."""
    from transformers import CLIPTokenizer

    # Without model_max_length a self-made CLIPTokenizer fails with OverflowError.
    return CLIPTokenizer(vocab=dict(vocabulary), merges=[], model_max_length=77)


def t5_vocabulary() -> list[tuple[str, float]]:
    """A Unigram vocabulary (piece, log-probability) covering printable ASCII.

    T5's layout: `<pad>`, `</s>`, `<unk>` first; then "▁" (a word start, as the Metaspace
    pre-tokenizer writes it), every character alone and every character starting a word. Word
    starts score higher, so "▁a" beats "▁" + "a" and each word costs one piece per character.
    """
    symbols = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(f"▁{symbol}", -4.0) for symbol in symbols]
    pieces += [(symbol, -5.0) for symbol in symbols]
    return pieces


def t5_tokenizer() -> Any:
    """A T5 tokenizer (transformers' tokenizers-backed class, which diffusers names
    T5TokenizerFast) over `t5_vocabulary`, with no sentinel tokens."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=t5_vocabulary(), extra_ids=0, model_max_length=T5_MAX_LENGTH)


def t5_encoder(vocab_size: int, d_model: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def clip_config(tokenizer: Any, *, projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    extra = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        # SDXL and SD3 read the penultimate layer's hidden states: at least two layers.
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def small_vae(**kwargs: Any) -> Any:
    """Four blocks (8x latents), few channels: decoding 1024 px (Flux's native size) takes about
    0.5 s on one core, where (8, 8, 16, 16) channels took twice that."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        # Attention over every latent pixel makes decoding quadratic in the image size.
        mid_block_add_attention=False,
        **kwargs,
    )


def sdxl(vocabulary: dict[str, int]) -> Any:
    """SDXL: two CLIP text encoders (the second with projection, whose pooled output and the
    size/crop "time ids" make the UNet's `text_time` added conditioning). Native 128 px."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(vocabulary)
    text_encoder = CLIPTextModel(clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer, projection_dim=32))
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        use_linear_projection=True,
        # Both encoders' hidden states, concatenated.
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        # Six time ids (original size, crop corner, target size), each embedded, + pooled text.
        projection_class_embeddings_input_dim=6 * time_dim + 32,
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=small_vae(latent_channels=4, sample_size=128, scaling_factor=0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(vocabulary),
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def sd3(vocabulary: dict[str, int]) -> Any:
    """SD3: an MMDiT (SD3Transformer2DModel) over two CLIP encoders with projection and T5.
    Native 192 px; `pos_embed_max_size` caps images at 512 px."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(vocabulary)
    text_encoder = CLIPTextModelWithProjection(clip_config(tokenizer, projection_dim=32))
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer, projection_dim=32))
    tokenizer_3 = t5_tokenizer()
    # The two CLIP outputs side by side (32 + 32) are padded to T5's width: T5 may not be narrower.
    text_encoder_3 = t5_encoder(len(tokenizer_3), d_model=64)
    transformer = SD3Transformer2DModel(
        sample_size=24,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=32,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=small_vae(
            latent_channels=4,
            sample_size=192,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        ),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(vocabulary),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def flux(vocabulary: dict[str, int]) -> Any:
    """Flux (dev-like: guidance embedded): FluxTransformer2DModel over CLIP (pooled) and T5.
    Its native size is the pipeline's own 128 latent pixels, 1024 px; latents are packed 2x2."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer(vocabulary)
    text_encoder = CLIPTextModel(clip_config(tokenizer))
    tokenizer_2 = t5_tokenizer()
    text_encoder_2 = t5_encoder(len(tokenizer_2), d_model=32)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels, packed 2x2 (and as many out)
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=small_vae(
            latent_channels=4,
            sample_size=1024,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
        ),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


BUILDERS = {"sdxl": sdxl, "sd3": sd3, "flux": flux}
