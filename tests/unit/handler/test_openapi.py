"""handler.openapi: the edge's request schema fitted to the loaded model's terms."""

from __future__ import annotations

from typing import Any

from handler.config import ImageLimits
from handler.openapi import for_model
from handler.schemas import request_model
from handler.terms import OPTIONAL_FIELDS, read_terms
from tests.support.pipelines import FluxLike, StableDiffusionLike


def edge_schema() -> dict[str, Any]:
    component = request_model(ImageLimits()).model_json_schema()
    return {"components": {"schemas": {"GenerateRequest": component}}}


def fields(schema: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    return found


def test_the_edge_shows_every_family_s_fields() -> None:
    assert set(OPTIONAL_FIELDS) <= set(fields(edge_schema()))


def test_a_loaded_model_s_schema_shows_only_what_it_takes() -> None:
    edge = edge_schema()
    shown = fields(for_model(edge, read_terms(StableDiffusionLike(), ImageLimits())))
    assert "max_sequence_length" not in shown
    assert "true_cfg_scale" not in shown
    assert {"prompt", "seed", "negative_prompt"} <= set(shown)
    assert shown["num_inference_steps"]["default"] == 50
    assert shown["width"]["default"] == 512
    assert set(OPTIONAL_FIELDS) <= set(fields(edge))  # the edge's own schema is left as it was


def test_defaults_and_bounds_are_the_model_s() -> None:
    shown = fields(for_model(edge_schema(), read_terms(FluxLike(), ImageLimits())))
    width = shown["width"]
    assert width["default"] == 1024
    bounds = next(branch for branch in width["anyOf"] if branch.get("type") == "integer")
    assert (bounds["maximum"], bounds["multipleOf"]) == (2048, 16)
    assert shown["guidance_scale"]["default"] == 3.5
    assert shown["max_sequence_length"]["default"] == 512
    assert "true_cfg_scale > 1" in shown["negative_prompt"]["description"]
