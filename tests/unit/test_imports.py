"""Importing the app must not import torch, diffusers or transformers: that is the cold start."""

from __future__ import annotations

import json

from tests.support.procs import run_python

HEAVY = ("torch", "diffusers", "transformers")


def test_importing_the_app_leaves_heavy_modules_out() -> None:
    code = (
        "import json, sys\n"
        "import handler.app\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(run_python(code).strip().splitlines()[-1]) == []
