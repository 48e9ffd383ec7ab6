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


def test_a_jobs_store_in_s3_imports_boto3_only_when_it_is_used() -> None:
    code = (
        "import json, sys\n"
        "from runtime.settings import Settings\n"
        "from handler.app import job_store\n"
        "store = job_store(Settings.from_env({'THAW_JOBS_URL': 's3://bucket/jobs'}))\n"
        "print(json.dumps([type(store).__name__, 'boto3' in sys.modules]))\n"
    )
    assert json.loads(run_python(code).strip().splitlines()[-1]) == ["S3JobStore", False]
