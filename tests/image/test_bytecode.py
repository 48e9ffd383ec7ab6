"""Every module the image imports has valid bytecode: on a read-only root (Lambda), a missing or
stale .pyc is compiled from source again at every cold start, and never saved.

The check runs inside the image, as its user, on a read-only root: it records each time Python's
source loader had to compile, while it imports thaw's packages, the runtime interface client and
uvicorn, and loads the baked model and generates with it (diffusers and transformers import much
of themselves lazily, at load and first use).
"""

from __future__ import annotations

import json

from infra.image.engine import Engine

CHECK = r"""
import importlib._bootstrap_external as external
import json
import pkgutil
import sys

compiled = []
original = external.SourceLoader.source_to_code


def recording(self, data, path, *args, **kwargs):
    compiled.append(path)
    return original(self, data, path, *args, **kwargs)


external.SourceLoader.source_to_code = recording

import handler, runtime
for package in (handler, runtime):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        # lambda_function's import is Lambda INIT (it starts the load); __main__ serves.
        if not module.name.endswith(("lambda_function", "__main__")):
            __import__(module.name)
import awslambdaric.bootstrap, mangum, uvicorn, uvicorn.main
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("/opt/thaw/model", local_files_only=True)
pipe.set_progress_bar_config(disable=True)
pipe("a lighthouse", num_inference_steps=1, width=64, height=64)
from_source = [
    m for m in list(sys.modules.values())
    if isinstance(getattr(m, "__loader__", None), external.SourceFileLoader)
]
print(json.dumps({"modules": len(from_source), "compiled": compiled}))
"""


def test_no_imported_module_is_compiled_at_start(engine: Engine, image: str) -> None:
    result = engine.run(
        "run", "--rm", "--network", "none",
        "--read-only", "--tmpfs", "/tmp:rw,size=256m,mode=1777",
        "--env", "PYTHONDONTWRITEBYTECODE=1", "--env", "THAW_TORCH_THREADS=1",
        "--entrypoint", "/opt/venv/bin/python", image, "-c", CHECK,
        timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] > 1000  # torch, diffusers, transformers and thaw did load
    assert report["compiled"] == []
