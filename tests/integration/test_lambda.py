"""The real `awslambdaric` client against the Runtime API emulator, with the tiny model.

Every environment here is a real `python -m awslambdaric handler.lambda_function.handler`
process, frozen with SIGSTOP between invocations as Lambda freezes it.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lambda_emulator import Invocation, RuntimeApiEmulator

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One intra-op thread: on a small shared CPU, torch's spinning worker threads can make a 50 ms
# generation take seconds.
BASE_ENV = {"THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "info"}


def event(name: str, **body: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if body:
        loaded["body"] = json.dumps({**json.loads(loaded["body"]), **body})
    return loaded


def health(emulator: RuntimeApiEmulator) -> dict[str, Any]:
    answer = emulator.invoke(event("function_url_health.json"), timeout_ms=10_000)
    assert answer.outcome == "response", answer.body
    assert answer.result["statusCode"] == 200
    report: dict[str, Any] = json.loads(answer.result["body"])
    return report


def png_of(answer: Invocation) -> bytes:
    assert answer.outcome == "response", answer.body
    result = answer.result
    assert result["statusCode"] == 200, result
    assert result["isBase64Encoded"] is True
    png = base64.b64decode(result["body"])
    assert png.startswith(PNG_MAGIC)
    return png


@pytest.fixture(scope="module")
def on_demand(tiny_model: Path) -> Iterator[tuple[RuntimeApiEmulator, Invocation]]:
    """One on-demand environment whose first event was waiting before INIT began."""
    emulator = RuntimeApiEmulator()
    first = emulator.submit(event("function_url_generate.json"), timeout_ms=120_000)
    emulator.start(
        {
            **BASE_ENV,
            "THAW_MODEL": str(tiny_model),
            "THAW_PRELOAD": "background",
            "THAW_LAMBDA_MAX_RESPONSE_BYTES": "100000",
        }
    )
    try:
        first.wait(150)
        yield emulator, first
    finally:
        emulator.close()


def test_on_demand_first_invoke_waits_for_the_background_load(
    on_demand: tuple[RuntimeApiEmulator, Invocation],
) -> None:
    emulator, first = on_demand
    png_of(first)
    assert first.answered_before_deadline
    report = health(emulator)
    # The event was handed out as INIT ended, long before the load (torch imports included)
    # could finish, and it still got its image from that one load.
    assert first.handed_out_at is not None
    assert report["load_seconds"] > first.handed_out_at - emulator.spawned_at - 1
    assert report["load_attempts"] == 1
    assert first.result["headers"]["x-seed"] == "7"


def test_twenty_function_url_invocations_share_one_load(
    on_demand: tuple[RuntimeApiEmulator, Invocation],
) -> None:
    emulator, _ = on_demand
    freezes_before = emulator.freezes
    for seed in range(20):
        answer = emulator.invoke(event("function_url_generate.json", seed=seed), timeout_ms=60_000)
        png_of(answer)
        assert answer.result["headers"]["x-seed"] == str(seed)
        # Frozen after each response, as Lambda does, and thawed for the next event.
        assert emulator.frozen
        assert emulator.process_state() == "T"
    assert emulator.freezes - freezes_before == 20
    report = health(emulator)
    assert report["load_attempts"] == 1
    assert report["loads_completed"] == 1
    assert emulator.log.count('"model load started"') == 1
    assert emulator.log.count("lambda init: loading in the background") == 1


@pytest.mark.parametrize(
    "name", ["eventbridge_scheduled.json", "serverless_plugin_warmup.json", "thaw_warmup_one"]
)
def test_a_warmup_ping_answers_warm_without_inference_or_mangum(
    on_demand: tuple[RuntimeApiEmulator, Invocation], name: str
) -> None:
    emulator, _ = on_demand
    served_before = health(emulator)["served"]
    payload = {"thaw": "warmup"} if name == "thaw_warmup_one" else event(name)
    answer = emulator.invoke(payload, timeout_ms=10_000)
    assert answer.outcome == "response", answer.body  # not a Lambda error: Mangum never saw it
    report = answer.result
    assert report["warm"] is True
    assert report["cold_start"] is False
    assert report["status"] == "ready"
    assert report["load_seconds"] > 0
    assert len(report["environment_id"]) == 12
    after = health(emulator)
    assert after["served"] == served_before  # no inference ran
    assert after["loads_completed"] == 1
    assert "unable to infer" not in emulator.log


@pytest.mark.parametrize(
    "name", ["alb_generate.json", "http_api_v2_generate_get.json", "api_gateway_rest_health.json"]
)
def test_other_http_sources_work_through_mangum(
    on_demand: tuple[RuntimeApiEmulator, Invocation], name: str
) -> None:
    emulator, _ = on_demand
    answer = emulator.invoke(event(name), timeout_ms=30_000)
    if name.endswith("health.json"):
        # REST API events carry multi-value headers, so the answer does too.
        assert answer.result["statusCode"] == 200
        assert answer.result["multiValueHeaders"] is not None
        assert json.loads(answer.result["body"])["status"] == "ready"
    else:
        png_of(answer)


def test_an_unsupported_event_gets_a_clear_error_result(
    on_demand: tuple[RuntimeApiEmulator, Invocation],
) -> None:
    emulator, _ = on_demand
    answer = emulator.invoke(event("s3_put.json"), timeout_ms=10_000)
    assert answer.outcome == "response"
    assert answer.result["error"]["code"] == "unsupported_event"
    assert "Records" in answer.result["error"]["message"]


def test_a_response_over_the_lambda_limit_is_a_413(
    on_demand: tuple[RuntimeApiEmulator, Invocation],
) -> None:
    emulator, _ = on_demand
    # Random-weight images are noise, which PNG cannot compress: 256² is about 200 kB base64,
    # over this environment's 100 kB limit (the real 6 MB one is checked in the unit tests).
    answer = emulator.invoke(
        event("function_url_generate.json", width=256, height=256), timeout_ms=60_000
    )
    assert answer.outcome == "response", answer.body
    assert answer.result["statusCode"] == 413
    error = json.loads(answer.result["body"])["error"]
    assert error["code"] == "payload_too_large"
    assert "100000-byte Lambda response limit" in error["message"]


def openai_event(**fields: Any) -> dict[str, Any]:
    """A function URL `POST /v1/images/generations` event (OpenAI's Images API)."""
    loaded = event("function_url_generate.json")
    loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = "/v1/images/generations"
    loaded["headers"]["accept"] = "application/json"
    body = {"prompt": "a red fox", "size": "64x64", "num_inference_steps": 1, "seed": 7}
    loaded["body"] = json.dumps({**body, **fields})
    return loaded


def test_an_openai_answer_over_the_lambda_limit_is_a_413_in_openai_shape(
    on_demand: tuple[RuntimeApiEmulator, Invocation],
) -> None:
    emulator, _ = on_demand
    small = emulator.invoke(openai_event(), timeout_ms=60_000)
    assert small.outcome == "response", small.body
    assert small.result["statusCode"] == 200, small.result
    (item,) = json.loads(small.result["body"])["data"]
    assert item["seed"] == 7
    assert base64.b64decode(item["b64_json"]).startswith(PNG_MAGIC)
    # 256² of noise is about 200 kB in base64, over this environment's 100 kB limit.
    big = emulator.invoke(openai_event(size="256x256"), timeout_ms=60_000)
    assert big.outcome == "response", big.body
    assert big.result["statusCode"] == 413
    error = json.loads(big.result["body"])["error"]
    assert set(error) == {"message", "type", "param", "code", "retry_after"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "payload_too_large")
    assert "100000-byte Lambda response limit" in error["message"]


def test_an_openai_generation_waits_for_the_load_as_generate_does(tiny_model: Path) -> None:
    emulator = RuntimeApiEmulator()
    first = emulator.submit(openai_event(), timeout_ms=120_000)
    emulator.start(
        {
            **BASE_ENV,
            "THAW_MODEL": str(tiny_model),
            "THAW_PRELOAD": "background",
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "3",
        }
    )
    try:
        first.wait(150)
        assert first.outcome == "response", first.body
        # Not a 503 warming_up: the invocation waited for the load within its own time.
        assert first.result["statusCode"] == 200, first.result
        (item,) = json.loads(first.result["body"])["data"]
        assert base64.b64decode(item["b64_json"]).startswith(PNG_MAGIC)
    finally:
        emulator.close()


def test_provisioned_concurrency_loads_in_init_before_the_first_event(tiny_model: Path) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start(
        {**BASE_ENV, "THAW_MODEL": str(tiny_model), "THAW_WARM_INFERENCE": "1"},
        init_type="provisioned-concurrency",
    )
    try:
        init_s = emulator.wait_init(150)
        # INIT ended with no event waiting: the environment is frozen, the model already in.
        assert emulator.frozen
        report = health(emulator)
        assert report["status"] == "ready"
        assert report["loads_completed"] == 1
        assert report["load_seconds"] <= init_s
        # THAW_WARM_INFERENCE ran one tiny generation inside the load, not as a served request.
        assert [p["name"] for p in report["phases"]][-1] == "warmup"
        assert report["served"] == 0
        assert "lambda init: loading the model" in emulator.log
        png_of(emulator.invoke(event("function_url_generate.json"), timeout_ms=30_000))
        assert health(emulator)["load_attempts"] == 1
    finally:
        emulator.close()


def test_a_freeze_mid_load_resumes_and_a_short_deadline_gets_a_clean_503(
    tiny_model: Path,
) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start(
        {
            **BASE_ENV,
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "1.5",
            "THAW_LAMBDA_MARGIN_S": "1.5",
        }
    )
    try:
        emulator.wait_init(60)
        # INIT started the load in the background, then the idle environment was frozen.
        assert emulator.frozen
        # Frozen whole, as Lambda does it: the runtime and the model worker loading for it.
        environment = emulator.environment_pids()
        assert len(environment) == 2
        assert [emulator.process_state(pid) for pid in environment] == ["T", "T"]
        frozen_for = 3.0
        time.sleep(frozen_for)
        # Thawed by an invoke with 4 s left: the load (torch imports still ahead) outlasts the
        # 2.5 s it may wait (the margin leaves time to answer on a busy machine).
        short = emulator.invoke(event("function_url_generate.json"), timeout_ms=4_000)
        assert short.outcome == "response", short.body
        assert short.answered_at is not None
        assert short.deadline_ms is not None
        late_ms = short.answered_at * 1000 - short.deadline_ms
        assert short.answered_before_deadline, f"answered {late_ms:.0f} ms after the deadline"
        assert short.result["statusCode"] == 503
        assert int(short.result["headers"]["retry-after"]) >= 1
        assert json.loads(short.result["body"]) == {
            "error": {
                "code": "warming_up",
                "message": "the model is still loading",
                "retry_after": int(short.result["headers"]["retry-after"]),
            }
        }
        # The same load carries on (only while thawed) and the next event gets its image.
        png_of(emulator.invoke(event("function_url_generate.json"), timeout_ms=120_000))
        report = health(emulator)
        assert report["load_attempts"] == 1
        assert report["loads_completed"] == 1
        # The one load began in INIT, before the freeze, and finished after the thaw.
        assert report["load_seconds"] >= frozen_for
    finally:
        emulator.close()


def get_event(path: str) -> dict[str, Any]:
    """A function URL `GET path` event."""
    loaded = event("function_url_health.json")
    loaded["rawPath"] = path
    loaded["requestContext"]["http"]["path"] = path
    return loaded


def test_only_paths_that_need_the_model_wait_for_it(tiny_model: Path) -> None:
    emulator = RuntimeApiEmulator()
    emulator.start(
        {
            **BASE_ENV,
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            # Far longer than these invocations take, unless one of them waits for the load.
            "THAW_TEST_LOAD_DELAY_S": "20",
            "THAW_WARM_WAIT_S": "120",
        }
    )
    try:
        emulator.wait_init(60)
        answers = {
            path: emulator.invoke(get_event(path), timeout_ms=60_000)
            for path in ("/metrics", "/openapi.json", "/no-such-path")
        }
        assert all(answer.outcome == "response" for answer in answers.values())
        statuses = {path: answer.result["statusCode"] for path, answer in answers.items()}
        assert statuses == {
            "/metrics": 200,
            "/openapi.json": 200,
            "/no-such-path": 404,
        }
        # Had any of them waited for the model, the load would be over by now.
        metrics = emulator.invoke(get_event("/metrics"), timeout_ms=60_000).result["body"]
        assert 'thaw_model_state{state="warming_up"} 1.0' in metrics
        assert health(emulator)["status"] == "warming_up"
    finally:
        emulator.close()


def test_a_load_failure_in_provisioned_init_is_an_init_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    emulator = RuntimeApiEmulator()
    emulator.start(
        {**BASE_ENV, "THAW_MODEL": str(missing), "THAW_LOAD_ATTEMPTS": "1"},
        init_type="provisioned-concurrency",
    )
    try:
        assert emulator.init_failed.wait(120), emulator.log[-3000:]
        assert emulator.init_error is not None
        assert emulator.init_error["errorType"] == "LoadFailed"
        assert str(missing) in emulator.init_error["errorMessage"]
        assert emulator.init_error_type == "LoadFailed"
        assert emulator.proc is not None
        assert emulator.proc.wait(30) != 0
        assert not emulator.init_done.is_set()  # it never asked for an event
    finally:
        emulator.close()


def test_a_bad_setting_is_an_init_error_naming_the_variable() -> None:
    emulator = RuntimeApiEmulator()
    emulator.start({**BASE_ENV, "THAW_PRELOAD": "sometimes"})
    try:
        assert emulator.init_failed.wait(60), emulator.log[-3000:]
        assert emulator.init_error is not None
        assert emulator.init_error["errorType"] == "SettingsError"
        assert "THAW_PRELOAD" in emulator.init_error["errorMessage"]
    finally:
        emulator.close()


def test_the_container_entry_script_hands_the_process_to_awslambdaric() -> None:
    """What the image's ENTRYPOINT runs on Lambda, against the emulator (lazy: no model)."""
    emulator = RuntimeApiEmulator()
    script = str(Path(__file__).resolve().parents[2] / "infra" / "docker" / "entrypoint.py")
    emulator.start({**BASE_ENV, "THAW_PRELOAD": "lazy"}, argv=[sys.executable, script])
    try:
        emulator.wait_init(60)
        report = health(emulator)
        assert report["status"] == "cold"
        assert "lambda init: lazy, nothing loaded" in emulator.log
    finally:
        emulator.close()


def test_a_warmup_fans_out_through_the_invoke_api_to_another_environment(
    tiny_model: Path,
) -> None:
    """concurrency 2: the real boto3 client in one environment invokes the function (same
    qualifier) over Lambda's Invoke API, and the invoke lands on a second environment."""
    # Both environments load at once here: give the warm-up the whole invocation to wait.
    env = {
        **BASE_ENV,
        "THAW_MODEL": str(tiny_model),
        "THAW_PRELOAD": "lazy",
        "THAW_WARM_WAIT_S": "170",
    }
    other = RuntimeApiEmulator()
    first = RuntimeApiEmulator(invoke_target=other)
    other.start(env)
    first.start(env)
    try:
        first.wait_init(60)
        other.wait_init(60)
        answer = first.invoke({"thaw": "warmup", "concurrency": 2}, timeout_ms=180_000)
        assert answer.outcome == "response", answer.body
        report = answer.result
        assert report["warm"] is True
        assert report["cold_start"] is True
        fan_out = report["fan_out"]
        assert fan_out["errors"] == []
        assert fan_out["requested"] == 1
        assert fan_out["answered"] == 1
        assert fan_out["environments"] == 2
        assert fan_out["environment_ids"] != [report["environment_id"]]
        assert first.invoke_requests == [("thaw-test", {"Qualifier": ["live"]})]
        for environment in (first, other):
            report = health(environment)
            assert report["loads_completed"] == 1
            assert report["served"] == 0
    finally:
        first.close()
        other.close()
