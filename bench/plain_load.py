"""Baseline: a plain script that imports and loads the model sequentially, then says so.

It loads in the dtype thaw is given (THAW_DTYPE, float32 when unset or `auto` on a CPU), so the
two do the same work: an fp16 model upcast to float32 costs far more than the load itself.
"""

import os
import sys

import torch
from diffusers import DiffusionPipeline

name = os.environ.get("THAW_DTYPE", "auto")
dtype = torch.float32 if name == "auto" else getattr(torch, name)
pipe = DiffusionPipeline.from_pretrained(
    os.environ["THAW_MODEL"], dtype=dtype, local_files_only=True
).to("cpu")
sys.stdout.write("loaded\n")
sys.stdout.flush()
