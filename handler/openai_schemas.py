"""The OpenAI Images API's wire shapes: its request (with thaw's bounds), its answer and its
error. Pure: no I/O here; `handler.routes.openai_images` serves them.

The request model is built from `/generate`'s, so thaw's own fields (`seed`, `negative_prompt`,
`num_inference_steps`, `guidance_scale`, `true_cfg_scale`, `max_sequence_length`) keep one set
of bounds, and `n` is bounded by `THAW_MAX_BATCH`: the images of one request are one pipeline
call.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from handler.config import ImageLimits
from handler.pipeline import GenerationParams
from handler.schemas import MAX_SEED, NUMBER_FIELDS, GenerateRequestBase, not_a_boolean
from runtime.errors import InvalidRequest

SIZE = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})")
SHARED_FIELDS = (
    "prompt",
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "true_cfg_scale",
    "max_sequence_length",
)
"""Fields taken, with their bounds, from `/generate`'s request model (the loaded model's
terms refuse the ones it does not take, as on `/generate`: Flux's negative prompt needs
`true_cfg_scale` > 1)."""


class ResponseFormat(StrEnum):
    B64_JSON = "b64_json"
    """The PNG base64-encoded in the answer: works on every deployment (Lambda included)."""

    URL = "url"
    """A URL to fetch the PNG from, valid for an hour (or `THAW_JOB_TTL_S` if shorter)."""


class ImagesRequestBase(BaseModel):
    """The fields OpenAI defines; `images_request_model` adds thaw's, with their bounds."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        None, description="Accepted whatever it names: this server serves one model."
    )
    n: int = 1
    size: str | None = Field(
        None,
        description='"WIDTHxHEIGHT" in pixels (each side 64 to THAW_MAX_SIDE, a multiple of 8, '
        'within THAW_MAX_PIXELS), or "auto" for the model\'s default size.',
        examples=["512x512"],
    )
    response_format: ResponseFormat = ResponseFormat.B64_JSON
    user: str | None = Field(None, description="Accepted and ignored.")
    quality: str | None = Field(None, description="Accepted and ignored.")
    style: str | None = Field(None, description="Accepted and ignored.")
    output_format: Literal["png"] | None = Field(None, description="Only PNG is made.")

    max_images: ClassVar[int] = 1
    """THAW_MAX_BATCH: `images_request_model` sets it."""

    @field_validator("n", mode="before")
    @classmethod
    def _n_within_batch(cls, n: Any) -> Any:
        # Before pydantic's own `le` check, to say which setting bounds it.
        if isinstance(n, int) and n > cls.max_images:
            images = "image" if cls.max_images == 1 else "images"
            raise ValueError(
                f"at most {cls.max_images} {images} a request (THAW_MAX_BATCH={cls.max_images})"
            )
        return n

    @field_validator("n", *NUMBER_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _numbers_are_numbers(cls, value: Any) -> Any:
        # thaw's own fields come from /generate's model by `images_request_model`.
        return not_a_boolean(value)

    @field_validator("size")
    @classmethod
    def _size_shape(cls, size: str | None) -> str | None:
        if size is not None and size != "auto" and not SIZE.fullmatch(size):
            raise ValueError('must be "WIDTHxHEIGHT" (say "512x512") or "auto"')
        return size

    def sides(self) -> tuple[int | None, int | None]:
        """Width and height; None for the model's default ("auto" or no size)."""
        match = SIZE.fullmatch(self.size or "")
        return (int(match[1]), int(match[2])) if match else (None, None)

    def to_params(
        self, generate_model: type[GenerateRequestBase], limits: ImageLimits
    ) -> list[GenerationParams]:
        """One `GenerationParams` per image, each with its own seed (the given or drawn seed,
        then the next ones), checked against `/generate`'s bounds; a size out of bounds is an
        `InvalidRequest` naming `size`."""
        width, height = self.sides()
        fields = {name: getattr(self, name) for name in SHARED_FIELDS}
        try:
            request = generate_model.model_validate({**fields, "width": width, "height": height})
        except ValidationError as exc:
            problems = "; ".join(
                ": ".join([*(str(part) for part in error["loc"]), plain(error["msg"])])
                for error in exc.errors()
            )
            raise InvalidRequest(f"size={self.size}: {problems}", field="size") from None
        first = request.to_params(limits)
        return [
            replace(first, seed=(first.seed + index) % (MAX_SEED + 1)) for index in range(self.n)
        ]


def plain(message: str) -> str:
    """pydantic's message without the "Value error, " it puts before a validator's own."""
    return message.removeprefix("Value error, ")


def images_request_model(
    generate_model: type[GenerateRequestBase], max_images: int
) -> type[ImagesRequestBase]:
    """The request model of `POST /v1/images/generations` for these bounds."""
    shared: dict[str, Any] = {
        name: (info.annotation, copy.deepcopy(info))
        for name, info in generate_model.model_fields.items()
        if name in SHARED_FIELDS
    }
    n_field = Field(
        1,
        ge=1,
        le=max_images,
        description="How many images, made in one batch (at most THAW_MAX_BATCH); image i "
        "has seed `seed + i`.",
    )
    model: type[ImagesRequestBase] = create_model(
        "ImageGenerationRequest",
        __base__=ImagesRequestBase,
        __doc__="An OpenAI Images API request; thaw's own fields are accepted as extras.",
        n=(int, n_field),
        **shared,
    )
    model.max_images = max_images
    return model


class ImageData(BaseModel):
    """One image: its PNG in base64 or a URL to fetch it from, and its seed (thaw's)."""

    b64_json: str | None = None
    url: str | None = None
    seed: int


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time, in seconds, when the images were made.")
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    size: str = Field(description='"WIDTHxHEIGHT" of the images made.')


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "thaw"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape with thaw's status codes, `code` words and `retry_after`."""

    error: ErrorDetail


def error_type(status: int) -> str:
    """OpenAI's `error.type` for a status code."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status == 503:
        return "service_unavailable_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    retry_after: int | None = None,
) -> dict[str, Any]:
    """OpenAI's four fields, and thaw's `retry_after` (the `Retry-After` header's seconds): a
    client of either shape reads it."""
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code,
            "retry_after": retry_after,
        }
    }
