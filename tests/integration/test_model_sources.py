"""The service and the bake CLI with a model from the Hugging Face cache; the CLI from S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.hub_cache import folder_files, hub_cache
from tests.support.server import ROOT, ServerProcess

REPO_ID = "thaw-test/tiny-sd"


def test_a_hub_id_is_served_from_a_hub_cache_folder(tiny_model: Path, tmp_path: Path) -> None:
    cache = hub_cache(tmp_path / "hub", REPO_ID, folder_files(tiny_model))
    server = ServerProcess(
        {"THAW_MODEL": REPO_ID, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    ).start()
    try:
        server.wait_ready()
        body = {"prompt": "a fox", "num_inference_steps": 2, "width": 64, "height": 64}
        response = server.post("/generate", json=body)
        assert response.status_code == 200, response.text
        health = server.get("/health").json()
    finally:
        assert server.stop() == 0
    assert health["model"] == REPO_ID
    names = [p["name"] for p in health["phases"] if p["name"] != "worker_start"]
    # The id is resolved first; the imports and the page-cache prefetch then run side by side,
    # in either order.
    assert names[0] == "resolve"
    assert {"import", "prefetch"} <= set(names)


def bake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "fetch", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_bake_cli_copies_a_hub_model_into_a_plain_folder(
    tiny_model: Path, tmp_path: Path
) -> None:
    cache = hub_cache(tmp_path / "hub", REPO_ID, folder_files(tiny_model))
    out = tmp_path / "image" / "model"
    env = {**os.environ, "HF_HUB_CACHE": str(cache)}
    done = bake(REPO_ID, "--to", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert folder_files(out) == folder_files(tiny_model)
    assert not any(p.is_symlink() for p in out.rglob("*"))  # real files, not links into blobs/

    again = bake(REPO_ID, "--to", str(out), env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
