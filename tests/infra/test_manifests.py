"""The Knative, Kubernetes (+ KEDA HTTP add-on) and Cloud Run manifests, checked offline.

What is validated how:
- Deployment and Service: kubernetes-validate's bundled Kubernetes JSON schemas (strict: unknown
  fields fail), for Kubernetes `K8S_VERSION`.
- Knative Service and Cloud Run service (serving.knative.dev/v1): the wrapper against a
  structural schema written here from Knative's RevisionSpec fields, and the revision's pod spec
  (less Knative's own fields) against Kubernetes' strict PodSpec schema from the same bundle.
- KEDA HTTPScaledObject (http.keda.sh/v1alpha1): a structural schema written here from the CRD's
  fields (no CRD schema ships with kubernetes-validate).
Then the facts thaw depends on: probe paths and ports, grace periods against the drain timeout,
concurrency against the admission limit, startup budgets, and every THAW_* value parsed by the
same settings code the server uses.
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
from runtime.lifecycle.drain import LISTENER_CLOSE_S
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S_VERSION = "1.33.0"
DEFAULTS = Settings()
# Cloud Run sends SIGKILL 10 s after SIGTERM; the grace period is not configurable.
CLOUD_RUN_GRACE_S = 10
CLOUD_RUN_MAX_STARTUP_S = 240
# A large model's first load (weights from a volume or bucket onto the GPU) takes minutes.
MIN_STARTUP_BUDGET_S = 600
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
                        "metadata": META,
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
CLOUD_RUN = "cloudrun/service.yaml"


@pytest.mark.parametrize("relative", [DEPLOYMENT, SERVICE])
def test_kubernetes_objects_validate_against_the_kubernetes_schemas(relative: str) -> None:
    kubernetes_validate.validate(load(relative), K8S_VERSION, strict=True)


@pytest.mark.parametrize("relative", [KNATIVE, CLOUD_RUN])
def test_knative_services_validate_with_a_kubernetes_pod_spec(relative: str) -> None:
    service = load(relative)
    jsonschema.validate(service, KNATIVE_SERVICE)
    k8s_schema("podspec-v1").validate(pod_spec_of_revision(service))


def test_the_keda_scaler_validates() -> None:
    jsonschema.validate(load(SCALER), HTTP_SCALED_OBJECT)


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


@pytest.mark.parametrize("relative", [KNATIVE, DEPLOYMENT])
def test_the_startup_budget_covers_a_large_model_load(relative: str) -> None:
    assert startup_budget_s(container_of(relative)["startupProbe"]) >= MIN_STARTUP_BUDGET_S


def test_cloud_run_startup_budget_stays_within_its_limit() -> None:
    budget = startup_budget_s(container_of(CLOUD_RUN)["startupProbe"])
    assert 120 <= budget <= CLOUD_RUN_MAX_STARTUP_S


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
