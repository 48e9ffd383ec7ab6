"""handler.schemas: the pixel budget, with an omitted side at the model's default size."""

from __future__ import annotations

import pytest

from handler.config import ImageLimits
from handler.pipeline import GenerationParams
from handler.schemas import check_pixel_budget, request_model
from runtime.errors import InvalidRequest

LIMITS = ImageLimits(max_pixels=512 * 512)


def params(width: int | None, height: int | None) -> GenerationParams:
    return GenerationParams("p", None, 1, 7.5, width, height, 1)


@pytest.mark.parametrize(
    ("width", "height", "default", "field"),
    [
        (2048, None, (512, 512), "width"),
        (None, 1024, (512, 512), "height"),
        (None, None, (1024, 1024), None),
    ],
)
def test_an_omitted_side_counts_at_the_models_default(
    width: int | None, height: int | None, default: tuple[int, int], field: str | None
) -> None:
    with pytest.raises(InvalidRequest, match="exceeds the limit of 262144 pixels") as refused:
        check_pixel_budget(params(width, height), default, LIMITS)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("width", "height"), [(512, None), (None, 512), (None, None), (2048, 2048)]
)
def test_within_the_budget_or_already_checked_passes(width: int | None, height: int | None) -> None:
    # (2048, 2048): both given, which the request model refuses before this check runs.
    check_pixel_budget(params(width, height), (512, 512), LIMITS)


def test_the_request_model_refuses_both_sides_over_the_budget() -> None:
    model = request_model(LIMITS)
    with pytest.raises(ValueError, match="exceeds the limit"):
        model.model_validate({"prompt": "p", "width": 1024, "height": 1024})
