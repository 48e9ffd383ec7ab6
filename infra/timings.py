"""One budget for every platform: the manifests' timings, derived from thaw's settings and a
model's expected load time.

A cold start on a platform that scales to zero is a chain of waits, and each platform bounds
each link with its own timer: a startup probe, a progress deadline, a request timeout, an
interceptor's wait, a grace period. Set one by hand and another silently cuts across it (a
revision given up while the model still loads, a 504 for the first user, a generation killed
by SIGKILL). Here each number is a function of the few that matter:

- `load_s`: seconds from container start to `/readyz` 200 on the target hardware (thaw's load
  phases, as `/health` reports them);
- `pod_start_s`: scheduling, image pull (cached) and container start before that;
- thaw's own settings (`runtime.settings.Settings`): the warm wait, queue and request timeouts,
  the load backoff and timeout, and the listener close after a drain
  (`runtime.lifecycle.drain.LISTENER_CLOSE_S`).

Each rule is one function whose docstring cites the platform behaviour it answers to. The
manifests in `infra/` carry the values derived for `REFERENCE_LOAD_S`;
`tests/infra/test_manifests.py` checks the rules against the manifests and that the manifests
agree with `derive`. Print the numbers for another load time:

    python -m infra.timings --load 90 [--pod-start 120]

Each platform is derived from the `THAW_*` values its manifest sets; `THAW_*` variables in the
caller's environment override them.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from runtime.lifecycle.drain import LISTENER_CLOSE_S
from runtime.settings import Settings


class Platform(StrEnum):
    """Where a manifest in `infra/` deploys thaw."""

    KNATIVE = "knative"
    KUBERNETES = "kubernetes"
    """A Deployment; scaled to zero by the KEDA HTTP add-on when its objects are applied."""
    CLOUD_RUN = "cloudrun"


INFRA = Path(__file__).resolve().parent
MANIFEST = {
    Platform.KNATIVE: INFRA / "knative" / "service.yaml",
    Platform.KUBERNETES: INFRA / "kubernetes" / "deployment.yaml",
    Platform.CLOUD_RUN: INFRA / "cloudrun" / "service.yaml",
}

REFERENCE_LOAD_S = {
    Platform.KNATIVE: 240.0,
    Platform.KUBERNETES: 240.0,
    Platform.CLOUD_RUN: 110.0,
}
"""The load time each manifest is derived for. Knative and Kubernetes: a large model read from
a network volume onto the GPU (4 minutes). Cloud Run: what its 240 s startup-probe window holds
with room for one retry (a model baked into the image or on a fast volume); 240 s less the load
backoff (238 s by default) is the most it can wait for at all (`cloud_run_startup_probe`)."""

POD_START_S = 60.0
"""Scheduling onto a GPU node that exists, pulling a cached image and starting the container.
Add the cluster autoscaler's time when a GPU node has to be created for the pod (minutes)."""

CLOUD_RUN_INSTANCE_START_S = 5.0
"""Google documents about 5 s for a Cloud Run instance with a GPU to start, before the
container's own startup (thaw's load) begins."""

READY_SEEN_S = 10.0
"""From `/readyz` 200 to the router sending the held request: the probe's period or the
activator's and interceptor's own probing, plus the network layer's update."""

LOAD_ATTEMPTS_COVERED = 2
"""The startup budget holds this many loads: one attempt may fail (a read error, a CUDA
hiccup) and thaw's retry still finishes before the platform restarts the container, which
would start the whole cold start over."""

PROBE_PERIOD_S = 5
CLOUD_RUN_PROBE_PERIOD_S = 2

KNATIVE_DEFAULT_PROGRESS_DEADLINE_S = 600
KNATIVE_DEFAULT_MAX_TIMEOUT_S = 600
KUBERNETES_DEFAULT_PROGRESS_DEADLINE_S = 600
KUBERNETES_DRAIN_DELAY_S = 5.0
CLOUD_RUN_GRACE_S = 10
CLOUD_RUN_MAX_STARTUP_WINDOW_S = 240
CLOUD_RUN_MAX_INITIAL_DELAY_S = 240
CLOUD_RUN_MAX_REQUEST_TIMEOUT_S = 3600
KEDA_SCALER_ADDRESS = "keda-add-ons-http-external-scaler.keda:9090"


def ceil_to(value: float, step: int) -> int:
    """`value` rounded up to a multiple of `step`: manifests carry round numbers."""
    return math.ceil(value / step - 1e-9) * step


def go_duration(seconds: int) -> str:
    """A Go `time.Duration` string (`"560s"`), the form Knative annotations and the KEDA HTTP
    add-on's timeouts take."""
    return f"{seconds}s"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as `"10m"`, `"1m30s"` or `"560s"`."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Go duration")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


# -- rules shared by every platform ---------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A startup probe's timing fields."""

    period_s: int
    timeout_s: int
    failure_threshold: int
    initial_delay_s: int = 0

    @property
    def budget_s(self) -> int:
        """How long the probe lets the container start before it is restarted."""
        return self.initial_delay_s + self.period_s * self.failure_threshold


def startup_needed_s(load_s: float, settings: Settings) -> float:
    """What a startup probe must allow: `LOAD_ATTEMPTS_COVERED` loads and the backoff between
    them. Kubernetes (and Knative and Cloud Run, which run the kubelet's probes or their own of
    the same shape) restarts a container whose startup probe has failed `failureThreshold`
    times, `periodSeconds` apart, after `initialDelaySeconds`; liveness is not probed until it
    passes (kubernetes.io, "Configure Liveness, Readiness and Startup Probes"). A restart starts
    the load over, so the budget must not end while thaw's own retry of a failed attempt could
    still succeed."""
    if settings.load_timeout_s < load_s:
        raise ValueError(
            f"THAW_LOAD_TIMEOUT_S={settings.load_timeout_s:g} is below the expected load "
            f"({load_s:g} s): every attempt would be cut off"
        )
    return LOAD_ATTEMPTS_COVERED * load_s + (LOAD_ATTEMPTS_COVERED - 1) * settings.load_backoff_s


def startup_probe(load_s: float, settings: Settings, period_s: int = PROBE_PERIOD_S) -> Probe:
    """The startup probe on `/readyz` for Knative and Kubernetes: `startup_needed_s`, in probes
    `period_s` apart, each allowed less than a period (`/readyz` is answered by the server
    process, never blocked by a load in the worker)."""
    threshold = math.ceil(startup_needed_s(load_s, settings) / period_s - 1e-9)
    return Probe(period_s=period_s, timeout_s=max(1, period_s - 3), failure_threshold=threshold)


def progress_deadline_s(startup_budget_s: int, pod_start_s: float) -> int:
    """A progress deadline that outlives the slowest start the startup probe allows.

    Knative: a revision that has not become ready within its progress deadline
    (`serving.knative.dev/progress-deadline`, default 600 s from `config-deployment`) is marked
    failed and, on a scale from zero, scaled back to zero; Knative's docs ("Configuring
    Probing", "Progress Deadline and Startup Probes") say to set it above the startup probe's
    maximum. Kubernetes: a Deployment whose rollout makes no progress for
    `progressDeadlineSeconds` (default 600) gets `Progressing=False` and `kubectl rollout
    status` exits with an error. Both count from before the pod is scheduled, so the pod's own
    start is added to the probe's budget; rounded up to whole minutes."""
    return ceil_to(startup_budget_s + pod_start_s + 30, 60)


def drain_timeout_s(settings: Settings, delay_s: float, *, queued: bool) -> int:
    """`THAW_DRAIN_TIMEOUT_S` that lets every accepted request finish: the drain delay (new
    requests still accepted), then, for the last one accepted, its wait for a turn
    (`THAW_QUEUE_TIMEOUT_S`, when requests can queue in thaw) and its generation
    (`THAW_REQUEST_TIMEOUT_S`). The timeout counts from SIGTERM (`runtime/lifecycle/drain.py`)."""
    queue_s = settings.queue_timeout_s if queued else 0.0
    return ceil_to(delay_s + queue_s + settings.request_timeout_s, 5)


def grace_s(drain_timeout: float) -> int:
    """`terminationGracePeriodSeconds`: SIGKILL comes this long after SIGTERM (kubernetes.io,
    "Pod Lifecycle", termination of Pods), so it covers the drain and the listener's close."""
    return ceil_to(drain_timeout + LISTENER_CLOSE_S + 1, 5)


def longest_answer_s(settings: Settings, *, queued: bool) -> float:
    """From the moment a request reaches thaw to its response headers: a wait for a loading
    model (`THAW_WARM_WAIT_S`), a wait for a turn (`THAW_QUEUE_TIMEOUT_S`, when requests can
    queue in thaw) and the generation (`THAW_REQUEST_TIMEOUT_S`). thaw sends nothing before the
    image is ready, so this is also the time to the first byte."""
    queue_s = settings.queue_timeout_s if queued else 0.0
    return settings.warm_wait_s + queue_s + settings.request_timeout_s


# -- Knative Serving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knative:
    startup: Probe
    progress_deadline_s: int
    target_utilization_percentage: int
    readiness_period_s: int
    timeout_s: int
    response_start_timeout_s: int
    drain_delay_s: int
    drain_timeout_s: int
    notes: tuple[str, ...] = field(default=())


def knative_target_utilization(container_concurrency: int, max_concurrency: int) -> int:
    """`autoscaling.knative.dev/target-utilization-percentage`. The autoscaler aims at
    `containerConcurrency` x utilisation requests per pod, 70% by default (Knative docs,
    "Configuring concurrency", target utilization): at `containerConcurrency: 1` that is 0.7,
    so one sustained request asks for two pods, two GPUs. When the hard limit is thaw's own
    admission limit, a full pod is exactly the target: 100."""
    if container_concurrency != max_concurrency:
        raise ValueError("containerConcurrency must equal THAW_MAX_CONCURRENCY")
    return 100


def knative_readiness_period_s() -> int:
    """The readiness probe's `periodSeconds`: 0 (left out). Knative rewrites readiness probes
    for its queue-proxy, which probes aggressively (every 50 ms, 100 ms timeout, until ready)
    only when `periodSeconds` is 0 (`pkg/queue/readiness/probe.go`, `IsAggressive`); an
    explicit period makes it probe like the kubelet, and a pod scaled from zero is seen ready
    up to a period later."""
    return 0


def knative_timeout_s(load_s: float, pod_start_s: float, settings: Settings) -> int:
    """The revision's `timeoutSeconds`. The activator holds a request that arrives at zero
    pods and applies the revision timeout to the whole request, the wait for a pod included,
    while thaw's deadline starts when the request reaches it: the pod's start, the load, the
    readiness being seen, then the generation must fit, or the first user gets the platform's
    504. thaw's queue is never used here (`containerConcurrency` = `THAW_MAX_CONCURRENCY`, so
    the queue-proxy holds the rest) and the model is ready when the request arrives. Knative
    also copies this value to the pod's `terminationGracePeriodSeconds`. It may not exceed
    `max-revision-timeout-seconds` (600 by default, `config-defaults`)."""
    return ceil_to(pod_start_s + load_s + READY_SEEN_S + settings.request_timeout_s, 10)


def knative_response_start_timeout_s(settings: Settings) -> int:
    """`responseStartTimeoutSeconds`: how long the queue-proxy waits, after handing the request
    to the container, for its first byte (Knative `config-defaults`,
    `revision-response-start-timeout-seconds`). thaw's first byte is the finished image, so it
    covers a generation; it stays within `timeoutSeconds`."""
    return ceil_to(settings.request_timeout_s + READY_SEEN_S, 10)


def knative(load_s: float, settings: Settings, pod_start_s: float = POD_START_S) -> Knative:
    startup = startup_probe(load_s, settings)
    timeout = knative_timeout_s(load_s, pod_start_s, settings)
    drain = drain_timeout_s(settings, 0.0, queued=False)
    notes = []
    if timeout > KNATIVE_DEFAULT_MAX_TIMEOUT_S:
        notes.append(
            f"timeoutSeconds {timeout} is over Knative's default max-revision-timeout-seconds "
            f"({KNATIVE_DEFAULT_MAX_TIMEOUT_S}): the cluster's config-defaults must allow it, "
            "and the activator's terminationGracePeriodSeconds should match"
        )
    if grace_s(drain) > timeout:
        notes.append("timeoutSeconds (the pod's grace period) is shorter than the drain")
    return Knative(
        startup=startup,
        progress_deadline_s=progress_deadline_s(startup.budget_s, pod_start_s),
        target_utilization_percentage=knative_target_utilization(
            settings.max_concurrency, settings.max_concurrency
        ),
        readiness_period_s=knative_readiness_period_s(),
        timeout_s=timeout,
        response_start_timeout_s=knative_response_start_timeout_s(settings),
        drain_delay_s=0,
        drain_timeout_s=drain,
        notes=tuple(notes),
    )


# -- Kubernetes and the KEDA HTTP add-on -----------------------------------------------------------


@dataclass(frozen=True)
class Kubernetes:
    startup: Probe
    progress_deadline_s: int
    drain_delay_s: int
    drain_timeout_s: int
    termination_grace_s: int
    keda_readiness_s: int
    keda_response_header_s: int
    keda_request_s: int
    notes: tuple[str, ...] = field(default=())


def keda_readiness_s(startup_budget_s: int, pod_start_s: float) -> int:
    """How long the KEDA HTTP add-on's interceptor holds a request while the Deployment scales
    from zero: `HTTPScaledObject.spec.timeouts.conditionWait` (v0.11-v0.15) or
    `InterceptorRoute.spec.timeouts.readiness` (v0.14+). Up to v0.13 the default
    (`KEDA_CONDITION_WAIT_TIMEOUT`) is 20 s, so every cold start of a model fails with a 502;
    from v0.14 the readiness wait is off by default and bounded only by the request timeout
    (add-on CHANGELOG v0.14.0, "Configure the Interceptor"). It must not give up before the
    kubelet does: the pod's start plus the whole startup budget."""
    return ceil_to(pod_start_s + startup_budget_s + READY_SEEN_S, 10)


def keda_response_header_s(settings: Settings) -> int:
    """`timeouts.responseHeader`: how long the interceptor waits for response headers once it
    has forwarded the request (cold start excluded). The default was 500 ms up to v0.13 (almost
    every generation would fail with a 502) and is 300 s from v0.14, under thaw's queue timeout
    plus its request timeout; thaw can take `longest_answer_s` (requests queue in thaw here)."""
    return ceil_to(longest_answer_s(settings, queued=True) + READY_SEEN_S, 10)


def keda_request_s(readiness_s: int, response_header_s: int) -> int:
    """`InterceptorRoute.spec.timeouts.request` (v0.14+): the whole request's deadline, cold
    start included (off by default, `KEDA_HTTP_REQUEST_TIMEOUT`); set so that it never cuts
    what the two timeouts above allow. `HTTPScaledObject` has no such field."""
    return readiness_s + response_header_s


def kubernetes(load_s: float, settings: Settings, pod_start_s: float = POD_START_S) -> Kubernetes:
    startup = startup_probe(load_s, settings)
    drain = drain_timeout_s(settings, KUBERNETES_DRAIN_DELAY_S, queued=True)
    readiness = keda_readiness_s(startup.budget_s, pod_start_s)
    header = keda_response_header_s(settings)
    return Kubernetes(
        startup=startup,
        progress_deadline_s=progress_deadline_s(startup.budget_s, pod_start_s),
        drain_delay_s=int(KUBERNETES_DRAIN_DELAY_S),
        drain_timeout_s=drain,
        termination_grace_s=grace_s(drain),
        keda_readiness_s=readiness,
        keda_response_header_s=header,
        keda_request_s=keda_request_s(readiness, header),
    )


# -- Cloud Run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudRun:
    startup: Probe
    fits: bool
    timeout_s: int
    drain_delay_s: int
    drain_timeout_s: int
    notes: tuple[str, ...] = field(default=())


def cloud_run_startup_probe(load_s: float, settings: Settings) -> tuple[Probe, bool]:
    """The startup probe on Cloud Run, and whether the load fits at all. Cloud Run shuts an
    instance down when its startup probe has not passed within `failureThreshold` x
    `periodSeconds`, which may not exceed 240 s for a service; `initialDelaySeconds` may add up
    to another 240 s ("Configure container health checks (services)"; the Admin API's `Probe`
    fields). `timeoutSeconds` stays below `periodSeconds` (the API's field docs). The initial
    delay is used only when 240 s is not enough, and then never beyond the expected load, so a
    load that takes as long as expected is never seen ready later for it. A model that needs
    more than the two windows cannot gate traffic on `/readyz` on Cloud Run: `fits` is False
    (see docs/platforms.md for what to do)."""
    needed = startup_needed_s(load_s, settings)
    period = CLOUD_RUN_PROBE_PERIOD_S
    delay = ceil_to(max(0.0, needed - CLOUD_RUN_MAX_STARTUP_WINDOW_S), period)
    threshold = math.ceil((needed - delay) / period - 1e-9)
    fits = (
        delay <= CLOUD_RUN_MAX_INITIAL_DELAY_S
        and delay <= load_s
        and threshold * period <= CLOUD_RUN_MAX_STARTUP_WINDOW_S
    )
    threshold = min(threshold, CLOUD_RUN_MAX_STARTUP_WINDOW_S // period)
    delay = min(delay, CLOUD_RUN_MAX_INITIAL_DELAY_S)
    probe = Probe(period_s=period, timeout_s=1, failure_threshold=threshold, initial_delay_s=delay)
    return probe, fits


def cloud_run_timeout_s(load_s: float, settings: Settings) -> int:
    """The service's request timeout (`timeoutSeconds`, up to 3600 s). A request that starts a
    scale from zero waits in Cloud Run's pending queue for the instance ("About instance
    autoscaling": at least the service's average startup time); the request timeout is taken to
    count that wait, as Knative's does, so it covers the instance start, the load and the
    generation."""
    timeout = ceil_to(
        CLOUD_RUN_INSTANCE_START_S + load_s + READY_SEEN_S + settings.request_timeout_s, 10
    )
    return min(timeout, CLOUD_RUN_MAX_REQUEST_TIMEOUT_S)


def cloud_run_drain_timeout_s() -> int:
    """Cloud Run sends SIGKILL 10 s after SIGTERM, not configurable, and stops routing to the
    instance first ("Container runtime contract", instance shutdown): the drain has no delay
    and ends with time for the listener's close and a second to spare."""
    return CLOUD_RUN_GRACE_S - LISTENER_CLOSE_S - 1


def cloud_run(load_s: float, settings: Settings) -> CloudRun:
    probe, fits = cloud_run_startup_probe(load_s, settings)
    notes = []
    if not fits:
        notes.append(
            f"a {load_s:g} s load needs {startup_needed_s(load_s, settings):g} s of startup "
            "probe; Cloud Run allows at most 240 s plus an initial delay no longer than the "
            "load: make the load faster or serve from Knative or Kubernetes"
        )
    return CloudRun(
        startup=probe,
        fits=fits,
        timeout_s=cloud_run_timeout_s(load_s, settings),
        drain_delay_s=0,
        drain_timeout_s=cloud_run_drain_timeout_s(),
        notes=tuple(notes),
    )


# -- all of them, and the command ------------------------------------------------------------------


def manifest_environ(platform: Platform) -> dict[str, str]:
    """The `THAW_*` values a platform's manifest sets."""
    import yaml  # only the command and the tests read manifests

    doc = yaml.safe_load(MANIFEST[platform].read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


def settings_for(platform: Platform, environ: Mapping[str, str]) -> Settings:
    """A platform's settings: its manifest's `THAW_*` values, overridden by `environ`'s."""
    merged = manifest_environ(platform)
    merged.update({k: v for k, v in environ.items() if k.startswith("THAW_")})
    return Settings.from_env(merged)


def derive(
    platform: Platform, load_s: float, settings: Settings, pod_start_s: float = POD_START_S
) -> Knative | Kubernetes | CloudRun:
    if platform is Platform.KNATIVE:
        return knative(load_s, settings, pod_start_s)
    if platform is Platform.KUBERNETES:
        return kubernetes(load_s, settings, pod_start_s)
    return cloud_run(load_s, settings)


def render(platform: Platform, timings: Knative | Kubernetes | CloudRun) -> list[str]:
    s = timings.startup
    probe = (
        f"startupProbe periodSeconds={s.period_s} timeoutSeconds={s.timeout_s} "
        f"failureThreshold={s.failure_threshold}"
        + (f" initialDelaySeconds={s.initial_delay_s}" if s.initial_delay_s else "")
        + f"  (budget {s.budget_s} s)"
    )
    lines = [f"[{platform.value}] {MANIFEST[platform].relative_to(INFRA.parent)}", f"  {probe}"]
    if isinstance(timings, Knative):
        lines += [
            "  serving.knative.dev/progress-deadline: "
            f'"{go_duration(timings.progress_deadline_s)}"',
            "  autoscaling.knative.dev/target-utilization-percentage: "
            f'"{timings.target_utilization_percentage}"',
            "  readinessProbe periodSeconds: left out (0: aggressive probing)",
            f"  timeoutSeconds={timings.timeout_s}  (also the pod's grace period)",
            f"  responseStartTimeoutSeconds={timings.response_start_timeout_s}",
        ]
    elif isinstance(timings, Kubernetes):
        lines += [
            f"  progressDeadlineSeconds={timings.progress_deadline_s}",
            f"  terminationGracePeriodSeconds={timings.termination_grace_s}",
            f"  KEDA timeouts: conditionWait/readiness={go_duration(timings.keda_readiness_s)} "
            f"responseHeader={go_duration(timings.keda_response_header_s)} "
            f"request (InterceptorRoute)={go_duration(timings.keda_request_s)}",
        ]
    else:
        lines += [
            f"  timeoutSeconds={timings.timeout_s}",
            f"  fits Cloud Run's startup limits: {'yes' if timings.fits else 'NO'}",
        ]
    drain = timings.drain_delay_s, timings.drain_timeout_s
    lines.append("  THAW_DRAIN_DELAY_S={} THAW_DRAIN_TIMEOUT_S={}".format(*drain))
    lines += [f"  ! {note}" for note in timings.notes]
    return lines


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.timings",
        description="Print each platform's timings for a model's expected load time.",
    )
    parser.add_argument(
        "--load",
        type=float,
        required=True,
        help="seconds from container start to /readyz 200 on the target GPU",
    )
    parser.add_argument(
        "--pod-start",
        type=float,
        default=POD_START_S,
        help=f"Kubernetes/Knative: scheduling, pull and container start (default {POD_START_S:g})",
    )
    parser.add_argument("--platform", choices=[p.value for p in Platform], action="append")
    args = parser.parse_args(argv)
    if args.load <= 0 or args.pod_start < 0:
        parser.error("--load must be > 0 and --pod-start >= 0")
    environ = os.environ if environ is None else environ
    chosen = [Platform(p) for p in args.platform] if args.platform else list(Platform)
    out: list[str] = []
    for platform in chosen:
        settings = settings_for(platform, environ)
        out += render(platform, derive(platform, args.load, settings, args.pod_start))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
