"""The log stream is JSON lines, every one of them: what a log pipeline (CloudWatch, Cloud
Logging, Loki) parses. Model libraries print warnings and progress bars of their own, in the
worker process too; they must arrive as JSON records or not at all."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.server import ServerProcess


def test_every_line_of_a_load_and_a_generation_is_json(tiny_model: Path) -> None:
    server = ServerProcess({"THAW_MODEL": str(tiny_model)}).start()
    try:
        server.wait_ready()
        body = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 64, "height": 64}
        assert server.post("/generate", json=body).status_code == 200
    finally:
        server.stop()
    lines = [line for line in server.log.splitlines() if line.strip()]
    plain = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            plain.append(line)
    assert plain == [], f"{len(plain)} of {len(lines)} lines are not JSON: {plain[:5]}"
