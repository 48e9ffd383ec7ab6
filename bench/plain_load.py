"""Baseline: a plain script that imports and loads the model sequentially, then says so."""

import os
import sys

import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(
    os.environ["THAW_MODEL"], dtype=torch.float32, local_files_only=True
).to("cpu")
sys.stdout.write("loaded\n")
sys.stdout.flush()
