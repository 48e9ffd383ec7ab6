"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Every answer must be below 500 and every error must have the one JSON shape. The server's
bounds are tightened so each valid generation is quick; the example count is bounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def fuzz_server(tiny_model: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_MAX_STEPS": "3",
            "THAW_DEFAULT_STEPS": "2",
            "THAW_MAX_SIDE": "128",
            "THAW_MAX_PIXELS": "16384",
            "THAW_QUEUE_SIZE": "64",
        }
    ).start()
    proc.wait_ready()
    yield proc
    assert proc.stop() == 0


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_one_error_shape(
    fuzz_server: ServerProcess, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    statuses: Counter[int] = Counter()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(timeout=60)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (case.path, case.query, case.body, response.text)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) >= {"code", "message", "retry_after"}
            assert isinstance(error["code"], str)
            assert error["message"]

    check()
    print(f"fuzz {mode.value}: {sum(statuses.values())} requests, statuses {dict(statuses)}")
    assert sum(statuses.values()) >= 20
