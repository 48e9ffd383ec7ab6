"""The service with `THAW_MODEL=s3://...`: real uvicorn, real boto3, moto's S3 server over HTTP."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from runtime.weights.fetch import cache_folder
from runtime.weights.s3 import S3Location
from tests.integration.s3.conftest import object_gets
from tests.support.s3_server import S3Server
from tests.support.server import ServerProcess

UNET = "unet/diffusion_pytorch_model.safetensors"
SMALL: dict[str, Any] = {"prompt": "a red fox", "num_inference_steps": 2, "width": 64, "height": 64}


def serve(s3: S3Server, ref: str, cache: Path, **env: str) -> ServerProcess:
    return ServerProcess(
        {
            **s3.env(),
            "THAW_MODEL": ref,
            "THAW_CACHE_DIR": str(cache),
            "THAW_S3_PART_MB": "1",
            "THAW_WARM_WAIT_S": "120",  # a request may wait through a whole cold load
            **env,
        }
    ).start()


def cached(s3: S3Server, cache: Path, ref: str) -> list[str]:
    folder = cache_folder(cache, S3Location.parse(ref), s3.endpoint)
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.exists() else []


def wait_health(server: ServerProcess, status: str, timeout: float = 90) -> dict[str, Any]:
    server.wait_live()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health: dict[str, Any] = server.get("/health").json()
        if health["status"] == status:
            return health
        time.sleep(0.1)
    raise TimeoutError(f"never {status}: {server.log[-3000:]}")


def test_serves_from_s3_and_a_restart_downloads_nothing(
    s3: S3Server, s3_model: str, tmp_path: Path
) -> None:
    server = serve(s3, s3_model, tmp_path)
    try:
        server.wait_ready()
        response = server.post("/generate", json=SMALL)
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"\x89PNG")
        phases = {p["name"]: p for p in server.get("/health").json()["phases"]}
    finally:
        assert server.stop() == 0
    fetch, imports = phases["fetch"], phases["import"]
    assert fetch["detail"]["bytes_done"] == fetch["detail"]["bytes_total"] > 8_000_000
    # The download ran while torch and diffusers were importing, not after.
    assert fetch["start_s"] < imports["start_s"] + imports["seconds"]
    assert phases["build"]["start_s"] >= fetch["start_s"] + fetch["seconds"]

    s3.clear_requests()
    again = serve(s3, s3_model, tmp_path)
    try:
        again.wait_ready()
        assert again.post("/generate", json=SMALL).status_code == 200
        health = again.get("/health").json()
    finally:
        assert again.stop() == 0
    assert object_gets(s3.requests()) == []
    assert s3.requests() == ["GET /models?list"]
    fetch = next(p for p in health["phases"] if p["name"] == "fetch")
    assert fetch["detail"]["cached"] is True


def test_a_download_cut_midway_fails_with_a_reason_then_recovers(
    s3: S3Server, s3_model: str, tmp_path: Path
) -> None:
    s3.break_key(UNET, "cut", after=500_000)
    server = serve(
        s3, s3_model, tmp_path, THAW_LOAD_ATTEMPTS="2", THAW_LOAD_BACKOFF_S="0.1",
        THAW_LOAD_COOLDOWN_S="1",
    )  # fmt: skip
    try:
        health = wait_health(server, "failed")
        assert health["load_attempts"] == 2
        assert "S3Unreachable: connection to S3 lost while reading" in health["last_error"]
        assert UNET in health["last_error"]
        refused = server.post("/generate", json=SMALL)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "load_failed"
        assert cached(s3, tmp_path, s3_model) == []  # nothing that could pass for a model

        s3.heal()
        time.sleep(1.0)  # the cool-down
        recovered = server.post("/generate", json=SMALL)
        assert recovered.status_code == 200, recovered.text
        assert len(cached(s3, tmp_path, s3_model)) == 1
    finally:
        s3.heal()
        assert server.stop() == 0


def test_a_process_killed_mid_download_leaves_no_model_behind(
    s3: S3Server, s3_model: str, tmp_path: Path
) -> None:
    s3.break_key(UNET, "stall", after=500_000)
    server = serve(s3, s3_model, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any(".tmp-" in name for name in cached(s3, tmp_path, s3_model)):
            assert time.monotonic() < deadline, server.log[-3000:]
            time.sleep(0.05)
        time.sleep(0.3)  # other files land; the unet stays half-written
        server.signal(signal.SIGKILL)  # a frozen Lambda environment that is then killed
        server.wait_exit()
    finally:
        s3.heal()
        server.stop()
    left = cached(s3, tmp_path, s3_model)
    assert len(left) == 1
    assert ".tmp-" in left[0]

    again = serve(s3, s3_model, tmp_path)
    try:
        again.wait_ready()
        assert again.post("/generate", json=SMALL).status_code == 200
    finally:
        assert again.stop() == 0
    left = cached(s3, tmp_path, s3_model)
    assert len(left) == 1
    assert ".tmp-" not in left[0]  # the leftover is gone, the complete copy is in place
