"""handler.jobs_view: what GET /jobs/{id} shows of a job's record."""

from __future__ import annotations

from handler.jobs_view import job_view
from runtime.jobs.store import Job


def job(**request: object) -> Job:
    return Job(
        id="order-42",
        request={"prompt": "p", **request},
        request_hash="h",
        created_at=1.0,
        expires_at=2.0,
    )


def test_a_webhook_s_query_is_not_shown() -> None:
    """A receiver's token often rides in the query; a guessable id must not reveal it."""
    view = job_view(job(webhook="https://hooks.example.com/thaw?token=s3cret"), now=1.5)
    assert view["request"]["webhook"] == "https://hooks.example.com/thaw?…"
    assert "s3cret" not in str(view)


def test_a_webhook_without_a_query_is_shown_as_given() -> None:
    view = job_view(job(webhook="https://hooks.example.com/thaw"), now=1.5)
    assert view["request"]["webhook"] == "https://hooks.example.com/thaw"
    assert "owner" not in view
