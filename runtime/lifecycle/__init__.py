"""The lifecycle: one model per process, loaded once, served under admission, drained on stop.

`slot` (the lazy single-flight `ModelSlot` and its states), `admission` (concurrency limit and
bounded queue), `service` (the request path every entry point shares), `idle` (unload after idle
time), `drain` (the order a stopping process finishes in), `notify` (waits usable from threads and
any event loop).

May import: the standard library, `runtime.settings`, `runtime.errors`, `runtime.clock`,
`runtime.collector` and `runtime.observe`. Knows nothing of HTTP, Lambda or where weights come
from (`tests/unit/test_layout.py` holds the rule).
"""
