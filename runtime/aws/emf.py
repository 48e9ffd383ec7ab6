"""CloudWatch Embedded Metric Format (EMF) lines for Lambda.

On Lambda there is no scraper for `/metrics`; a JSON log line in EMF becomes CloudWatch metrics
without an API call or an agent. Plain `json` is enough to write them: the only library that does
this for Python (aws-lambda-powertools) costs an import at INIT that this avoids (measured figures
in the README, "Observability").
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

# CloudWatch's units for what thaw reports.
MILLISECONDS = "Milliseconds"
SECONDS = "Seconds"
COUNT = "Count"
BYTES = "Bytes"


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = COUNT


@dataclass
class EmfWriter:
    """Writes one EMF line per call to `emit` (stdout, which Lambda sends to CloudWatch Logs)."""

    namespace: str = "thaw"
    service: str = "text-to-image"
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    def line(
        self,
        metrics: list[Metric],
        dimensions: Mapping[str, str] | None = None,
        properties: Mapping[str, object] | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> str:
        """One EMF document: the metrics under the given dimensions (plus `service`), and
        properties that are searchable in Logs Insights but are not metrics."""
        dims = {"service": self.service, **(dimensions or {})}
        document: dict[str, object] = {
            "_aws": {
                "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [list(dims)],
                        "Metrics": [{"Name": m.name, "Unit": m.unit} for m in metrics],
                    }
                ],
            },
            **{key: value for key, value in (properties or {}).items() if key not in dims},
            **dims,
        }
        for metric in metrics:
            document[metric.name] = metric.value
        return json.dumps(document, separators=(",", ":"))

    def emit(
        self,
        metrics: list[Metric],
        dimensions: Mapping[str, str] | None = None,
        properties: Mapping[str, object] | None = None,
    ) -> None:
        if not metrics:
            return
        self.stream.write(self.line(metrics, dimensions, properties) + "\n")
        self.stream.flush()


def server_timing(header: str | None) -> dict[str, float]:
    """Durations in milliseconds from a `Server-Timing` header (`name;dur=12.5, ...`)."""
    found: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    found[name] = float(value)
                except ValueError:
                    continue
    return found
