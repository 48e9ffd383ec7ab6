"""Outside review of issue 19 (pipeline families), the parts that need no model.

- Defaults the loaded model refuses (THAW_DEFAULT_WIDTH past SD3's position-embedding cap or
  not a multiple of Flux's 16, a native size past THAW_MAX_SIDE or THAW_MAX_PIXELS) fail the
  load naming the setting; before, the server was ready and refused every request that omitted
  the size, as if the client had asked for it ("width=1024 is outside this model's bounds").
- THAW_VARIANT naming a variant the folder does not hold, and a folder of two variants and no
  plain weights with THAW_VARIANT unset, fail naming THAW_VARIANT and what the folder holds
  (diffusers' own error for the second named a missing `.bin` in one component).
- A hub cache folder with the model's snapshot but no `refs/main` names the snapshot and
  THAW_MODEL_REVISION (it said the model was not in the cache: download it).
- The OpenAI route takes `true_cfg_scale` and `max_sequence_length` as `/generate` does: Flux
  takes a negative prompt only with true_cfg_scale > 1, and the route refused that field.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from handler.config import ImageLimits
from handler.openai_schemas import images_request_model
from handler.openapi import for_model
from handler.schemas import request_model
from handler.terms import read_terms
from handler.variants import choose_variant
from runtime.observe.phases import PhaseRecorder
from runtime.settings import SettingsError, hub_cache_dir
from runtime.weights.sources import ModelNotFound, resolve_local
from tests.support.hub_cache import COMMIT, hub_cache
from tests.support.pipelines import FluxLike, SD3Like, StableDiffusionLike


@pytest.mark.parametrize(
    ("pipe", "limits", "named"),
    [
        # SD3Like's side is capped at 96 * 2 * 8 = 1536 by its position embedding.
        (SD3Like(), ImageLimits(default_width=2048), ["THAW_DEFAULT_WIDTH=2048", "1536"]),
        # Multiples of 8 pass the settings; Flux takes multiples of 16.
        (FluxLike(), ImageLimits(default_height=1000), ["THAW_DEFAULT_HEIGHT=1000", "16"]),
        # A native size past the bounds the settings give, and no default of the operator's.
        (FluxLike(), ImageLimits(max_side=512), ["THAW_MAX_SIDE=512", "THAW_DEFAULT_WIDTH"]),
        (
            StableDiffusionLike(sample_size=128),
            ImageLimits(max_pixels=512 * 512),
            ["THAW_MAX_PIXELS=262144", "1024x1024"],
        ),
        (
            StableDiffusionLike(),
            ImageLimits(default_width=2048, default_height=2048),
            ["THAW_DEFAULT_WIDTH=2048", "THAW_DEFAULT_HEIGHT=2048", "1048576"],
        ),
    ],
)
def test_a_default_size_the_model_refuses_fails_the_load_naming_the_setting(
    pipe: object, limits: ImageLimits, named: list[str]
) -> None:
    with pytest.raises(SettingsError) as refused:
        read_terms(pipe, limits)
    for part in named:
        assert part in str(refused.value)


def test_default_sizes_within_the_model_s_bounds_still_load() -> None:
    assert read_terms(SD3Like(), ImageLimits(default_width=1536)).default_size == (1536, 1024)
    assert read_terms(FluxLike(), ImageLimits(default_height=512)).default_size == (1024, 512)
    limits = ImageLimits(max_side=512, default_width=512, default_height=256)
    assert read_terms(FluxLike(), limits).default_size == (512, 256)


def weights(root: Path, *files: str) -> Path:
    for name in ("model_index.json", *files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return root


def test_a_variant_the_folder_does_not_hold_is_named_with_what_it_holds(tmp_path: Path) -> None:
    folder = weights(
        tmp_path,
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    )
    with pytest.raises(ModelNotFound) as missing:
        choose_variant(folder, "bogus")
    message = str(missing.value)
    assert "THAW_VARIANT=bogus" in message
    assert "fp16" in message
    assert str(folder) in message


def test_a_variant_held_by_old_style_text_encoder_files_is_found(tmp_path: Path) -> None:
    # Older Stable Diffusion repos name the text encoder's weights pytorch_model.<variant>.bin.
    folder = weights(
        tmp_path,
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/pytorch_model.fp16.bin",
    )
    assert choose_variant(folder, "fp16") == "fp16"


def test_two_variants_and_no_plain_weights_ask_for_thaw_variant(tmp_path: Path) -> None:
    folder = weights(
        tmp_path,
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bf16.safetensors",
    )
    with pytest.raises(ModelNotFound) as ambiguous:
        choose_variant(folder, None)
    message = str(ambiguous.value)
    assert "THAW_VARIANT" in message
    assert "bf16" in message
    assert "fp16" in message


def test_a_hub_cache_without_the_revision_s_ref_names_its_snapshots(tmp_path: Path) -> None:
    cache = hub_cache(tmp_path, "org/model", {"model_index.json": b"{}"})
    (cache / "models--org--model" / "refs" / "main").unlink()
    with pytest.raises(ModelNotFound) as missing:
        resolve_local("org/model", PhaseRecorder(), hub_cache=cache, revision="main")
    message = str(missing.value)
    assert COMMIT in message
    assert "THAW_MODEL_REVISION" in message
    assert "refs/main" in message


def test_the_openai_route_takes_true_cfg_and_the_t5_length_as_generate_does() -> None:
    limits = ImageLimits()
    generate = request_model(limits)
    images = images_request_model(generate, max_images=2)
    body = images.model_validate(
        {
            "prompt": "a fox",
            "negative_prompt": "blurry",
            "true_cfg_scale": 2.0,
            "max_sequence_length": 64,
            "size": "512x512",
            "n": 2,
        }
    )
    params = body.to_params(generate, limits)
    assert {(p.true_cfg_scale, p.max_sequence_length, p.negative_prompt) for p in params} == {
        (2.0, 64, "blurry")
    }
    with pytest.raises(ValidationError, match="max_sequence_length"):
        images.model_validate({"prompt": "a fox", "max_sequence_length": 513})


@pytest.mark.parametrize(
    ("environ", "cache"),
    [
        # huggingface_hub still reads the legacy name (Dockerfiles of the last years set it).
        ({"HUGGINGFACE_HUB_CACHE": "/models/hub", "HOME": "/root"}, "/models/hub"),
        ({"HF_HUB_CACHE": "/a", "HUGGINGFACE_HUB_CACHE": "/b", "HOME": "/root"}, "/a"),
        # ... and expands a home folder, as a shell would not inside quotes.
        ({"HF_HOME": "~/hf", "HOME": "/root"}, str(Path("~/hf/hub").expanduser())),
        ({"HF_HUB_CACHE": "~/hub", "HOME": "/root"}, str(Path("~/hub").expanduser())),
    ],
)
def test_the_hub_cache_is_where_huggingface_hub_looks(environ: dict[str, str], cache: str) -> None:
    assert hub_cache_dir(environ) == Path(cache)


@pytest.mark.parametrize(
    ("pipe", "limits", "named"),
    [
        # Omitting the steps ran the model's 50 (PNDM: 51) where THAW_MAX_STEPS=10 refuses an
        # explicit 50, and /openapi.json showed default 50 beside maximum 10. Before families
        # the same default (then 25) past THAW_MAX_STEPS stopped the start.
        (StableDiffusionLike(), ImageLimits(max_steps=10), ["THAW_MAX_STEPS=10", "50"]),
        (SD3Like(), ImageLimits(max_guidance=5.0), ["THAW_MAX_GUIDANCE=5", "7"]),
    ],
)
def test_a_model_default_past_the_settings_bound_fails_the_load_naming_it(
    pipe: object, limits: ImageLimits, named: list[str]
) -> None:
    with pytest.raises(SettingsError) as refused:
        read_terms(pipe, limits)
    for part in named:
        assert part in str(refused.value)


def test_a_setting_s_default_within_the_bound_overrides_the_model_s() -> None:
    limits = ImageLimits(max_steps=10, default_steps=8, max_guidance=5.0, default_guidance=4.0)
    terms = read_terms(StableDiffusionLike(), limits)
    assert (terms.default_steps, terms.default_guidance) == (8, 4.0)
    # A model that takes no guidance_scale has no default of it to bound.
    assert read_terms(FluxLike(guidance_embeds=False), ImageLimits(max_guidance=1.0))


def test_the_openai_size_s_schema_shows_the_loaded_model_s_multiple_and_bounds() -> None:
    limits = ImageLimits()
    images = images_request_model(request_model(limits), max_images=2)
    edge = {"components": {"schemas": {"ImageGenerationRequest": images.model_json_schema()}}}
    shown = for_model(edge, read_terms(FluxLike(), limits))
    properties = shown["components"]["schemas"]["ImageGenerationRequest"]["properties"]
    size = properties["size"]
    # The edge's text says "a multiple of 8" whatever the model; Flux takes multiples of 16.
    assert "multiple of 16" in size["description"]
    assert "2048" in size["description"]
    assert "1024x1024" in size["description"]
    assert size["examples"] == ["1024x1024"]
    assert "true_cfg_scale" in properties
