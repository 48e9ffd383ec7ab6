"""The Lambda adapter and warm-up fan-out, with a fake model loader and botocore's Stubber."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from runtime.aws.adapter import LambdaAdapter
from runtime.aws.events import InitType, WarmupRequest, WarmupSource
from runtime.aws.warmup import Target, Warmer, fan_out, fan_out_payload
from runtime.errors import LoadFailed, PayloadTooLarge, ThawError
from runtime.lifecycle.slot import ModelSlot, RetryPolicy
from runtime.lifecycle.states import SlotState
from runtime.settings import PreloadPolicy
from tests.support.fakes import CountingLoader
from tests.support.procs import run_python

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:thaw:live"


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


@dataclass
class Context:
    """A plain stand-in for Lambda's context object (the adapter's `LambdaContext` protocol)."""

    remaining_ms: int = 60_000
    invoked_function_arn: str = ARN
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.remaining_ms - (time.monotonic() - self.started) * 1000))


@dataclass
class RecordingHttp:
    """Stands in for Mangum: records what reached it and whether the model was ready then."""

    slot: ModelSlot[Any]
    body: str = "ok"
    calls: list[tuple[str, SlotState]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any], _context: Any) -> dict[str, Any]:
        self.calls.append((event.get("rawPath", event.get("path", "?")), self.slot.state))
        return {"statusCode": 200, "headers": {}, "body": self.body, "isBase64Encoded": False}


def make(
    loader: CountingLoader, *, invoker: Any = None, max_response_bytes: int = 6 * 1024 * 1024
) -> tuple[LambdaAdapter, RecordingHttp]:
    slot: ModelSlot[Any] = ModelSlot(
        "test", loader, release=loader.release, retry=RetryPolicy(attempts=1, cooldown_s=60)
    )
    http = RecordingHttp(slot)
    warmer = Warmer(slot, "env-self", invoker_factory=lambda: invoker, hold_s=0.0)
    adapter = LambdaAdapter(
        slot,
        http,
        warmer,
        margin_s=0.1,
        max_response_bytes=max_response_bytes,
        model_paths=("/generate",),
    )
    return adapter, http


def test_provisioned_init_loads_before_returning() -> None:
    loader = CountingLoader(delay=0.05)
    adapter, _ = make(loader)
    adapter.init(InitType.PROVISIONED, PreloadPolicy.BACKGROUND)
    assert adapter.slot.state is SlotState.READY
    assert loader.calls == 1


def test_provisioned_init_failure_raises_so_lambda_reports_it() -> None:
    adapter, _ = make(CountingLoader(failures=5))
    with pytest.raises(LoadFailed, match="weights unreadable"):
        adapter.init(InitType.PROVISIONED, PreloadPolicy.BACKGROUND)


def test_on_demand_init_starts_the_load_in_the_background() -> None:
    gate = threading.Event()
    loader = CountingLoader(gate=gate)
    adapter, _ = make(loader)
    adapter.init(InitType.ON_DEMAND, PreloadPolicy.BACKGROUND)
    assert adapter.slot.state is SlotState.LOADING
    gate.set()
    assert adapter.slot.wait_settled(5)
    assert adapter.slot.state is SlotState.READY


def test_lazy_init_loads_nothing() -> None:
    loader = CountingLoader()
    adapter, _ = make(loader)
    adapter.init(InitType.PROVISIONED, PreloadPolicy.LAZY)
    assert adapter.slot.state is SlotState.COLD
    assert loader.calls == 0


def test_http_waits_for_the_load_within_the_budget() -> None:
    loader = CountingLoader(delay=0.3)
    adapter, http = make(loader)
    adapter.init(InitType.ON_DEMAND, PreloadPolicy.BACKGROUND)
    result = adapter(event("function_url_generate.json"), Context(remaining_ms=5000))
    assert result["statusCode"] == 200
    assert http.calls == [("/generate", SlotState.READY)]


def test_http_stops_waiting_at_the_remaining_time_less_the_margin() -> None:
    gate = threading.Event()
    adapter, http = make(CountingLoader(gate=gate))
    adapter.init(InitType.ON_DEMAND, PreloadPolicy.BACKGROUND)
    started = time.monotonic()
    adapter(event("function_url_generate.json"), Context(remaining_ms=400))
    waited = time.monotonic() - started
    gate.set()
    # It waited about 0.3 s (0.4 s left less the 0.1 s margin), then let the app answer (503).
    assert 0.25 < waited < 1.5  # without the budget it would wait 10 s for the gate
    assert http.calls == [("/generate", SlotState.LOADING)]


def get_event(path: str) -> dict[str, Any]:
    loaded = event("function_url_health.json")
    loaded["rawPath"] = path
    loaded["requestContext"]["http"]["path"] = path
    return loaded


@pytest.mark.parametrize(
    "path", ["/health", "/livez", "/metrics", "/docs", "/openapi.json", "/nope"]
)
def test_paths_that_do_not_need_the_model_do_not_wait(path: str) -> None:
    gate = threading.Event()
    adapter, http = make(CountingLoader(gate=gate))
    adapter.init(InitType.ON_DEMAND, PreloadPolicy.BACKGROUND)
    try:
        # Waiting would hold the call until the gate's 10 s ran out and the model was ready.
        adapter(get_event(path), Context(remaining_ms=30_000))
        assert http.calls == [(path, SlotState.LOADING)]
    finally:
        gate.set()


def test_an_oversized_http_result_becomes_a_413() -> None:
    adapter, http = make(CountingLoader(), max_response_bytes=2048)
    http.body = "A" * 4096
    result = adapter(event("function_url_generate.json"), Context())
    assert result["statusCode"] == 413
    assert json.loads(result["body"])["error"]["code"] == "payload_too_large"


def test_an_oversized_result_is_refused_in_the_shape_the_function_gives_its_path() -> None:
    adapter, http = make(CountingLoader(), max_response_bytes=2048)
    seen: list[tuple[str | None, ThawError]] = []

    def http_error(path: str | None, error: ThawError) -> dict[str, Any]:
        seen.append((path, error))
        return {"statusCode": 413, "headers": {}, "body": "{}", "isBase64Encoded": False}

    adapter.http_error = http_error
    http.body = "A" * 4096
    result = adapter(event("function_url_generate.json"), Context())
    assert result["statusCode"] == 413
    ((path, error),) = seen
    assert path == "/generate"
    assert isinstance(error, PayloadTooLarge)
    assert (error.code, error.limit_bytes) == ("payload_too_large", 2048)
    assert "2048-byte Lambda response limit" in error.message


def test_an_unsupported_event_gets_a_clear_error_and_never_reaches_the_app() -> None:
    adapter, http = make(CountingLoader())
    result = adapter(event("s3_put.json"), Context())
    assert result["error"]["code"] == "unsupported_event"
    assert "Records" in result["error"]["message"]
    assert http.calls == []


@pytest.mark.parametrize("name", ["eventbridge_scheduled.json", "serverless_plugin_warmup.json"])
def test_a_warmup_ping_loads_reports_and_never_reaches_the_app(name: str) -> None:
    loader = CountingLoader(delay=0.05)
    adapter, http = make(loader)
    first = adapter(event(name), Context())
    second = adapter(event(name), Context())
    assert http.calls == []
    assert loader.calls == 1
    assert first["warm"] is True
    assert first["cold_start"] is True
    assert first["status"] == "ready"
    assert first["environment_id"] == "env-self"
    assert first["load_seconds"] is not None
    assert "fan_out" not in first
    assert second["cold_start"] is False


def test_a_warmup_that_outlasts_its_budget_reports_not_warm() -> None:
    gate = threading.Event()
    adapter, _ = make(CountingLoader(gate=gate))
    report = adapter(event("eventbridge_scheduled.json"), Context(remaining_ms=300))
    gate.set()
    assert report["warm"] is False
    assert report["status"] == "warming_up"
    assert report["error"]["code"] == "warming_up"


def test_a_fan_out_target_holds_itself_busy() -> None:
    adapter, _ = make(CountingLoader())
    started = time.monotonic()
    report = adapter({"thaw": "warmup", "hold_ms": 300}, Context())
    assert time.monotonic() - started >= 0.3
    assert report["warm"] is True


# -- fan-out with botocore's Stubber --------------------------------------------------------


def lambda_client() -> Any:
    return boto3.session.Session().client(
        "lambda",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def answer(environment_id: str) -> dict[str, Any]:
    data = json.dumps({"warm": True, "environment_id": environment_id}).encode()
    return {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(data), len(data))}


def expected(qualifier: str = "live") -> dict[str, Any]:
    return {
        "FunctionName": "thaw",
        "Qualifier": qualifier,
        "InvocationType": "RequestResponse",
        "Payload": fan_out_payload(0.0),
    }


def test_fan_out_invokes_n_minus_one_times_and_counts_distinct_environments() -> None:
    client = lambda_client()
    with Stubber(client) as stub:
        for environment_id in ("env-a", "env-b", "env-a", "env-c"):
            stub.add_response("invoke", answer(environment_id), expected())
        adapter, http = make(CountingLoader(), invoker=client)
        report = adapter(event("thaw_warmup.json") | {"concurrency": 5}, Context())
        stub.assert_no_pending_responses()
    assert http.calls == []
    fan = report["fan_out"]
    assert fan["requested"] == 4
    assert fan["answered"] == 4
    assert fan["environment_ids"] == ["env-a", "env-b", "env-c"]
    assert fan["environments"] == 4  # three others and this one
    assert fan["errors"] == []


def test_fan_out_reports_function_and_client_errors() -> None:
    client = lambda_client()
    crashed = json.dumps({"errorMessage": "boom", "errorType": "RuntimeError"}).encode()
    with Stubber(client) as stub:
        stub.add_response("invoke", answer("env-a"), expected())
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": StreamingBody(io.BytesIO(crashed), len(crashed)),
            },
            expected(),
        )
        stub.add_client_error(
            "invoke", "TooManyRequestsException", "Rate exceeded", 429, expected_params=expected()
        )
        report = fan_out(
            client, Target("thaw", "live"), 3, own_id="env-self", timeout_s=5, hold_s=0.0
        )
    assert report["answered"] == 1
    assert report["environments"] == 2
    joined = " | ".join(report["errors"])
    assert "Unhandled" in joined
    assert "boom" in joined
    assert "TooManyRequestsException" in joined


def test_fan_out_stops_waiting_at_its_deadline() -> None:
    release = threading.Event()

    class Stuck:
        def invoke(self, **_kwargs: Any) -> dict[str, Any]:
            release.wait(5)
            return answer("late")

    started = time.monotonic()
    report = fan_out(Stuck(), Target("thaw"), 2, own_id="env-self", timeout_s=0.2)
    release.set()
    assert time.monotonic() - started < 2.5  # not the 5 s the stuck invokes take
    assert report["answered"] == 0
    assert "did not answer" in report["errors"][0]


def test_fan_out_without_an_arn_says_why() -> None:
    adapter, _ = make(CountingLoader())
    warmer = adapter.warmer
    report = warmer.handle(WarmupRequest(WarmupSource.THAW, 3), budget_s=5, target=None)
    assert report["fan_out"]["answered"] == 0
    assert "ARN" in report["fan_out"]["errors"][0]


def test_lambda_init_imports_neither_torch_nor_boto3() -> None:
    """INIT is the cold start: with a lazy preload, importing the entry point stays light."""
    code = (
        "import json, sys\n"
        "import handler.lambda_function\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'boto3')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    env = {"THAW_PRELOAD": "lazy", "AWS_LAMBDA_FUNCTION_NAME": "thaw-test"}
    assert json.loads(run_python(code, env).strip().splitlines()[-1]) == []


def test_a_fan_out_without_a_client_still_warms_this_environment() -> None:
    def no_client() -> Any:
        raise RuntimeError("You must specify a region.")

    loader = CountingLoader()
    slot: ModelSlot[Any] = ModelSlot("test", loader)
    warmer = Warmer(slot, "env-self", invoker_factory=no_client)
    report = warmer.handle(
        WarmupRequest(WarmupSource.THAW, 2), budget_s=5, target=Target("thaw", "live")
    )
    assert report["warm"] is True
    assert "You must specify a region" in report["fan_out"]["errors"][0]
