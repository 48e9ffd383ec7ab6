"""Prometheus exposition of a service's figures, via prometheus-client.

`render` imports prometheus-client when first called (a scrape), not at start: its import costs
about as much as a fifth of a bare FastAPI start here. Call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from runtime.observe.telemetry import Histogram, TelemetrySnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(core: Any, name: str, doc: str, hist: Histogram) -> Any:
    return core.HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.total)


def _families(
    health: dict[str, Any], snap: TelemetrySnapshot, states: Iterable[str]
) -> Iterator[Any]:
    from prometheus_client import core

    requests = core.CounterMetricFamily(
        "thaw_requests",
        "HTTP requests by method, route and status",
        labels=["method", "route", "status"],
    )
    for (method, route, status), count in sorted(snap.requests.items()):
        requests.add_metric([method, route, str(status)], count)
    yield requests
    yield _histogram(
        core, "thaw_request_duration_seconds", "Whole request time", snap.request_seconds
    )
    yield _histogram(
        core,
        "thaw_queue_wait_seconds",
        "Time from arrival to start of inference (warm-up wait included)",
        snap.queue_seconds,
    )
    yield _histogram(
        core, "thaw_inference_seconds", "Time in the inference thread", snap.inference_seconds
    )
    yield core.GaugeMetricFamily("thaw_inflight", "Inferences running", value=health["inflight"])
    yield core.GaugeMetricFamily(
        "thaw_queued", "Accepted requests not running yet", value=health["queued"]
    )
    state = core.GaugeMetricFamily(
        "thaw_model_state", "1 for the model's current state", labels=["state"]
    )
    for name in states:
        state.add_metric([name], 1.0 if name == health["status"] else 0.0)
    yield state
    yield core.CounterMetricFamily(
        "thaw_load_attempts", "Load attempts in this process", value=health["load_attempts"]
    )
    yield core.CounterMetricFamily(
        "thaw_loads_completed", "Loads that ended ready", value=health["loads_completed"]
    )
    phases = core.GaugeMetricFamily(
        "thaw_load_phase_seconds",
        "Duration of each phase of the last load attempt",
        labels=["phase"],
    )
    for phase in health["phases"]:
        if phase["seconds"] is not None:
            phases.add_metric([phase["name"]], phase["seconds"])
    yield phases
    if health["load_seconds"] is not None:
        yield core.GaugeMetricFamily(
            "thaw_load_seconds",
            "Seconds the last successful load took",
            value=health["load_seconds"],
        )
    ready_after = health["cold_start"]["ready_after_s"]
    if ready_after is not None:
        yield core.GaugeMetricFamily(
            "thaw_cold_start_seconds", "Process start to first ready", value=ready_after
        )
    yield core.CounterMetricFamily(
        "thaw_cold_requests",
        "Requests that arrived before the model was ready",
        value=snap.cold_requests,
    )
    yield core.GaugeMetricFamily(
        "thaw_uptime_seconds", "Seconds since the service started", value=health["uptime_s"]
    )


def render(health: dict[str, Any], telemetry: TelemetrySnapshot, states: Iterable[str]) -> bytes:
    """The text exposition of a service's figures: its `/health` report, its telemetry, and
    every state name the report's `status` may take (each a 0/1 sample)."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collector:
        def collect(self) -> Iterator[Any]:
            return _families(health, telemetry, states)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    payload: bytes = generate_latest(registry)
    return payload
