"""`n` over THAW_MAX_BATCH as a newcomer meets it: the default batch of 1 and `n=2` from an
OpenAI client. The refusal reads right and says what to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from handler.config import ImageLimits
from handler.openai_schemas import images_request_model
from handler.schemas import request_model

LIMITS = ImageLimits(max_side=512, max_pixels=256 * 256, max_steps=10)


def refusal(max_images: int, n: int) -> str:
    model = images_request_model(request_model(LIMITS), max_images=max_images)
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"prompt": "a fox", "n": n})
    return str(caught.value)


def test_one_image_is_singular_and_names_the_setting_to_raise() -> None:
    message = refusal(1, 2)
    assert "at most 1 image a request" in message, message
    assert "THAW_MAX_BATCH=1" in message


def test_several_images_keep_the_plural() -> None:
    assert "at most 4 images a request (THAW_MAX_BATCH=4)" in refusal(4, 5)
