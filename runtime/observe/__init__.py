"""Observability: what the process tells operators about itself.

`phases` (the load's phases, timed, for `/health`), `telemetry` (request counters and
histograms), `prometheus` (their exposition, imported on the first scrape), `logs` (JSON lines).

May import: the standard library, `runtime.settings`, `runtime.errors`, `runtime.clock` and
`runtime.collector`. Everything else in the runtime may use it.
"""
