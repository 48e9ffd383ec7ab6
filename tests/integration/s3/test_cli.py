"""`python -m runtime fetch s3://... --to DIR`: what the image's bake stage runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.s3.conftest import object_gets
from tests.support.hub_cache import folder_files
from tests.support.s3_server import S3Server
from tests.support.server import ROOT


def bake(s3: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "fetch", *args],
        cwd=ROOT,
        env={**os.environ, **s3.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bake_from_s3_writes_the_model_with_progress(
    s3: S3Server, s3_model: str, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "opt" / "model"
    done = bake(s3, s3_model, "--to", str(out), "--part-mb", "1")
    assert done.returncode == 0, done.stderr
    assert folder_files(out) == folder_files(tiny_model)
    assert "100.0% 8/8 MB 10/10 files" in done.stderr  # the last progress line
    assert f"fetched {s3_model} into {out}" in done.stderr


def test_a_failed_bake_says_why_and_leaves_nothing(
    s3: S3Server, s3_model: str, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    s3.break_key("unet/diffusion_pytorch_model.safetensors", "cut", after=100_000)
    try:
        s3.clear_requests()
        failed = bake(s3, s3_model, "--to", str(out), "--quiet")
    finally:
        s3.heal()
    assert failed.returncode == 1
    assert "error: S3Unreachable: connection to S3 lost while reading" in failed.stderr
    assert list(tmp_path.iterdir()) == []
    assert len(object_gets(s3.requests())) > 1

    missing = bake(s3, "s3://models/nothing-here", "--to", str(out))
    assert missing.returncode == 1
    assert "no objects under s3://models/nothing-here" in missing.stderr
