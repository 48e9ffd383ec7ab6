"""`/openapi.json` that shows the loaded model's request, not every pipeline's.

The app is built, and listens, before any model loads (and before torch is imported), so its
request models are the edge's: every field some pipeline takes, within the settings' bounds
(handler.schemas). Once a model is loaded its terms are known (handler.terms), and the schema
is regenerated from the edge's: fields the model does not take are removed, and the ones it
takes show its defaults and bounds. The schema of a process without a model is the edge's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from handler.pipeline import LoadedPipeline
from handler.terms import OPTIONAL_FIELDS, ModelTerms

REQUEST_SCHEMAS = ("GenerateRequest", "ImageGenerationRequest")
"""The components whose fields are `/generate`'s (the OpenAI request copies some)."""


def install(app: FastAPI, loaded: Callable[[], LoadedPipeline | None]) -> None:
    """Serve the schema for whatever `loaded()` returns now (the slot's model, or None)."""
    edge = app.openapi  # FastAPI's own: built once, then cached on the app
    shown: dict[ModelTerms | None, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        model = loaded()
        terms = model.terms if model is not None else None
        if terms not in shown:
            shown.clear()  # one model at a time: a reload replaces it
            shown[terms] = edge() if terms is None else for_model(edge(), terms)
        return shown[terms]

    app.openapi = openapi  # type: ignore[method-assign]


def for_model(schema: dict[str, Any], terms: ModelTerms) -> dict[str, Any]:
    """A copy of `schema` with the request components fitted to `terms`."""
    fitted = copy.deepcopy(schema)
    components = fitted.get("components", {}).get("schemas", {})
    for name in REQUEST_SCHEMAS:
        if name in components:
            fit_request(components[name], terms)
    return fitted


def fit_request(component: dict[str, Any], terms: ModelTerms) -> None:
    """Remove the fields `terms` does not take; show the defaults and bounds of the others."""
    properties: dict[str, Any] = component.get("properties", {})
    for field in OPTIONAL_FIELDS:
        if field in properties and field not in terms.takes:
            del properties[field]
    width, height = terms.default_size
    native = "x".join(map(str, terms.native_size))
    facts: dict[str, tuple[Any, str, dict[str, Any]]] = {
        "num_inference_steps": (terms.default_steps, "", {}),
        "guidance_scale": (terms.default_guidance, "", {}),
        "true_cfg_scale": (terms.default_true_cfg_scale, "", {}),
        "max_sequence_length": (terms.default_max_sequence_length, "", {}),
        "width": (
            width,
            f" Native size {native}; at most {terms.max_side}, and width*height at most "
            f"{terms.max_pixels}.",
            {"maximum": terms.max_side, "multipleOf": terms.size_multiple},
        ),
        "height": (height, "", {"maximum": terms.max_side, "multipleOf": terms.size_multiple}),
    }
    for field, (default, note, bounds) in facts.items():
        if field not in properties or default is None:
            continue
        shown = properties[field]
        shown["default"] = default
        shown["description"] = f"{shown.get('description', '')} Default {default}.{note}".strip()
        for branch in shown.get("anyOf", [shown]):
            if branch.get("type") != "null":
                branch.update(bounds)
    if "size" in properties and {"width", "height"} <= terms.takes:  # the OpenAI request's
        properties["size"]["description"] = (
            f'"WIDTHxHEIGHT" in pixels, each side 64 to {terms.max_side} and a multiple of '
            f'{terms.size_multiple}, width*height at most {terms.max_pixels}; or "auto" '
            f"for the model's default, {width}x{height} (native size {native})."
        )
        properties["size"]["examples"] = [f"{width}x{height}"]
    if "negative_prompt" in properties and "true_cfg_scale" in terms.takes:
        properties["negative_prompt"]["description"] = (
            "Used only with true_cfg_scale > 1 (true classifier-free guidance)."
        )
        if "true_cfg_scale" in properties:
            properties["true_cfg_scale"]["description"] = (
                "Above 1: true classifier-free guidance (two passes a step), which needs a "
                "negative_prompt."
            )
    component["description"] = (
        f"{component.get('description', '')}\n\nThe loaded model: {terms.pipeline}, native "
        f"size {native}."
    ).strip()
