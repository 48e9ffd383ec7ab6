"""What a request to the loaded model may ask: the fields its pipeline's call takes, their
defaults and their bounds, read from the pipeline itself and overridden by settings.

No table of pipeline families: a request field is taken when the pipeline's `__call__` has a
parameter of that name (thaw's field names are diffusers' own), and the config says the rest
(a Flux transformer without `guidance_embeds` ignores `guidance_scale`; SD3's
`pos_embed_max_size` caps the image size). Defaults are the call's own (`num_inference_steps=28`
on Flux, 50 on Stable Diffusion); the native size is the pipeline's default sample size times its
VAE scale. Settings (`THAW_DEFAULT_*`, `THAW_MAX_*`) override.

`read_terms` runs where the pipeline is (the model worker); the frozen `ModelTerms` it returns
travels to the server, which fits each request to it (`ModelTerms.fit`) with no torch there.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from runtime.errors import InvalidRequest
from runtime.settings import SettingsError

if TYPE_CHECKING:
    from handler.config import ImageLimits
    from handler.pipeline import GenerationParams

OPTIONAL_FIELDS = (
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "true_cfg_scale",
    "width",
    "height",
    "max_sequence_length",
)
"""Request fields a pipeline may or may not take (`prompt` and `seed` every one takes)."""

CLASSIC = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "width", "height"})
"""What a call that names no parameters (a wrapper's `**kwargs`) is taken to accept."""

MIN_SIDE = 64
MAX_SEQUENCE_LENGTH = 512  # SD3 and Flux refuse more T5 tokens
FLOOR_SIDE = 2048  # the bounds a small model keeps: as large as before families had their own
FLOOR_PIXELS = 1024 * 1024
FALLBACK_STEPS = 25  # a call without a default of its own


class SizeRefused(InvalidRequest):
    """A size out of the loaded model's bounds: `field` is the side at fault, or None when the
    two together are (the pixel budget)."""


@dataclass(frozen=True)
class ModelTerms:
    """The loaded model's request terms. Defaults already include the settings' overrides."""

    pipeline: str
    takes: frozenset[str]
    native_size: tuple[int, int]
    default_size: tuple[int, int]
    size_multiple: int
    max_side: int
    max_pixels: int
    default_steps: int
    default_guidance: float | None = None
    default_true_cfg_scale: float | None = None
    default_max_sequence_length: int | None = None

    def fit(self, params: GenerationParams) -> GenerationParams:
        """`params` with every default filled in for this model, or an `InvalidRequest` naming
        the first field it does not take or that is out of its bounds. Idempotent."""
        self._refuse_what_is_not_taken(params)
        width, height = self._size(params) if {"width", "height"} <= self.takes else (None, None)
        return replace(
            params,
            width=width,
            height=height,
            steps=self._taken("num_inference_steps", params.steps, self.default_steps),
            guidance=self._taken("guidance_scale", params.guidance, self.default_guidance),
            true_cfg_scale=self._taken(
                "true_cfg_scale", params.true_cfg_scale, self.default_true_cfg_scale
            ),
            max_sequence_length=self._taken(
                "max_sequence_length", params.max_sequence_length, self.default_max_sequence_length
            ),
        )

    def _size(self, params: GenerationParams) -> tuple[int, int]:
        width = self.default_size[0] if params.width is None else params.width
        height = self.default_size[1] if params.height is None else params.height
        for field, side in (("width", width), ("height", height)):
            self._check_side(field, side)
        if width * height > self.max_pixels:
            given = [f for f, v in (("width", params.width), ("height", params.height)) if v]
            raise SizeRefused(
                f"width*height={width}*{height}={width * height} exceeds the limit of "
                f"{self.max_pixels} pixels"
                + ("" if len(given) == 2 else " (an omitted side at the model's default)"),
                field=given[0] if len(given) == 1 else None,
            )
        return width, height

    def _refuse_what_is_not_taken(self, params: GenerationParams) -> None:
        given = {
            "num_inference_steps": params.steps,
            "width": params.width,
            "height": params.height,
            "negative_prompt": params.negative_prompt,
            "guidance_scale": params.guidance,
            "true_cfg_scale": params.true_cfg_scale,
            "max_sequence_length": params.max_sequence_length,
        }
        for field, value in given.items():
            if value is not None and field not in self.takes:
                raise InvalidRequest(
                    f"{field}: this model ({self.pipeline}) does not take {field}", field=field
                )
        if params.negative_prompt is not None and "true_cfg_scale" in self.takes:
            # Such a call uses the negative prompt only for true classifier-free guidance.
            scale = params.true_cfg_scale
            if ((self.default_true_cfg_scale or 1.0) if scale is None else scale) <= 1:
                raise InvalidRequest(
                    f"negative_prompt: this model ({self.pipeline}) uses a negative prompt only "
                    "with true_cfg_scale > 1 (true classifier-free guidance: two passes a step)",
                    field="negative_prompt",
                )
        if (
            params.true_cfg_scale is not None
            and params.true_cfg_scale > 1
            and params.negative_prompt is None
            and "negative_prompt" in self.takes
        ):
            # The call would skip true guidance without one, and the user pay for nothing.
            raise InvalidRequest(
                f"true_cfg_scale: this model ({self.pipeline}) runs true classifier-free "
                "guidance (true_cfg_scale > 1) only against a negative_prompt: give one, or "
                "leave true_cfg_scale out",
                field="true_cfg_scale",
            )

    def _check_side(self, field: str, side: int) -> None:
        if not MIN_SIDE <= side <= self.max_side:
            raise SizeRefused(
                f"{field}={side} is outside this model's bounds: {MIN_SIDE} to {self.max_side}",
                field=field,
            )
        if side % self.size_multiple:
            raise SizeRefused(
                f"{field}={side}: this model ({self.pipeline}) takes multiples of "
                f"{self.size_multiple}",
                field=field,
            )

    def _taken(self, field: str, value: Any, default: Any) -> Any:
        return (default if value is None else value) if field in self.takes else None

    def summary(self) -> dict[str, Any]:
        """For `/health`: the pipeline, its native and default size, what it takes."""
        return {
            "pipeline": self.pipeline,
            "native_size": list(self.native_size),
            "default_size": list(self.default_size),
            "takes": sorted(self.takes),
        }


IMAGE_CONDITIONED = re.compile(r"Img2Img|Image2Image|Inpaint|Pix2Pix|Upscale|ControlNet|Depth2Img")
"""diffusers' names for pipelines that need an input image. Their call's `image` has a default
(None) as a text-to-image one's optional reference image has (Flux Kontext), so the signature
cannot tell them apart: loaded, they would say ready and fail every request."""


def read_terms(pipe: Any, limits: ImageLimits) -> ModelTerms:
    """The request terms of `pipe` (a diffusers pipeline, or any callable with the same
    parameters), with `limits`' settings over the pipeline's own defaults."""
    name = type(pipe).__name__
    if IMAGE_CONDITIONED.search(name):
        raise SettingsError(
            f"THAW_MODEL: this model is a {name}, which needs an input image; thaw serves "
            "text-to-image pipelines (THAW_LOADER can wrap another kind in one)"
        )
    call = inspect.signature(type(pipe).__call__).parameters
    takes = {field for field in OPTIONAL_FIELDS if field in call}
    if not takes and any(p.kind is p.VAR_KEYWORD for p in call.values()):
        takes = set(CLASSIC)
    denoiser = _component_config(pipe, "unet") or _component_config(pipe, "transformer")
    if denoiser.get("guidance_embeds") is False:
        takes.discard("guidance_scale")  # a guidance-distilled transformer has no guidance input
    native = _native_size(pipe, denoiser)
    scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    patch = int(denoiser.get("patch_size") or 1)
    # Flux's image processor works in 2x2 packed latents: twice the VAE's scale.
    processor = _component_config(pipe, "image_processor")
    multiple = max(8, scale * patch, int(processor.get("vae_scale_factor") or 0))
    max_side = limits.max_side or max(FLOOR_SIDE, 2 * max(native))
    if denoiser.get("pos_embed_max_size"):  # positions past it have no embedding
        max_side = min(max_side, int(denoiser["pos_embed_max_size"]) * patch * scale)
    default_size = (limits.default_width or native[0], limits.default_height or native[1])
    terms = ModelTerms(
        pipeline=type(pipe).__name__,
        takes=frozenset(takes),
        native_size=native,
        default_size=default_size,
        size_multiple=multiple,
        max_side=max_side,
        max_pixels=limits.max_pixels or max(FLOOR_PIXELS, 4 * native[0] * native[1]),
        default_steps=limits.default_steps or _default(call, "num_inference_steps", FALLBACK_STEPS),
        default_guidance=_setting_or_default(limits.default_guidance, call, "guidance_scale"),
        default_true_cfg_scale=_default(call, "true_cfg_scale", None),
        default_max_sequence_length=_default(call, "max_sequence_length", None),
    )
    _check_default_size(terms, limits)
    _check_default_bounds(terms, limits)
    return terms


def _check_default_bounds(terms: ModelTerms, limits: ImageLimits) -> None:
    """Fail the load when the model's own default steps or guidance exceed THAW_MAX_STEPS or
    THAW_MAX_GUIDANCE: a request that omits them would get more than an explicit one may ask
    (a setting's default past its bound already stops the start, handler.config)."""
    checks = (
        ("num_inference_steps", terms.default_steps, "MAX_STEPS", limits.max_steps, "STEPS"),
        ("guidance_scale", terms.default_guidance, "MAX_GUIDANCE", limits.max_guidance, "GUIDANCE"),
    )
    for field, default, bound_name, bound, setting in checks:
        if field in terms.takes and default is not None and default > bound:
            raise SettingsError(
                f"THAW_{bound_name}={bound:g}: this model ({terms.pipeline}) takes "
                f"{field}={default:g} when a request names none; set THAW_DEFAULT_{setting} "
                f"to at most {bound:g}"
            )


def _check_default_size(terms: ModelTerms, limits: ImageLimits) -> None:
    """Fail the load (naming the settings) when the model would refuse its own default size:
    otherwise the server would be ready and refuse every request that omits a side, as if the
    client had asked for it. The settings alone cannot tell: the bounds (SD3's position
    embedding, Flux's multiple of 16) and the native size are the model's."""
    if not {"width", "height"} <= terms.takes:
        return
    width, height = terms.default_size
    try:
        for field, side in (("width", width), ("height", height)):
            terms._check_side(field, side)
        if width * height > terms.max_pixels:
            raise SizeRefused(
                f"width*height={width}*{height}={width * height} exceeds the limit of "
                f"{terms.max_pixels} pixels"
            )
    except SizeRefused as refused:
        chosen = [
            f"THAW_DEFAULT_{name.upper()}={value}"
            for name, value in (("width", limits.default_width), ("height", limits.default_height))
            if value is not None
        ]
        bounds = [
            f"THAW_{name}={value}"
            for name, value in (("MAX_SIDE", limits.max_side), ("MAX_PIXELS", limits.max_pixels))
            if value is not None
        ]
        named = ", ".join(chosen + bounds)
        size = "its default size" if chosen else "its native size, the default,"
        raise SettingsError(
            f"{named + ': ' if named else ''}this model ({terms.pipeline}) refuses {size} "
            f"{width}x{height}: {refused.message}; set THAW_DEFAULT_WIDTH and THAW_DEFAULT_HEIGHT "
            "to a size it takes"
        ) from None


def _component_config(pipe: Any, name: str) -> dict[str, Any]:
    config = getattr(getattr(pipe, name, None), "config", None)
    return dict(config) if config is not None else {}


def _native_size(pipe: Any, denoiser: dict[str, Any]) -> tuple[int, int]:
    """The size the pipeline makes when asked for none: its default sample size (or its
    denoiser's) times the VAE scale, as the pipelines' own `__call__` computes it."""
    sample = getattr(pipe, "default_sample_size", None)
    if not isinstance(sample, int):
        sample = denoiser.get("sample_size", 64)
    height, width = (sample, sample) if isinstance(sample, int) else (sample[0], sample[1])
    scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    return int(width) * scale, int(height) * scale


def _default(call: Any, name: str, fallback: Any) -> Any:
    parameter = call.get(name)
    if parameter is None or parameter.default in (inspect.Parameter.empty, None):
        return fallback
    return parameter.default


def _setting_or_default(setting: float | None, call: Any, name: str) -> float | None:
    if setting is not None:
        return setting
    value = _default(call, name, None)
    return None if value is None else float(value)


def refuse_on_every_model(params: GenerationParams) -> None:
    """Refuse, before any model has loaded, what no model serves: `true_cfg_scale` above 1
    without a negative prompt. A model that takes `true_cfg_scale` (Flux) runs true guidance
    only against a negative prompt; any other refuses the field."""
    scale = params.true_cfg_scale
    if scale is not None and scale > 1 and params.negative_prompt is None:
        raise InvalidRequest(
            "true_cfg_scale: above 1 (true classifier-free guidance) it needs a negative_prompt, "
            "on any model that takes true_cfg_scale at all",
            field="true_cfg_scale",
        )


class KnownTerms:
    """What this process's model takes, as its latest load said: kept after the model is
    released (an idle unload, a lost worker), since the same THAW_MODEL takes the same, so a
    request it refuses is refused at once instead of after a reload."""

    def __init__(self) -> None:
        self.terms: ModelTerms | None = None
