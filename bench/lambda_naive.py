"""Baseline for Lambda: the handler most people write first. It imports torch and diffusers and
loads the pipeline at INIT, in sequence, then generates for each function-URL event and returns a
base64 PNG. No background load, no worker, no warm-up handling: the floor thaw's first invocation
is compared with in `python -m bench.lambda_init`."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import torch
from diffusers import DiffusionPipeline

torch.set_num_threads(int(os.environ.get("THAW_TORCH_THREADS", "1")))
PIPE = DiffusionPipeline.from_pretrained(
    os.environ["THAW_MODEL"], dtype=torch.float32, local_files_only=True
).to("cpu")


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    body = json.loads(event["body"])
    with torch.inference_mode():
        image = PIPE(
            prompt=body["prompt"],
            num_inference_steps=body["num_inference_steps"],
            width=body["width"],
            height=body["height"],
            generator=torch.Generator("cpu").manual_seed(body["seed"]),
        ).images[0]
    png = io.BytesIO()
    image.save(png, format="PNG")
    return {
        "statusCode": 200,
        "headers": {"content-type": "image/png"},
        "body": base64.b64encode(png.getvalue()).decode(),
        "isBase64Encoded": True,
    }
