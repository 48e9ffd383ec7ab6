"""What the routes share: the config, the service and the request model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from handler.config import Config
from handler.pipeline import GenerationParams, LoadedPipeline
from handler.schemas import GenerateRequestBase
from handler.terms import KnownTerms
from runtime.jobs.runner import Jobs
from runtime.lifecycle.service import Service

# What `/health` shows a caller without the key when THAW_API_KEY is set: the state and its
# numbers, all a probe or a dashboard needs. Model paths, bucket names, error text, the device and
# the phases' detail stay behind the key. An allowlist, so a field added to the report later is
# private until it is listed here.
PUBLIC_HEALTH = frozenset(
    {
        "status",
        "load_attempts",
        "loads_completed",
        "load_seconds",
        "retry_in_s",
        "inflight",
        "queued",
        "served",
        "inference_errors",
        "uptime_s",
        "cold_start",
        "phases",
        "load_started_s",
    }
)
PUBLIC_PHASE = frozenset({"name", "start_s", "seconds", "state"})


@dataclass(frozen=True)
class AppState:
    config: Config
    service: Service[LoadedPipeline]
    request_model: type[GenerateRequestBase]
    jobs: Jobs[GenerationParams]
    known: KnownTerms = field(default_factory=KnownTerms)

    @classmethod
    def of(cls, request: Request) -> AppState:
        state: AppState = request.app.state.thaw
        return state

    def health(self, *, detailed: bool = True) -> dict[str, Any]:
        """The `/health` report; without `detailed`, only its public part (`PUBLIC_HEALTH`)."""
        report = self.service.health()
        loaded = self.service.slot.peek()
        report["model"] = self.config.model_ref
        report["device"] = loaded.device if loaded else self.config.pipeline.device
        report["dtype"] = loaded.dtype if loaded else self.config.pipeline.dtype
        report["preload"] = self.config.runtime.preload.value
        terms = loaded.terms if loaded else None
        report["pipeline"] = terms.summary() if terms else None  # what its requests may ask
        return report if detailed else public_health(report)


def public_health(report: dict[str, Any]) -> dict[str, Any]:
    public = {key: value for key, value in report.items() if key in PUBLIC_HEALTH}
    if "phases" in public:
        public["phases"] = [
            {key: value for key, value in phase.items() if key in PUBLIC_PHASE}
            for phase in public["phases"]
        ]
    return public
