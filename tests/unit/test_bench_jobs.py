"""bench.jobs' pure part: the tables it writes from its samples. The benchmark itself runs as
`python -m bench.jobs` (and in `make bench`), not in the tests."""

from __future__ import annotations

from bench.jobs import JobSamples, table


def test_overheads_are_paired_per_run_and_latency_is_summarised() -> None:
    samples = JobSamples(steps=20, size=64, poll_s=0.05)
    samples.seconds = {
        "sync": [0.100, 0.200, 0.300],
        "poll": [0.150, 0.230, 0.400],  # +50, +30, +100 ms: 1.5x, 1.15x, 1.33x
        "sse": [0.110, 0.260, 0.310],  # +10, +60, +10 ms
    }
    samples.submit = [0.004, 0.005, 0.006, 0.007, 0.008, 0.009]
    samples.polls = [3, 5, 4]
    samples.events = [21, 20]
    samples.server_steps = 21
    samples.lateness = [0.001, 0.002, 0.003, 0.010]

    text = "\n".join(table(samples))

    assert "| POST /generate (sync) | 200.0 ms |" in text
    assert "every 50 ms + GET image | 230.0 ms | 400.0 ms | +50.0 ms (1.33x) |" in text
    assert "(httpx-sse) + GET image | 260.0 ms | 310.0 ms | +10.0 ms (1.10x) |" in text
    assert "| GET /jobs/{id} per polled job: median | 4 |" in text
    assert "| progress events per stream: median, of 21 steps | 20.5 |" in text
    assert "(4 events) | 2.5 ms / 10.0 ms / 10.0 ms |" in text
