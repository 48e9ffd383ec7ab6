"""The text-to-image function's configuration: runtime settings plus generation bounds.

Read once from the environment at the process edge (`Config.from_env(os.environ)`), through the
runtime's `EnvReader`, so every bad value fails at start naming its `THAW_*` variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.settings import EnvReader, Settings, SettingsError

DEFAULT_MODEL_NAME = "tiny-sd"


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what a request may ask for. Violations are 422s naming the field and bound."""

    max_prompt_chars: int = 2000
    default_steps: int = 25
    max_steps: int = 100
    max_side: int = 2048
    max_pixels: int = 1024 * 1024
    max_guidance: float = 30.0
    default_guidance: float = 7.5

    @classmethod
    def from_env(cls, env: EnvReader) -> ImageLimits:
        max_steps = env.integer("MAX_STEPS", 100, minimum=1, maximum=1000)
        default_steps = env.integer("DEFAULT_STEPS", 25, minimum=1)
        if default_steps > max_steps:
            raise SettingsError(
                f"THAW_DEFAULT_STEPS={default_steps} exceeds THAW_MAX_STEPS={max_steps}"
            )
        max_guidance = env.number("MAX_GUIDANCE", 30.0, maximum=100.0)
        default_guidance = env.number("DEFAULT_GUIDANCE", 7.5)
        if default_guidance > max_guidance:
            raise SettingsError(
                f"THAW_DEFAULT_GUIDANCE={default_guidance:g} exceeds "
                f"THAW_MAX_GUIDANCE={max_guidance:g}"
            )
        return cls(
            max_prompt_chars=env.integer("MAX_PROMPT_CHARS", 2000, minimum=1, maximum=100_000),
            default_steps=default_steps,
            max_steps=max_steps,
            max_side=env.integer("MAX_SIDE", 2048, minimum=64, maximum=16384),
            max_pixels=env.integer("MAX_PIXELS", 1024 * 1024, minimum=64 * 64),
            max_guidance=max_guidance,
            default_guidance=default_guidance,
        )


@dataclass(frozen=True)
class Config:
    """Everything the function reads from the environment, validated."""

    runtime: Settings = field(default_factory=Settings)
    limits: ImageLimits = field(default_factory=ImageLimits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        return cls(
            runtime=Settings.from_env(environ), limits=ImageLimits.from_env(EnvReader(environ))
        )

    @property
    def default_model_dir(self) -> Path:
        """Where `make model` builds the embedded default model."""
        return self.runtime.cache_dir / DEFAULT_MODEL_NAME

    @property
    def model_ref(self) -> str:
        """`THAW_MODEL`, or the embedded default model when unset."""
        return self.runtime.model or str(self.default_model_dir)
