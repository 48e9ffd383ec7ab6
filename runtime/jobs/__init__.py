"""Asynchronous jobs: a generation submitted now, polled, streamed and fetched later.

`store` (the job record and where it lives: a local directory, written atomically), `runner`
(submission under the same admission as a synchronous request, progress, cancel, expiry).

May import: the standard library, `runtime.settings`, `runtime.errors`, `runtime.clock`,
`runtime.work`, `runtime.observe` and `runtime.lifecycle`. Knows nothing of HTTP.
"""
