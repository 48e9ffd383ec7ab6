"""The HTTP request schema, with bounds taken from the configured limits.

The model class is built from `ImageLimits`, so the OpenAPI schema shows the real bounds and
pydantic names the field and the bound in every 422.

It is the edge's schema, built before any model loads: every field some pipeline takes, within
the settings' bounds. What the loaded model takes, its defaults and its own bounds are applied
after (`LoadedPipeline.fit`, a 422 naming the field), and `/openapi.json` then shows them
(handler.openapi).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from handler.config import MAX_SIDE_CEILING, ImageLimits
from handler.pipeline import GenerationParams
from handler.terms import MAX_SEQUENCE_LENGTH
from runtime.errors import InvalidRequest
from runtime.jobs.destinations import MAX_URL_CHARS
from runtime.jobs.webhooks import JobEvent

MAX_SEED = 2**32 - 1
NUMBER_FIELDS = (
    "num_inference_steps",
    "guidance_scale",
    "width",
    "height",
    "seed",
    "true_cfg_scale",
    "max_sequence_length",
)


def not_a_boolean(value: Any) -> Any:
    """JSON's true and false are not numbers, whatever pydantic's lax mode makes of them (1, 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


class GenerateRequestBase(BaseModel):
    """Fields every generate request has; subclasses add the configured bounds."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    true_cfg_scale: float | None = None
    max_sequence_length: int | None = None
    webhook: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL to POST the job's events to, signed as Standard Webhooks "
        "says; only for an asynchronous job (POST /jobs, or `Prefer: respond-async`).",
    )
    webhook_events: list[JobEvent] | None = Field(
        None, description="Which events the webhook gets; `completed` when omitted."
    )

    @field_validator(*NUMBER_FIELDS, mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any) -> Any:
        return not_a_boolean(value)

    def to_params(self, limits: ImageLimits) -> GenerationParams:
        """The request as `GenerationParams`, a seed drawn if none was given. Omitted fields
        stay None: the loaded model's defaults (and the settings over them, `limits`) fill them
        in when it runs the request (`LoadedPipeline.fit`)."""
        return GenerationParams(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.num_inference_steps,
            guidance=self.guidance_scale,
            width=self.width,
            height=self.height,
            seed=secrets.randbelow(MAX_SEED + 1) if self.seed is None else self.seed,
            true_cfg_scale=self.true_cfg_scale,
            max_sequence_length=self.max_sequence_length,
        )


def request_model(limits: ImageLimits) -> type[GenerateRequestBase]:
    """Build the request model for these limits."""
    side = Annotated[
        int | None, Field(ge=64, le=limits.max_side or MAX_SIDE_CEILING, multiple_of=8)
    ]

    class GenerateRequest(GenerateRequestBase):
        """A text-to-image request. Omitted fields take the model's defaults (or the configured
        ones); an omitted seed is drawn at random and echoed in `X-Seed`."""

        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars)
        negative_prompt: str | None = Field(None, max_length=limits.max_prompt_chars)
        num_inference_steps: int | None = Field(None, ge=1, le=limits.max_steps)
        guidance_scale: float | None = Field(
            None, ge=0.0, le=limits.max_guidance, allow_inf_nan=False
        )
        width: side = None
        height: side = None
        seed: int | None = Field(None, ge=0, le=MAX_SEED)
        true_cfg_scale: float | None = Field(
            None,
            ge=0.0,
            le=limits.max_guidance,
            allow_inf_nan=False,
            description="True classifier-free guidance, for models whose call takes it (Flux): "
            "above 1, with a negative prompt, two passes a step.",
        )
        max_sequence_length: int | None = Field(
            None,
            ge=1,
            le=MAX_SEQUENCE_LENGTH,
            description="T5 tokens the prompt is padded or cut to (SD3, Flux).",
        )

        @model_validator(mode="after")
        def _pixel_budget(self) -> GenerateRequest:
            # With one side omitted, the budget depends on the model's default size, and with
            # THAW_MAX_PIXELS unset the budget is the model's own: the loaded model holds it
            # then (`LoadedPipeline.fit`).
            if self.width is not None and self.height is not None and limits.max_pixels:
                pixels = self.width * self.height
                if pixels > limits.max_pixels:
                    raise ValueError(
                        f"width*height={pixels} exceeds the limit of {limits.max_pixels} pixels"
                    )
            return self

    return GenerateRequest


def check_pixel_budget(
    params: GenerationParams, default_size: tuple[int, int], limits: ImageLimits
) -> None:
    """Refuse (422) a request whose size, an omitted side taken at the model's default, exceeds
    the pixel budget. Both sides given were checked already, by the request model. Without
    THAW_MAX_PIXELS the budget is the loaded model's own (`LoadedPipeline.fit` holds it)."""
    if (params.width is not None and params.height is not None) or limits.max_pixels is None:
        return
    width = default_size[0] if params.width is None else params.width
    height = default_size[1] if params.height is None else params.height
    if width * height <= limits.max_pixels:
        return
    if params.width is not None:
        field, defaulted = "width", "the height"
    elif params.height is not None:
        field, defaulted = "height", "the width"
    else:
        field, defaulted = None, "both sides"
    raise InvalidRequest(
        f"width*height={width}*{height}={width * height} ({defaulted} at the model's default) "
        f"exceeds the limit of {limits.max_pixels} pixels",
        field=field,
    )
