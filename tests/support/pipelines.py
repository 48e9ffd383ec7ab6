"""Stand-ins for diffusers pipelines, without torch: their call signatures and configs as
diffusers 0.42 has them (Stable Diffusion, SD3, Flux), for what handler.terms reads."""

from __future__ import annotations

from typing import Any


class Component:
    def __init__(self, **config: Any) -> None:
        self.config = config


class StableDiffusionLike:
    vae_scale_factor = 8

    def __init__(self, sample_size: int = 64) -> None:
        self.unet = Component(sample_size=sample_size)

    def __call__(
        self,
        prompt: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: Any = None,
        **kwargs: Any,
    ) -> None: ...


class FluxLike:
    vae_scale_factor = 8
    default_sample_size = 128

    def __init__(self, *, guidance_embeds: bool = True) -> None:
        self.transformer = Component(patch_size=1, guidance_embeds=guidance_embeds)
        self.image_processor = Component(vae_scale_factor=16)

    def __call__(
        self,
        prompt: Any = None,
        negative_prompt: Any = None,
        true_cfg_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        max_sequence_length: int = 512,
    ) -> None: ...


class SD3Like:
    vae_scale_factor = 8
    default_sample_size = 128

    def __init__(self) -> None:
        self.transformer = Component(sample_size=128, patch_size=2, pos_embed_max_size=96)

    def __call__(
        self,
        prompt: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        guidance_scale: float = 7.0,
        negative_prompt: Any = None,
        max_sequence_length: int = 256,
    ) -> None: ...


class Wrapper:
    """A custom loader's wrapper: its call names nothing."""

    def __call__(self, *args: Any, **kwargs: Any) -> None: ...
