"""thaw's Lambda entry point under AWS's own Runtime Interface Emulator, with the tiny model.

The emulator is the binary from the pinned `aws-sam-cli` wheel (tests/support/rie.py), running
the real `python -m awslambdaric handler.lambda_function.handler`. It runs INIT on the first
invoke and never freezes; thaw's own emulator (test_lambda.py) covers freezing and INIT types.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rie import RieEnvironment, RieUnavailable, free_port, install

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE_ENV = {"THAW_TORCH_THREADS": "1", "THAW_LOG_LEVEL": "info"}


@pytest.fixture(scope="module", autouse=True)
def rie_binary() -> Path:
    try:
        return install()
    except RieUnavailable as exc:  # no PyPI here: say so rather than pass silently
        pytest.skip(f"AWS's Runtime Interface Emulator is not installable: {exc}")


def event(name: str, **body: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if body:
        loaded["body"] = json.dumps({**json.loads(loaded["body"]), **body})
    return loaded


def get_event(path: str) -> dict[str, Any]:
    loaded = event("function_url_health.json")
    loaded["rawPath"] = path
    loaded["requestContext"]["http"]["path"] = path
    return loaded


def health(rie: RieEnvironment) -> dict[str, Any]:
    answer = rie.invoke(get_event("/health"))
    assert answer["statusCode"] == 200, answer
    report: dict[str, Any] = json.loads(answer["body"])
    return report


def png_of(answer: dict[str, Any]) -> bytes:
    assert answer["statusCode"] == 200, answer
    assert answer["isBase64Encoded"] is True
    png = base64.b64decode(answer["body"])
    assert png.startswith(PNG_MAGIC)
    return png


@pytest.fixture(scope="module")
def environment(tiny_model: Path) -> Iterator[RieEnvironment]:
    """One environment whose load is held back 3 s (so its first invoke finds it cold) and whose
    warm-up fan-out has credentials but an Invoke API on a closed loopback port."""
    rie = RieEnvironment(
        {
            **BASE_ENV,
            "THAW_MODEL": str(tiny_model),
            "THAW_LOADER": "tests.support.slow_loader:load",
            "THAW_TEST_LOAD_DELAY_S": "3",
            "THAW_MAX_PIXELS": str(1536 * 1536),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{free_port()}",
        }
    )
    try:
        yield rie
    finally:
        rie.close()


def test_a_cold_readyz_is_a_503_then_generate_waits_and_answers_a_png(
    environment: RieEnvironment,
) -> None:
    # The first invoke runs INIT (which starts the load in the background), then /readyz, which
    # does not wait for the model.
    ready = environment.invoke(get_event("/readyz"))
    assert ready["statusCode"] == 503, ready
    assert int(ready["headers"]["retry-after"]) >= 1
    assert json.loads(ready["body"])["status"] == "warming_up"
    # /generate waits for the same load within the invocation's time.
    first = environment.invoke(event("function_url_generate.json"))
    png_of(first)
    assert first["headers"]["x-seed"] == "7"
    assert environment.invoke(get_event("/readyz"))["statusCode"] == 200


def test_warm_invokes_share_the_one_load(environment: RieEnvironment) -> None:
    environment.invoke(event("function_url_generate.json"))  # whatever ran first, warm now
    for seed in range(5):
        answer = environment.invoke(event("function_url_generate.json", seed=seed))
        png_of(answer)
        assert answer["headers"]["x-seed"] == str(seed)
    report = health(environment)
    assert report["load_attempts"] == 1
    assert report["loads_completed"] == 1
    assert environment.log.count('"model load started"') == 1
    assert environment.log.count("INIT START") == 1


def test_a_base64_request_body_is_decoded(environment: RieEnvironment) -> None:
    request = event("function_url_generate.json", seed=11)
    request["body"] = base64.b64encode(request["body"].encode()).decode()
    request["isBase64Encoded"] = True
    answer = environment.invoke(request)
    png_of(answer)
    assert answer["headers"]["x-seed"] == "11"


@pytest.mark.parametrize(
    "payload",
    [
        "eventbridge_scheduled.json",
        "serverless_plugin_warmup.json",
        "thaw_warmup.json",
        {"thaw": "warmup"},
    ],
)
def test_each_warmup_payload_answers_warm_without_inference(
    environment: RieEnvironment, payload: str | dict[str, Any]
) -> None:
    environment.invoke(event("function_url_generate.json"))  # loaded, whatever ran first
    served = health(environment)["served"]
    body = json.loads((EVENTS / payload).read_text()) if isinstance(payload, str) else payload
    report = environment.invoke(body)
    assert report["warm"] is True
    assert report["cold_start"] is False
    assert report["status"] == "ready"
    assert len(report["environment_id"]) == 12
    if report["concurrency"] > 1:  # thaw_warmup.json asks for a fan-out: no AWS answers here
        assert report["fan_out"]["answered"] == 0
        assert report["fan_out"]["errors"]
    assert health(environment)["served"] == served


def test_a_fan_out_with_aws_unreachable_reports_its_errors_and_warms_here(
    environment: RieEnvironment,
) -> None:
    report = environment.invoke({"thaw": "warmup", "concurrency": 3})
    assert report["warm"] is True
    fan_out = report["fan_out"]
    assert fan_out["requested"] == 2
    assert fan_out["answered"] == 0
    assert fan_out["environments"] == 1
    assert len(fan_out["errors"]) == 2
    assert all("EndpointConnectionError" in error for error in fan_out["errors"])


def test_a_response_over_six_megabytes_is_a_413_json_not_a_lambda_error(
    environment: RieEnvironment,
) -> None:
    # Random weights draw noise, which PNG cannot compress: 1536² is about 7 MB raw, 9 MB base64.
    status, body = environment.invoke_raw(
        event("function_url_generate.json", width=1536, height=1536)
    )
    assert status == 200, body[:2000]
    answer = json.loads(body)
    assert answer["statusCode"] == 413
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "payload_too_large"
    assert f"{6 * 1024 * 1024}-byte Lambda response limit" in error["message"]
    assert len(body) < 6 * 1024 * 1024


def test_a_fan_out_without_credentials_reports_it(tiny_model: Path) -> None:
    with RieEnvironment({**BASE_ENV, "THAW_MODEL": str(tiny_model)}) as rie:
        report = rie.invoke({"thaw": "warmup", "concurrency": 2})
        assert report["warm"] is True
        assert report["cold_start"] is True
        errors = report["fan_out"]["errors"]
        assert len(errors) == 1
        assert "NoCredentialsError" in errors[0], errors


# -- what an outside review tried (issue 16) ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"width": 63}, "width"),
        ({"prompt": ""}, "prompt"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_a_generate_that_fails_validation_is_a_422_response_not_a_lambda_error(
    environment: RieEnvironment, body: dict[str, Any], field: str
) -> None:
    status, raw = environment.invoke_raw(event("function_url_generate.json", **body))
    assert status == 200, raw[:2000]
    answer = json.loads(raw)
    assert "errorType" not in answer, answer  # an answer of the function, not a Lambda error
    assert answer["statusCode"] == 422, answer
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "invalid_request"
    assert field in error["message"]


def test_a_body_that_is_not_json_is_a_422_response(environment: RieEnvironment) -> None:
    request = event("function_url_generate.json")
    request["body"] = '{"prompt": "a fox", '
    answer = environment.invoke(request)
    assert answer["statusCode"] == 422, answer


@pytest.mark.parametrize(
    "payload",
    [
        {"version": "2.0", "requestContext": {}},  # a function URL event without "http"
        {"requestContext": {"elb": {}}},  # an ALB event without headers or path
        {"Records": [{"cf": {}}]},  # a Lambda@Edge event without a request
    ],
)
def test_an_http_shaped_event_mangum_cannot_translate_is_an_error_result(
    environment: RieEnvironment, payload: dict[str, Any]
) -> None:
    status, raw = environment.invoke_raw(payload, timeout_s=60)
    assert status == 200, raw[:2000]
    answer = json.loads(raw)
    assert "errorType" not in answer, answer
    assert answer["error"]["code"] == "unsupported_event"


def test_on_one_cpu_the_first_invoke_does_not_wait_for_a_server_lambda_never_starts(
    tiny_model: Path,
) -> None:
    """An environment with one vCPU (1,769 MB of memory or less): under `python -m handler`
    the model worker may be held until the server listens, but on Lambda nothing listens, so
    a hold would only be released by its time limit while the first invoke waits."""
    one = {min(os.sched_getaffinity(0))}
    env = {**BASE_ENV, "THAW_MODEL": str(tiny_model), "THAW_WARM_WAIT_S": "150"}
    with RieEnvironment(env, cpus=one) as rie:
        report = rie.invoke({"thaw": "warmup"})
        assert report["warm"] is True, report
        log = rie.log
    assert "worker released by its time limit" not in log, log[-3000:]
    assert log.count('"model load started"') == 1


def test_with_a_lazy_preload_a_warm_up_ping_loads_and_generate_follows(tiny_model: Path) -> None:
    """`THAW_PRELOAD=lazy`: INIT loads nothing; the first ping loads, then images follow."""
    env = {**BASE_ENV, "THAW_MODEL": str(tiny_model), "THAW_PRELOAD": "lazy"}
    with RieEnvironment(env) as rie:
        ready = rie.invoke(get_event("/readyz"))
        assert ready["statusCode"] == 503, ready
        report = rie.invoke({"thaw": "warmup"})
        assert report["warm"] is True, report
        assert report["cold_start"] is True
        png_of(rie.invoke(event("function_url_generate.json")))
        png_of(rie.invoke(event("function_url_generate.json", width=128, height=64, seed=None)))
        assert health(rie)["load_attempts"] == 1
