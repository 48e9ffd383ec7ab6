"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handler.config import Config
from runtime import settings
from runtime.settings import PreloadPolicy, Settings, SettingsError, WorkerMode


def test_defaults() -> None:
    settings = Settings.from_env({"HOME": "/home/u"})
    assert settings.preload is PreloadPolicy.BACKGROUND
    assert settings.max_concurrency == 1
    assert settings.worker is WorkerMode.PROCESS
    assert Config.from_env({}).server.host == "127.0.0.1"
    assert settings.cache_dir == Path("/home/u/.cache/thaw")
    assert not settings.on_lambda


def test_values_are_parsed() -> None:
    config = Config.from_env(
        {
            "THAW_PRELOAD": "Eager",
            "THAW_WARM_WAIT_S": "2.5",
            "THAW_MAX_CONCURRENCY": "4",
            "THAW_WARM_INFERENCE": "yes",
            "THAW_DEVICE": "cuda:1",
            "THAW_MODEL": "org/model",
        }
    )
    settings = config.runtime
    assert settings.preload is PreloadPolicy.EAGER
    assert settings.warm_wait_s == 2.5
    assert settings.max_concurrency == 4
    assert config.pipeline.warm_inference
    assert config.pipeline.device == "cuda:1"
    assert settings.model == "org/model"


def test_the_old_worker_name_still_works_with_a_deprecation_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings._said.clear()
    assert Settings.from_env({"THAW_WORKER": "thread"}).worker is WorkerMode.INLINE
    assert Settings.from_env({"THAW_WORKER": "thread"}).worker is WorkerMode.INLINE
    assert caplog.text.count("THAW_WORKER=inline") == 1  # once per process
    assert Settings.from_env({"THAW_WORKER": "inline"}).worker is WorkerMode.INLINE


def test_the_runtime_settings_carry_no_function_or_edge_options() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert not fields & {"device", "dtype", "torch_threads", "warm_inference", "api_key", "host"}


def test_lambda_keeps_its_cache_in_tmp() -> None:
    settings = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "fn"})
    assert settings.on_lambda
    assert settings.cache_dir == Path("/tmp/thaw-cache")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"THAW_PRELOAD": "sometimes"}, "THAW_PRELOAD"),
        ({"THAW_WARM_WAIT_S": "soon"}, "THAW_WARM_WAIT_S"),
        ({"THAW_MAX_CONCURRENCY": "0"}, "THAW_MAX_CONCURRENCY"),
        ({"THAW_QUEUE_SIZE": "-1"}, "THAW_QUEUE_SIZE"),
        ({"THAW_WARM_INFERENCE": "maybe"}, "THAW_WARM_INFERENCE"),
        ({"THAW_DEVICE": "tpu"}, "THAW_DEVICE"),
        ({"THAW_DTYPE": "int4"}, "THAW_DTYPE"),
        ({"THAW_PORT": "70000"}, "THAW_PORT"),
        ({"THAW_DEFAULT_STEPS": "80", "THAW_MAX_STEPS": "50"}, "THAW_DEFAULT_STEPS"),
        ({"THAW_WORKER": "fiber"}, "THAW_WORKER"),
        ({"THAW_MAX_BATCH": "0"}, "THAW_MAX_BATCH"),
        ({"THAW_BATCH_WINDOW_MS": "-5"}, "THAW_BATCH_WINDOW_MS"),
        ({"THAW_LOG_FORMAT": "yaml"}, "THAW_LOG_FORMAT"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Config.from_env(env)


def test_unset_model_means_the_embedded_default() -> None:
    config = Config.from_env({"THAW_CACHE_DIR": "/c"})
    assert config.model_ref == "/c/tiny-sd"
    assert Config.from_env({"THAW_MODEL": "/m"}).model_ref == "/m"


def test_jobs_live_in_s3_when_a_jobs_url_is_given() -> None:
    settings = Settings.from_env({"THAW_JOBS_URL": "s3://bucket/jobs/", "THAW_JOB_LEASE_S": "9"})
    assert settings.jobs_url == "s3://bucket/jobs/"
    assert settings.job_lease_s == 9
    assert Settings.from_env({}).jobs_url is None
    assert Settings.from_env({}).job_lease_s == 30


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"THAW_JOBS_URL": "/var/jobs"}, "THAW_JOBS_URL='/var/jobs'"),
        ({"THAW_JOBS_URL": "s3://"}, "THAW_JOBS_URL='s3://'"),
        ({"THAW_JOBS_URL": "s3://b", "THAW_JOBS_DIR": "/j"}, "THAW_JOBS_DIR are both set"),
        ({"THAW_JOB_LEASE_S": "0.5"}, "THAW_JOB_LEASE_S=0.5"),
    ],
)
def test_a_bad_jobs_setting_fails_naming_it(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        Settings.from_env(environ)
