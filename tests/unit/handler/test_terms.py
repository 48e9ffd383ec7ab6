"""handler.terms: what a pipeline takes, read from its call and config; requests fitted to it.

The pipelines here are stand-ins (tests/support/pipelines.py): what thaw reads from real ones
is tested against the tiny models in test_families.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from handler.config import ImageLimits
from handler.pipeline import GenerationParams, batch_key
from handler.terms import ModelTerms, read_terms
from runtime.errors import InvalidRequest
from tests.support.pipelines import FluxLike, SD3Like, StableDiffusionLike, Wrapper


def params(**fields: Any) -> GenerationParams:
    base: dict[str, Any] = {
        "prompt": "p",
        "negative_prompt": None,
        "steps": None,
        "guidance": None,
        "width": None,
        "height": None,
        "seed": 1,
    }
    return GenerationParams(**{**base, **fields})


def test_stable_diffusion_takes_its_call_s_fields_with_its_own_defaults() -> None:
    terms = read_terms(StableDiffusionLike(), ImageLimits())
    assert terms.pipeline == "StableDiffusionLike"
    assert terms.takes == {
        "negative_prompt",
        "num_inference_steps",
        "guidance_scale",
        "width",
        "height",
    }
    assert terms.native_size == terms.default_size == (512, 512)
    assert (terms.default_steps, terms.default_guidance) == (50, 7.5)
    assert (terms.size_multiple, terms.max_side, terms.max_pixels) == (8, 2048, 1024 * 1024)
    fitted = terms.fit(params())
    assert (fitted.steps, fitted.guidance, fitted.width, fitted.height) == (50, 7.5, 512, 512)
    assert fitted.true_cfg_scale is None
    assert fitted.max_sequence_length is None
    assert terms.fit(fitted) == fitted


def test_settings_override_the_model_s_defaults_and_bounds() -> None:
    limits = ImageLimits(
        default_steps=4,
        default_guidance=2.0,
        default_width=256,
        max_side=1024,
        max_pixels=512 * 512,
    )
    terms = read_terms(FluxLike(), limits)
    assert terms.native_size == (1024, 1024)
    assert terms.default_size == (256, 1024)
    assert (terms.default_steps, terms.default_guidance) == (4, 2.0)
    assert (terms.max_side, terms.max_pixels) == (1024, 512 * 512)
    with pytest.raises(InvalidRequest, match="exceeds the limit of 262144") as refused:
        terms.fit(params(width=512))  # the height at its default, 1024
    assert refused.value.field == "width"


def test_a_large_native_size_raises_the_bounds() -> None:
    terms = read_terms(FluxLike(), ImageLimits())
    assert terms.default_size == (1024, 1024)
    assert terms.size_multiple == 16  # latents are packed 2x2
    assert (terms.max_side, terms.max_pixels) == (2048, 4 * 1024 * 1024)
    assert (terms.default_true_cfg_scale, terms.default_max_sequence_length) == (1.0, 512)


def test_sd3_s_position_embedding_caps_the_side() -> None:
    terms = read_terms(SD3Like(), ImageLimits())
    assert terms.native_size == (1024, 1024)
    assert terms.size_multiple == 16  # 8x latents in 2x2 patches
    assert terms.max_side == 96 * 2 * 8
    assert "max_sequence_length" in terms.takes
    assert "true_cfg_scale" not in terms.takes


@pytest.mark.parametrize(
    ("pipe", "asked", "field"),
    [
        (StableDiffusionLike(), {"max_sequence_length": 77}, "max_sequence_length"),
        (StableDiffusionLike(), {"true_cfg_scale": 2.0}, "true_cfg_scale"),
        (SD3Like(), {"true_cfg_scale": 2.0}, "true_cfg_scale"),
        (FluxLike(guidance_embeds=False), {"guidance": 3.5}, "guidance_scale"),
        # Flux's call uses a negative prompt only for true CFG.
        (FluxLike(), {"negative_prompt": "blurry"}, "negative_prompt"),
        (FluxLike(), {"negative_prompt": "blurry", "true_cfg_scale": 1.0}, "negative_prompt"),
    ],
)
def test_a_field_the_model_does_not_take_is_refused_by_name(
    pipe: Any, asked: dict[str, Any], field: str
) -> None:
    terms = read_terms(pipe, ImageLimits())
    with pytest.raises(InvalidRequest, match=f"^{field}: this model") as refused:
        terms.fit(params(**asked))
    assert refused.value.field == field


def test_flux_takes_a_negative_prompt_with_true_cfg() -> None:
    terms = read_terms(FluxLike(), ImageLimits())
    fitted = terms.fit(params(negative_prompt="blurry", true_cfg_scale=4.0))
    assert (fitted.negative_prompt, fitted.true_cfg_scale, fitted.guidance) == ("blurry", 4.0, 3.5)
    # A guidance-distilled Flux (schnell) has no guidance input: none is passed.
    assert read_terms(FluxLike(guidance_embeds=False), ImageLimits()).fit(params()).guidance is None


@pytest.mark.parametrize(
    ("asked", "field", "words"),
    [
        ({"width": 72}, "width", "multiples of 16"),
        ({"height": 4096}, "height", "64 to 2048"),
        ({"width": 2048, "height": 2048, "max_sequence_length": 64}, None, "4192256 pixels"),
    ],
)
def test_sizes_are_held_to_the_model_s_bounds(
    asked: dict[str, Any], field: str | None, words: str
) -> None:
    terms = replace(read_terms(FluxLike(), ImageLimits()), max_pixels=2048 * 2047)
    with pytest.raises(InvalidRequest, match=words) as refused:
        terms.fit(params(**asked))
    assert refused.value.field == field


def test_a_wrapper_that_names_nothing_is_called_as_stable_diffusion_is() -> None:
    terms = read_terms(Wrapper(), ImageLimits())
    assert "negative_prompt" in terms.takes
    assert "max_sequence_length" not in terms.takes
    assert terms.default_steps == 25


def test_a_batch_never_mixes_requests_with_and_without_a_negative_prompt() -> None:
    # SDXL zeroes the embeddings of no negative prompt, and "" is not that.
    assert batch_key(params(negative_prompt="")) != batch_key(params())
    assert batch_key(params(negative_prompt="a")) == batch_key(params(negative_prompt="b"))
    assert batch_key(params(true_cfg_scale=2.0)) != batch_key(params(true_cfg_scale=3.0))


def test_terms_report_what_health_shows() -> None:
    terms: ModelTerms = read_terms(SD3Like(), ImageLimits())
    assert terms.summary() == {
        "pipeline": "SD3Like",
        "native_size": [1024, 1024],
        "default_size": [1024, 1024],
        "takes": sorted(terms.takes),
    }


@pytest.mark.parametrize(
    "name",
    [
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
        "FluxControlNetPipeline",
    ],
)
def test_a_pipeline_that_needs_an_input_image_fails_the_load(name: str) -> None:
    """Loaded, it would report ready and fail every request with a 500."""
    from runtime.settings import SettingsError

    pipe = type(name, (StableDiffusionLike,), {})()
    with pytest.raises(SettingsError, match=rf"THAW_MODEL: this model is a {name}"):
        read_terms(pipe, ImageLimits())
