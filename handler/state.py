"""What the routes share: the config, the service and the request model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from handler.config import Config
from handler.pipeline import LoadedPipeline
from handler.schemas import GenerateRequestBase
from runtime.lifecycle.service import Service


@dataclass(frozen=True)
class AppState:
    config: Config
    service: Service[LoadedPipeline]
    request_model: type[GenerateRequestBase]

    @classmethod
    def of(cls, request: Request) -> AppState:
        state: AppState = request.app.state.thaw
        return state

    def health(self) -> dict[str, Any]:
        report = self.service.health()
        loaded = self.service.slot.peek()
        report["model"] = self.config.model_ref
        report["device"] = loaded.device if loaded else self.config.pipeline.device
        report["dtype"] = loaded.dtype if loaded else self.config.pipeline.dtype
        report["preload"] = self.config.runtime.preload.value
        return report
