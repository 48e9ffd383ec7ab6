"""The Knative, Kubernetes (+ KEDA HTTP add-on) and Cloud Run manifests, checked offline.

What is validated how:
- Deployment and Service: kubernetes-validate's bundled Kubernetes JSON schemas (strict: unknown
  fields fail), for Kubernetes `K8S_VERSION`.
- Knative Service and Cloud Run service (serving.knative.dev/v1): the wrapper against a
  structural schema written here from Knative's RevisionSpec fields, and the revision's pod spec
  (less Knative's own fields) against Kubernetes' strict PodSpec schema from the same bundle.
- KEDA HTTPScaledObject (http.keda.sh/v1alpha1, add-on v0.11-v0.15, with `timeouts`),
  InterceptorRoute (http.keda.sh/v1beta1, v0.14+) and ScaledObject (keda.sh/v1alpha1):
  structural schemas written here from the CRDs' fields (no CRD schema ships with
  kubernetes-validate).
Then the facts thaw depends on: probe paths and ports, grace periods against the drain timeout,
concurrency against the admission limit, and every THAW_* value parsed by the same settings
code the server uses; then each platform's timing rules (infra/timings.py says why each holds)
checked on the manifests' own numbers, and that the manifests carry what `timings.derive`
gives for their reference load times.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from handler.config import Config
from infra import timings
from infra.timings import POD_START_S, REFERENCE_LOAD_S, Platform, parse_go_duration
from runtime.lifecycle.drain import LISTENER_CLOSE_S
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S_VERSION = "1.33.0"
DEFAULTS = Settings()
# Cloud Run sends SIGKILL 10 s after SIGTERM; the grace period is not configurable.
CLOUD_RUN_GRACE_S = 10
CLOUD_RUN_MAX_STARTUP_S = 240
KNATIVE_REVISION_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)


def load(relative: str) -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all((INFRA / relative).read_text()) if doc]
    assert len(docs) == 1, f"{relative}: one object per file"
    doc: dict[str, Any] = docs[0]
    return doc


# -- schemas ------------------------------------------------------------------------------------

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}

GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
KNATIVE_TEMPLATE_META = {
    **META,
    "properties": {
        **META["properties"],
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "properties": {
                "serving.knative.dev/progress-deadline": GO_DURATION,
                "autoscaling.knative.dev/target-utilization-percentage": {
                    "type": "string",
                    "pattern": "^(100|[1-9][0-9]?)(\\.[0-9]+)?$",
                },
            },
        },
    },
}

KNATIVE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.knative.dev/v1"},
        "kind": {"const": "Service"},
        "metadata": {**META, "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["template"],
            "properties": {
                "template": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["spec"],
                    "properties": {
                        "metadata": KNATIVE_TEMPLATE_META,
                        "spec": {
                            "type": "object",
                            "required": ["containers"],
                            "properties": {
                                "containerConcurrency": {"type": "integer", "minimum": 0},
                                "timeoutSeconds": {"type": "integer", "minimum": 1},
                                "responseStartTimeoutSeconds": {"type": "integer", "minimum": 1},
                                "idleTimeoutSeconds": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
                "traffic": {"type": "array"},
            },
        },
    },
}

HTTP_SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "http.keda.sh/v1alpha1"},
        "kind": {"const": "HTTPScaledObject"},
        "metadata": {**META, "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef"],
            "properties": {
                "hosts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "pathPrefixes": {"type": "array", "items": {"type": "string"}},
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "service", "port"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "service": {"type": "string"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                },
                "replicas": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "min": {"type": "integer", "minimum": 0},
                        "max": {"type": "integer", "minimum": 1},
                    },
                },
                "scaledownPeriod": {"type": "integer", "minimum": 0},
                "scalingMetric": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "concurrency": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"targetValue": {"type": "integer", "minimum": 1}},
                        },
                        "requestRate": {"type": "object"},
                    },
                },
                # From v0.11; v0.14+ reads them as the route's readiness and responseHeader.
                "timeouts": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"conditionWait": GO_DURATION, "responseHeader": GO_DURATION},
                },
            },
        },
    },
}

# http.keda.sh/v1beta1 InterceptorRoute (add-on v0.14+), from the CRD's fields.
SERVICE_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
INTERCEPTOR_ROUTE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "http.keda.sh/v1beta1"},
        "kind": {"const": "InterceptorRoute"},
        "metadata": {**META, "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["target", "scalingMetric"],
            "properties": {
                "target": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["service"],
                    "properties": {
                        "service": {"type": "string", "minLength": 1},
                        "port": SERVICE_PORT,
                        "portName": {"type": "string", "minLength": 1},
                    },
                    "oneOf": [{"required": ["port"]}, {"required": ["portName"]}],
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "hosts": {"type": "array", "items": {"type": "string"}},
                            "paths": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["value"],
                                    "properties": {"value": {"type": "string", "minLength": 1}},
                                },
                            },
                            "headers": {"type": "array"},
                        },
                    },
                },
                "scalingMetric": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "concurrency": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"targetValue": {"type": "integer", "minimum": 1}},
                        },
                        "requestRate": {"type": "object"},
                    },
                },
                "coldStart": {"type": "object"},
                "proxyMode": {"enum": ["Service", "Endpoint"]},
                "timeouts": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "readiness": GO_DURATION,
                        "request": GO_DURATION,
                        "responseHeader": GO_DURATION,
                    },
                },
            },
        },
    },
}

# keda.sh/v1alpha1 ScaledObject, the fields used here from KEDA's CRD.
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {**META, "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": STRING_MAP,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}


def k8s_schema(name: str) -> jsonschema.protocols.Validator:
    """A strict validator for one bundled Kubernetes definition (e.g. `podspec-v1`)."""
    folder = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    folder = folder / f"v{K8S_VERSION}-local-strict"
    schema = json.loads((folder / f"{name}.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def pod_spec_of_revision(service: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(service["spec"]["template"]["spec"])
    for field in KNATIVE_REVISION_FIELDS:
        spec.pop(field, None)
    return spec


# -- the manifests --------------------------------------------------------------------------------

KNATIVE = "knative/service.yaml"
DEPLOYMENT = "kubernetes/deployment.yaml"
SERVICE = "kubernetes/service.yaml"
SCALER = "kubernetes/keda-httpscaledobject.yaml"
ROUTE = "kubernetes/interceptorroute/interceptorroute.yaml"
SCALED_OBJECT = "kubernetes/interceptorroute/scaledobject.yaml"
CLOUD_RUN = "cloudrun/service.yaml"


@pytest.mark.parametrize("relative", [DEPLOYMENT, SERVICE])
def test_kubernetes_objects_validate_against_the_kubernetes_schemas(relative: str) -> None:
    kubernetes_validate.validate(load(relative), K8S_VERSION, strict=True)


@pytest.mark.parametrize("relative", [KNATIVE, CLOUD_RUN])
def test_knative_services_validate_with_a_kubernetes_pod_spec(relative: str) -> None:
    service = load(relative)
    jsonschema.validate(service, KNATIVE_SERVICE)
    k8s_schema("podspec-v1").validate(pod_spec_of_revision(service))


@pytest.mark.parametrize(
    ("relative", "schema"),
    [
        (SCALER, HTTP_SCALED_OBJECT),
        (ROUTE, INTERCEPTOR_ROUTE),
        (SCALED_OBJECT, SCALED_OBJECT_SCHEMA),
    ],
)
def test_the_keda_objects_validate(relative: str, schema: dict[str, Any]) -> None:
    jsonschema.validate(load(relative), schema)


def test_the_validators_catch_mistakes() -> None:
    """The schemas above are strict enough to fail on a typo: a check that cannot fail is none."""
    deployment = load(DEPLOYMENT)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    knative = load(KNATIVE)
    knative["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["port"] = "x"
    knative["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["perodSeconds"] = 5
    with pytest.raises(jsonschema.ValidationError):
        k8s_schema("podspec-v1").validate(pod_spec_of_revision(knative))
    scaler = load(SCALER)
    scaler["spec"]["scalingMetric"]["concurency"] = {"targetValue": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaler, HTTP_SCALED_OBJECT)
    scaler = load(SCALER)
    scaler["spec"]["timeouts"]["conditionWait"] = 560  # a number, not a duration
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaler, HTTP_SCALED_OBJECT)
    route = load(ROUTE)
    route["spec"]["timeouts"]["conditionWait"] = "560s"  # the HTTPScaledObject's name
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(route, INTERCEPTOR_ROUTE)
    scaled = load(SCALED_OBJECT)
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    knative = load(KNATIVE)
    annotations = knative["spec"]["template"]["metadata"]["annotations"]
    annotations["serving.knative.dev/progress-deadline"] = "600"  # no unit
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(knative, KNATIVE_SERVICE)


# -- what thaw needs from them -------------------------------------------------------------------


def pod_spec(relative: str) -> dict[str, Any]:
    doc = load(relative)
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def container_of(relative: str) -> dict[str, Any]:
    containers = pod_spec(relative)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def config_of(relative: str) -> Config:
    """The container's THAW_* environment, parsed by the server's own settings code."""
    env = {item["name"]: item["value"] for item in container_of(relative)["env"]}
    assert all(name.startswith("THAW_") for name in env)
    return Config.from_env(env)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p.get("name") == port))


def startup_budget_s(probe: dict[str, Any]) -> int:
    initial: int = probe.get("initialDelaySeconds", 0)
    return initial + int(probe["periodSeconds"]) * int(probe["failureThreshold"])


ALL_PODS = [KNATIVE, DEPLOYMENT, CLOUD_RUN]


@pytest.mark.parametrize("relative", ALL_PODS)
def test_probes_point_at_readyz_and_livez_on_the_served_port(relative: str) -> None:
    container = container_of(relative)
    settings = config_of(relative).server
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    if "readinessProbe" in container:  # Cloud Run has none: its startup probe gates traffic
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    elif relative != CLOUD_RUN:
        pytest.fail(f"{relative}: no readiness probe")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            port = port_number(container, container[kind]["httpGet"]["port"])
            assert port == settings.port, f"{relative}: {kind} on {port}, served on {settings.port}"
    assert settings.host == "0.0.0.0"
    # A liveness probe that fails during a long load would restart the pod in a loop; the
    # startup probe holds liveness off until the model is ready.
    assert "initialDelaySeconds" not in container["livenessProbe"]


PLATFORM_OF = {
    KNATIVE: Platform.KNATIVE,
    DEPLOYMENT: Platform.KUBERNETES,
    CLOUD_RUN: Platform.CLOUD_RUN,
}


@pytest.mark.parametrize("relative", ALL_PODS)
def test_the_startup_budget_covers_a_failed_load_and_its_retry(relative: str) -> None:
    """A restart starts the load over: the budget holds two loads of the manifest's reference
    model and thaw's backoff between them."""
    settings = config_of(relative).runtime
    load_s = REFERENCE_LOAD_S[PLATFORM_OF[relative]]
    budget = startup_budget_s(container_of(relative)["startupProbe"])
    assert budget >= 2 * load_s + settings.load_backoff_s
    assert settings.load_timeout_s >= load_s  # an attempt is not cut before it can finish


@pytest.mark.parametrize("relative", ALL_PODS)
def test_every_probe_times_out_within_its_period(relative: str) -> None:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container_of(relative).get(kind, {})
        if "periodSeconds" in probe:
            assert probe["timeoutSeconds"] < probe["periodSeconds"], f"{relative}: {kind}"


def test_cloud_run_startup_probe_stays_within_its_limits() -> None:
    """Cloud Run: failureThreshold x periodSeconds <= 240 s, initialDelaySeconds <= 240 s (and
    no longer than the expected load), timeoutSeconds below periodSeconds."""
    probe = container_of(CLOUD_RUN)["startupProbe"]
    assert probe["timeoutSeconds"] < probe["periodSeconds"]
    assert probe["failureThreshold"] * probe["periodSeconds"] <= CLOUD_RUN_MAX_STARTUP_S
    delay = probe.get("initialDelaySeconds", 0)
    assert delay <= CLOUD_RUN_MAX_STARTUP_S
    assert delay <= REFERENCE_LOAD_S[Platform.CLOUD_RUN]


def test_cloud_run_request_timeout_holds_a_cold_start_and_a_generation() -> None:
    settings = config_of(CLOUD_RUN).runtime
    cold_start = timings.CLOUD_RUN_INSTANCE_START_S + REFERENCE_LOAD_S[Platform.CLOUD_RUN]
    timeout = pod_spec(CLOUD_RUN)["timeoutSeconds"]
    assert timeout >= cold_start + settings.request_timeout_s
    assert timeout <= timings.CLOUD_RUN_MAX_REQUEST_TIMEOUT_S


# -- Knative's own rules ---------------------------------------------------------------------------


def knative_annotations() -> dict[str, str]:
    annotations: dict[str, str] = load(KNATIVE)["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_knative_progress_deadline_outlives_the_startup_probe() -> None:
    deadline = parse_go_duration(
        knative_annotations().get("serving.knative.dev/progress-deadline", "600s")
    )
    budget = startup_budget_s(container_of(KNATIVE)["startupProbe"])
    assert deadline > budget + POD_START_S


def test_knative_one_request_keeps_one_pod() -> None:
    """The autoscaler's target is containerConcurrency x utilisation (70% by default)."""
    concurrency = pod_spec(KNATIVE)["containerConcurrency"]
    utilization = int(
        knative_annotations().get("autoscaling.knative.dev/target-utilization-percentage", "70")
    )
    assert concurrency * utilization / 100 == concurrency == DEFAULTS.max_concurrency


def test_knative_request_timeout_holds_a_cold_start_and_a_generation() -> None:
    """The activator counts the wait for a pod in timeoutSeconds; thaw's deadline does not."""
    settings = config_of(KNATIVE).runtime
    spec = pod_spec(KNATIVE)
    cold_start = POD_START_S + REFERENCE_LOAD_S[Platform.KNATIVE]
    assert spec["timeoutSeconds"] >= cold_start + settings.request_timeout_s
    assert spec["timeoutSeconds"] <= timings.KNATIVE_DEFAULT_MAX_TIMEOUT_S
    # The first byte is the finished image: the response-start timeout covers a generation.
    assert settings.request_timeout_s < spec["responseStartTimeoutSeconds"]
    assert spec["responseStartTimeoutSeconds"] <= spec["timeoutSeconds"]


def test_knative_readiness_probe_keeps_aggressive_probing() -> None:
    """The queue-proxy probes aggressively only when periodSeconds is 0."""
    assert container_of(KNATIVE)["readinessProbe"].get("periodSeconds", 0) == 0


# -- Kubernetes and the KEDA HTTP add-on -----------------------------------------------------------


def test_the_deployment_progress_deadline_outlives_the_startup_probe() -> None:
    deadline = load(DEPLOYMENT)["spec"].get("progressDeadlineSeconds", 600)
    budget = startup_budget_s(container_of(DEPLOYMENT)["startupProbe"])
    assert deadline > budget + POD_START_S


def test_the_kubernetes_drain_lets_queued_and_running_generations_finish() -> None:
    settings = config_of(DEPLOYMENT).runtime
    needed = settings.drain_delay_s + settings.queue_timeout_s + settings.request_timeout_s
    assert settings.drain_timeout_s >= needed


def keda_timeouts_hold(readiness: str, response_header: str) -> None:
    settings = config_of(DEPLOYMENT).runtime
    budget = startup_budget_s(container_of(DEPLOYMENT)["startupProbe"])
    # The interceptor holds the first request until the kubelet would give up on the pod.
    assert parse_go_duration(readiness) >= POD_START_S + budget
    # thaw answers after its warm wait, its queue wait and the generation.
    longest = settings.warm_wait_s + settings.queue_timeout_s + settings.request_timeout_s
    assert parse_go_duration(response_header) >= longest


def test_the_http_scaled_object_waits_out_a_cold_start_and_a_generation() -> None:
    timeouts = load(SCALER)["spec"]["timeouts"]
    keda_timeouts_hold(timeouts["conditionWait"], timeouts["responseHeader"])


def test_the_interceptor_route_waits_out_a_cold_start_and_a_generation() -> None:
    timeouts = load(ROUTE)["spec"]["timeouts"]
    keda_timeouts_hold(timeouts["readiness"], timeouts["responseHeader"])
    total = parse_go_duration(timeouts["readiness"]) + parse_go_duration(timeouts["responseHeader"])
    assert parse_go_duration(timeouts["request"]) >= total


def test_the_interceptor_route_and_its_scaled_object_scale_the_deployment_to_zero() -> None:
    route = load(ROUTE)
    scaled = load(SCALED_OBJECT)["spec"]
    deployment = load(DEPLOYMENT)
    service = load(SERVICE)
    assert route["spec"]["target"]["service"] == service["metadata"]["name"]
    assert route["spec"]["target"]["port"] in [port["port"] for port in service["spec"]["ports"]]
    assert route["spec"]["scalingMetric"]["concurrency"]["targetValue"] == DEFAULTS.max_concurrency
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["minReplicaCount"] == 0
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"]["interceptorRoute"] == route["metadata"]["name"]
    assert scaled["cooldownPeriod"] == load(SCALER)["spec"]["scaledownPeriod"]


# -- one source of truth ---------------------------------------------------------------------------


def probe_fields(probe: dict[str, Any]) -> timings.Probe:
    return timings.Probe(
        period_s=probe["periodSeconds"],
        timeout_s=probe["timeoutSeconds"],
        failure_threshold=probe["failureThreshold"],
        initial_delay_s=probe.get("initialDelaySeconds", 0),
    )


def derived(relative: str) -> Any:
    platform = PLATFORM_OF[relative]
    return timings.derive(platform, REFERENCE_LOAD_S[platform], config_of(relative).runtime)


@pytest.mark.parametrize("relative", ALL_PODS)
def test_the_manifests_carry_the_derived_timings(relative: str) -> None:
    expected = derived(relative)
    container = container_of(relative)
    settings = config_of(relative).runtime
    assert probe_fields(container["startupProbe"]) == expected.startup
    assert settings.drain_delay_s == expected.drain_delay_s
    assert settings.drain_timeout_s == expected.drain_timeout_s
    spec = pod_spec(relative)
    if relative == KNATIVE:
        annotations = knative_annotations()
        assert annotations["serving.knative.dev/progress-deadline"] == timings.go_duration(
            expected.progress_deadline_s
        )
        assert annotations["autoscaling.knative.dev/target-utilization-percentage"] == str(
            expected.target_utilization_percentage
        )
        assert spec["timeoutSeconds"] == expected.timeout_s
        assert spec["responseStartTimeoutSeconds"] == expected.response_start_timeout_s
        assert not expected.notes
    elif relative == DEPLOYMENT:
        assert load(DEPLOYMENT)["spec"]["progressDeadlineSeconds"] == expected.progress_deadline_s
        assert spec["terminationGracePeriodSeconds"] == expected.termination_grace_s
        http_so = load(SCALER)["spec"]["timeouts"]
        route = load(ROUTE)["spec"]["timeouts"]
        assert parse_go_duration(http_so["conditionWait"]) == expected.keda_readiness_s
        assert parse_go_duration(http_so["responseHeader"]) == expected.keda_response_header_s
        assert parse_go_duration(route["readiness"]) == expected.keda_readiness_s
        assert parse_go_duration(route["responseHeader"]) == expected.keda_response_header_s
        assert parse_go_duration(route["request"]) == expected.keda_request_s
    else:
        assert expected.fits
        assert spec["timeoutSeconds"] == expected.timeout_s


def grace_s(relative: str) -> int:
    spec = pod_spec(relative)
    if relative == KNATIVE:
        assert "terminationGracePeriodSeconds" not in spec  # Knative sets it from timeoutSeconds
        return int(spec["timeoutSeconds"])
    if relative == CLOUD_RUN:
        return CLOUD_RUN_GRACE_S
    return int(spec["terminationGracePeriodSeconds"])


@pytest.mark.parametrize("relative", ALL_PODS)
def test_the_grace_period_outlasts_the_drain(relative: str) -> None:
    settings = config_of(relative).runtime
    stop_s = settings.drain_timeout_s + LISTENER_CLOSE_S  # the timeout counts from SIGTERM
    assert grace_s(relative) > stop_s, f"{relative}: SIGKILL would come before the drain ends"
    assert settings.drain_timeout_s > settings.drain_delay_s


def test_only_plain_kubernetes_needs_a_drain_delay_and_none_needs_a_pre_stop() -> None:
    # Kubernetes takes the pod out of the endpoints while it sends SIGTERM: keep serving a moment.
    assert config_of(DEPLOYMENT).runtime.drain_delay_s >= 3
    # Knative's queue-proxy drains before the container gets SIGTERM; Cloud Run stops routing.
    assert config_of(KNATIVE).runtime.drain_delay_s == 0
    assert config_of(CLOUD_RUN).runtime.drain_delay_s == 0
    for relative in ALL_PODS:
        assert "lifecycle" not in container_of(relative)


@pytest.mark.parametrize("relative", [KNATIVE, CLOUD_RUN])
def test_container_concurrency_is_the_admission_limit(relative: str) -> None:
    spec = pod_spec(relative)
    assert spec["containerConcurrency"] == DEFAULTS.max_concurrency
    assert config_of(relative).runtime.max_concurrency == DEFAULTS.max_concurrency
    # A generation may not outlive the platform's request timeout.
    assert config_of(relative).runtime.request_timeout_s < spec["timeoutSeconds"]


def test_keda_scales_the_deployment_to_zero_on_the_admission_limit() -> None:
    scaler = load(SCALER)["spec"]
    deployment = load(DEPLOYMENT)
    service = load(SERVICE)
    assert scaler["replicas"]["min"] == 0
    assert scaler["scalingMetric"]["concurrency"]["targetValue"] == DEFAULTS.max_concurrency
    assert config_of(DEPLOYMENT).runtime.max_concurrency == DEFAULTS.max_concurrency
    target = scaler["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert target["service"] == service["metadata"]["name"]
    assert target["port"] in [port["port"] for port in service["spec"]["ports"]]
    assert "replicas" not in deployment["spec"]  # KEDA owns the count
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("relative", ALL_PODS)
def test_a_gpu_is_requested_and_the_model_runs_on_it(relative: str) -> None:
    limits = container_of(relative)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert config_of(relative).pipeline.device == "cuda"


def test_knative_and_cloud_run_scale_to_zero_and_cloud_run_gets_an_l4() -> None:
    knative = load(KNATIVE)["spec"]["template"]["metadata"]["annotations"]
    assert knative["autoscaling.knative.dev/min-scale"] == "0"
    cloud_run = load(CLOUD_RUN)["spec"]["template"]
    annotations = cloud_run["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "0"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"  # required with a GPU
    assert cloud_run["spec"]["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
