"""The text-to-image function's configuration: the runtime's settings, the pipeline's own, the
bounds of a request, and the HTTP edge's.

Read once from the environment at the process edge (`Config.from_env(os.environ)`), through the
runtime's `EnvReader`, so every bad value fails at start naming its `THAW_*` variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.settings import EnvReader, Settings, SettingsError

DEFAULT_MODEL_NAME = "tiny-sd"


@dataclass(frozen=True)
class PipelineSettings:
    """How the diffusers pipeline is loaded and run."""

    device: str = "auto"
    """`auto` picks `cuda`, then `mps`, then `cpu`; or name one: `cuda`, `cuda:N`, `mps`, `cpu`."""
    dtype: str = "auto"
    """`auto`: float16 on a GPU, float32 on a CPU; or `float32`, `float16`, `bfloat16`. Keep it
    equal to the weights' dtype where the device computes in it."""
    torch_threads: int = 0
    """Intra-op threads for CPU inference; 0: every usable core but one (at least 1)."""
    warm_inference: bool = False
    """Run one tiny generation after the load, so that the first request skips first-call costs."""
    log_prompts: bool = False
    """Log prompts (never images), for debugging; off, no prompt reaches the logs."""
    variant: str | None = None
    """Weight files of this variant (`THAW_VARIANT=fp16` reads `*.fp16.safetensors`); unset: the
    plain files, or the one variant a folder holds when it has no plain ones."""

    @classmethod
    def from_env(cls, env: EnvReader) -> PipelineSettings:
        device = env.string("DEVICE", "auto").lower()
        if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
            raise SettingsError(f"THAW_DEVICE={device!r} must be auto, cpu, cuda, cuda:N or mps")
        dtype = env.string("DTYPE", "auto").lower()
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise SettingsError(f"THAW_DTYPE={dtype!r} must be auto, float32, float16 or bfloat16")
        variant = env.optional("VARIANT")
        if variant is not None and not re.fullmatch(r"[A-Za-z0-9_]+", variant):
            raise SettingsError(f"THAW_VARIANT={variant!r} must be a word such as fp16 or bf16")
        return cls(
            device=device,
            dtype=dtype,
            torch_threads=env.integer("TORCH_THREADS", 0, minimum=0, maximum=1024),
            warm_inference=env.flag("WARM_INFERENCE", False),
            log_prompts=env.flag("LOG_PROMPTS", False),
            variant=variant,
        )


@dataclass(frozen=True)
class ServerSettings:
    """The HTTP edge: where uvicorn listens, the API key, the body limit."""

    host: str = "127.0.0.1"
    """The address `python -m handler` listens on (the image sets `0.0.0.0`)."""
    port: int = 8000
    """The port `python -m handler` listens on (the image sets 8080)."""
    api_key: str | None = field(default=None, repr=False)
    """Require this key on the generation and job routes (`Authorization: Bearer <key>` or
    `x-api-key: <key>`); probes and `/metrics` stay open. Without it `/health` leaves out the
    model's path, errors, device and phase details."""
    max_body_bytes: int = 64 * 1024
    """The largest request body (413 `payload_too_large`)."""

    @classmethod
    def from_env(cls, env: EnvReader) -> ServerSettings:
        return cls(
            host=env.string("HOST", "127.0.0.1"),
            port=env.integer("PORT", 8000, minimum=0, maximum=65535),
            api_key=env.optional("API_KEY"),
            max_body_bytes=env.integer("MAX_BODY_BYTES", 64 * 1024, minimum=1024),
        )


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what a request may ask for. Violations are 422s naming the field and bound.

    None means "the loaded model's own" (see handler.terms): its call's default steps and
    guidance, its native size, and bounds from its native size (each side up to twice it, at
    least 2048; at most four times its area, at least 1024*1024 pixels)."""

    max_prompt_chars: int = 2000
    """The longest prompt or negative prompt, in characters."""
    default_steps: int | None = None
    """Inference steps when a request names none; unset: the model's own default."""
    max_steps: int = 100
    """The most inference steps a request may ask for."""
    max_side: int | None = None
    """The largest width or height; unset: twice the model's native side, at least 2048."""
    max_pixels: int | None = None
    """The largest width × height; unset: four times the model's native area, at least
    1024 × 1024."""
    max_guidance: float = 30.0
    """The largest guidance scale a request may ask for."""
    default_guidance: float | None = None
    """The guidance scale when a request names none; unset: the model's own default."""
    default_width: int | None = None
    """The width when a request names none (a multiple of 8); unset: the model's native width."""
    default_height: int | None = None
    """The height when a request names none (a multiple of 8); unset: the model's native
    height."""

    @classmethod
    def from_env(cls, env: EnvReader) -> ImageLimits:
        max_steps = env.integer("MAX_STEPS", 100, minimum=1, maximum=1000)
        default_steps = _optional_integer(env, "DEFAULT_STEPS", minimum=1)
        if default_steps is not None and default_steps > max_steps:
            raise SettingsError(
                f"THAW_DEFAULT_STEPS={default_steps} exceeds THAW_MAX_STEPS={max_steps}"
            )
        max_guidance = env.number("MAX_GUIDANCE", 30.0, maximum=100.0)
        default_guidance = (
            None if env.raw("DEFAULT_GUIDANCE") is None else env.number("DEFAULT_GUIDANCE", 0.0)
        )
        if default_guidance is not None and default_guidance > max_guidance:
            raise SettingsError(
                f"THAW_DEFAULT_GUIDANCE={default_guidance:g} exceeds "
                f"THAW_MAX_GUIDANCE={max_guidance:g}"
            )
        max_side = _optional_integer(env, "MAX_SIDE", minimum=64, maximum=MAX_SIDE_CEILING)
        sides = {
            name: _optional_integer(env, name, minimum=64, maximum=max_side or MAX_SIDE_CEILING)
            for name in ("DEFAULT_WIDTH", "DEFAULT_HEIGHT")
        }
        for name, side in sides.items():
            if side is not None and side % 8:
                raise SettingsError(f"THAW_{name}={side} must be a multiple of 8")
        return cls(
            max_prompt_chars=env.integer("MAX_PROMPT_CHARS", 2000, minimum=1, maximum=100_000),
            default_steps=default_steps,
            max_steps=max_steps,
            max_side=max_side,
            max_pixels=_optional_integer(env, "MAX_PIXELS", minimum=64 * 64),
            max_guidance=max_guidance,
            default_guidance=default_guidance,
            default_width=sides["DEFAULT_WIDTH"],
            default_height=sides["DEFAULT_HEIGHT"],
        )


MAX_SIDE_CEILING = 16384
"""The largest side any setting or request may name."""


def _optional_integer(
    env: EnvReader, name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """An integer setting whose absence means "the model's own"."""
    if env.raw(name) is None:
        return None
    return env.integer(name, 0, minimum=minimum, maximum=maximum)


@dataclass(frozen=True)
class Config:
    """Everything the function reads from the environment, validated."""

    runtime: Settings = field(default_factory=Settings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    limits: ImageLimits = field(default_factory=ImageLimits)
    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        env = EnvReader(environ)
        return cls(
            runtime=Settings.from_env(environ),
            pipeline=PipelineSettings.from_env(env),
            limits=ImageLimits.from_env(env),
            server=ServerSettings.from_env(env),
        )

    @property
    def default_model_dir(self) -> Path:
        """Where `make model` builds the embedded default model."""
        return self.runtime.cache_dir / DEFAULT_MODEL_NAME

    @property
    def model_ref(self) -> str:
        """`THAW_MODEL`, or the embedded default model when unset."""
        return self.runtime.model or str(self.default_model_dir)
