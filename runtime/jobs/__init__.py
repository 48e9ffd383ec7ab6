"""Asynchronous jobs: a generation submitted now, polled, streamed and fetched later.

`store` (the job record and where it lives: a local directory, written atomically), `s3store`
(the same in S3, shared by every replica and by Lambda's invocations, conditional writes),
`runner` (submission under the same admission as a synchronous request, progress, cancel,
expiry, leases),
`webhooks` (a job's events POSTed, signed, to the URL it gave: queued, retried, drained), with
`destinations` (where a webhook may go), `signing` (Standard Webhooks signatures) and
`transport` (one HTTP POST to a checked address).

May import: the standard library, `runtime.settings`, `runtime.errors`, `runtime.clock`,
`runtime.work`, `runtime.observe` and `runtime.lifecycle`. Knows nothing of the HTTP server
(webhooks are its one HTTP client).
"""
