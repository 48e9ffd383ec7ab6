"""Baseline: the naive service. Imports torch and diffusers and loads the model at import time,
so it listens only once the model is loaded (what the article warns against)."""

import os

import torch
from diffusers import DiffusionPipeline
from fastapi import FastAPI

pipe = DiffusionPipeline.from_pretrained(
    os.environ["THAW_MODEL"], dtype=torch.float32, local_files_only=True
)
app = FastAPI()


@app.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "alive"}
