"""The AWS Lambda platform: an adapter that runs the lifecycle inside Lambda's execution model.

`events` (pure translation of Lambda events and INIT types), `adapter` (the handler that answers
warm-ups and probes and hands HTTP events to Mangum), `warmup` (warm-up pings and their fan-out),
`emf` (CloudWatch metrics as Embedded Metric Format lines).

May import: everything in the runtime but `runtime.weights`; the lifecycle never imports this.
"""
