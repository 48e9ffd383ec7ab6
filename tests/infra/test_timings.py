"""infra/timings.py: every platform's numbers keep their rules for any load time, and the
command prints them."""

from __future__ import annotations

import pytest

from infra import timings
from infra.timings import Platform, Settings
from runtime.lifecycle.drain import LISTENER_CLOSE_S

LOADS = [5.0, 30.0, 90.0, 110.0, 200.0, 238.0, 239.0, 240.0, 600.0, 1500.0]
SETTINGS = Settings(request_timeout_s=240.0)


@pytest.mark.parametrize("load_s", LOADS)
def test_knative_rules_hold_for_any_load(load_s: float) -> None:
    t = timings.knative(load_s, SETTINGS)
    assert t.startup.budget_s >= 2 * load_s + SETTINGS.load_backoff_s
    assert t.startup.timeout_s < t.startup.period_s
    assert t.progress_deadline_s > t.startup.budget_s + timings.POD_START_S
    assert t.target_utilization_percentage == 100
    assert t.readiness_period_s == 0
    assert t.timeout_s >= timings.POD_START_S + load_s + SETTINGS.request_timeout_s
    assert SETTINGS.request_timeout_s < t.response_start_timeout_s <= t.timeout_s
    assert t.timeout_s >= t.drain_timeout_s + LISTENER_CLOSE_S  # Knative's grace period
    over = t.timeout_s > timings.KNATIVE_DEFAULT_MAX_TIMEOUT_S
    assert over == any("max-revision-timeout-seconds" in note for note in t.notes)


@pytest.mark.parametrize("load_s", LOADS)
def test_kubernetes_and_keda_rules_hold_for_any_load(load_s: float) -> None:
    s = Settings()
    t = timings.kubernetes(load_s, s)
    assert t.startup.budget_s >= 2 * load_s + s.load_backoff_s
    assert t.progress_deadline_s > t.startup.budget_s + timings.POD_START_S
    assert t.drain_timeout_s >= t.drain_delay_s + s.queue_timeout_s + s.request_timeout_s
    assert t.termination_grace_s >= t.drain_timeout_s + LISTENER_CLOSE_S
    assert t.keda_readiness_s >= t.startup.budget_s + timings.POD_START_S
    assert t.keda_response_header_s >= s.warm_wait_s + s.queue_timeout_s + s.request_timeout_s
    assert t.keda_request_s >= t.keda_readiness_s + t.keda_response_header_s


@pytest.mark.parametrize("load_s", LOADS)
def test_cloud_run_fits_its_limits_or_says_it_does_not(load_s: float) -> None:
    t = timings.cloud_run(load_s, SETTINGS)
    probe = t.startup
    assert probe.timeout_s < probe.period_s
    assert probe.failure_threshold * probe.period_s <= timings.CLOUD_RUN_MAX_STARTUP_WINDOW_S
    assert probe.initial_delay_s <= timings.CLOUD_RUN_MAX_INITIAL_DELAY_S
    assert t.drain_timeout_s + LISTENER_CLOSE_S < timings.CLOUD_RUN_GRACE_S
    assert t.timeout_s <= timings.CLOUD_RUN_MAX_REQUEST_TIMEOUT_S
    needed = timings.startup_needed_s(load_s, SETTINGS)
    if t.fits:
        assert probe.budget_s >= needed
        assert probe.initial_delay_s <= load_s
        assert t.timeout_s >= timings.CLOUD_RUN_INSTANCE_START_S + load_s + 240
        assert not t.notes
    else:  # two loads do not fit, or only with an initial delay longer than the load itself
        assert probe.budget_s < needed or probe.initial_delay_s > load_s
        assert t.notes


def test_cloud_run_uses_no_initial_delay_until_240_s_are_not_enough() -> None:
    assert timings.cloud_run(110.0, SETTINGS).startup.initial_delay_s == 0
    longer = timings.cloud_run(200.0, SETTINGS)
    assert longer.fits
    assert longer.startup.initial_delay_s > 0
    # Two loads and a 2 s backoff: 240 s of probes plus an initial delay no longer than the load.
    assert timings.cloud_run(238.0, SETTINGS).fits
    assert not timings.cloud_run(239.0, SETTINGS).fits


def test_a_load_timeout_below_the_load_is_refused() -> None:
    with pytest.raises(ValueError, match="THAW_LOAD_TIMEOUT_S"):
        timings.startup_needed_s(120.0, Settings(load_timeout_s=60.0))


def test_knative_refuses_a_concurrency_limit_other_than_thaws() -> None:
    with pytest.raises(ValueError, match="containerConcurrency"):
        timings.knative_target_utilization(2, 1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600s", 600.0), ("10m", 600.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5)],
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert timings.parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["600", "10 m", "s", "1m30"])
def test_bad_go_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Go duration"):
        timings.parse_go_duration(text)


def test_the_command_prints_every_platform_from_its_manifest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert timings.main(["--load", "240"], environ={}) == 0
    out = capsys.readouterr().out
    for platform in Platform:
        assert f"[{platform.value}]" in out
    assert 'serving.knative.dev/progress-deadline: "600s"' in out
    assert "timeoutSeconds=550" in out  # the Knative manifest's request timeout, 240 s
    assert "conditionWait/readiness=560s" in out
    assert "fits Cloud Run's startup limits: NO" in out


def test_the_environment_overrides_a_manifests_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"THAW_REQUEST_TIMEOUT_S": "120", "HOME": "/nowhere"}
    timings.main(["--load", "110", "--platform", "cloudrun"], environ=environ)
    out = capsys.readouterr().out
    assert "[knative]" not in out
    assert "timeoutSeconds=250" in out  # 5 + 110 + 10 + 120
    assert "fits Cloud Run's startup limits: yes" in out


def test_the_command_refuses_a_load_of_zero() -> None:
    with pytest.raises(SystemExit):
        timings.main(["--load", "0"], environ={})


def test_every_platform_has_a_manifest_and_a_reference_load() -> None:
    for platform in Platform:
        assert timings.MANIFEST[platform].is_file()
        assert timings.REFERENCE_LOAD_S[platform] > 0
