"""A request no model can serve is refused when it arrives, whether a model is loaded or not.

Before its first load a server cannot know what its model takes; it can know what no model
takes. `true_cfg_scale` above 1 without a negative prompt is such a request: a model that takes
`true_cfg_scale` (Flux) would skip true guidance without one, and any other model refuses the
field. Refused only once a model ran it, a job would be accepted (202) and fail later, after
paying for a load; a synchronous request would hold a queue place through the whole load.

Once a model has loaded, what it takes is known for as long as the process lives: after an
idle unload, a request the model refuses is a 422 at once, and starts no reload to find out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

QUICK = {"prompt": "a fox", "num_inference_steps": 2, "width": 64, "height": 64}
NO_MODEL_TAKES = {**QUICK, "true_cfg_scale": 2.0}
IDLE_S = 1.0


def wait_health(server: ServerProcess, timeout: float, **expected: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = server.get("/health").json()
        if all(health.get(key) == value for key, value in expected.items()):
            return health
        time.sleep(0.05)
    raise AssertionError(f"/health never showed {expected}; last: {health}")


@pytest.fixture(scope="module")
def lazy_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_PRELOAD": "lazy",
            "THAW_JOBS_DIR": str(tmp_path_factory.mktemp("jobs")),
            "THAW_TORCH_THREADS": "1",
        }
    ).start()
    try:
        server.wait_live(60)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/jobs", "/generate", "/v1/images/generations"])
def test_before_any_load_what_no_model_takes_is_a_422_and_loads_nothing(
    lazy_server: ServerProcess, path: str
) -> None:
    body = dict(NO_MODEL_TAKES)
    if path.startswith("/v1"):
        body = {"prompt": "a fox", "size": "64x64", "true_cfg_scale": 2.0}
    response = lazy_server.post(path, json=body)
    assert response.status_code == 422, response.text
    assert "true_cfg_scale" in response.text
    assert "negative_prompt" in response.text
    health = lazy_server.get("/health").json()
    assert (health["status"], health["load_attempts"]) == ("cold", 0), health


@pytest.fixture(scope="module")
def idle_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_IDLE_UNLOAD_S": str(IDLE_S),
            "THAW_JOBS_DIR": str(tmp_path_factory.mktemp("jobs")),
            "THAW_TORCH_THREADS": "1",
        }
    ).start()
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


def test_after_an_idle_unload_what_the_model_refuses_is_a_422_without_a_reload(
    idle_server: ServerProcess,
) -> None:
    server = idle_server
    assert server.post("/generate", json=QUICK).status_code == 200
    wait_health(server, IDLE_S + 30, status="cold")
    # Stable Diffusion takes no max_sequence_length: known from its load, so no reload to learn.
    for path in ("/jobs", "/generate"):
        response = server.post(path, json={**QUICK, "max_sequence_length": 64})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["message"].startswith("max_sequence_length: ")
    health = server.get("/health").json()
    assert (health["status"], health["load_attempts"]) == ("cold", 1), health
